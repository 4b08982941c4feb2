//! `POST /v1/workers/{worker_id}/claim`: a worker long-polls for runs of its agents.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use validator::Validate;

use crate::domain::Scope;
use crate::store::ClaimedRun;

use super::super::ApiState;
use super::super::auth::Caller;
use super::super::error::{ApiError, FieldError, Problem};
use super::super::extract::{JsonBody, from_value};
use super::{attempt_token, check_worker_id};

/// The longest a claim waits for runs.
pub const MAX_CLAIM_WAIT_MS: u64 = 30_000;

/// What a worker asks for.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// Declared agents whose runs the worker takes (1–100 names).
    #[validate(length(min = 1, max = 100))]
    pub agents: Vec<String>,
    /// At most this many runs (1–256; default 1): the worker's free slots.
    #[validate(range(min = 1, max = 256))]
    #[schema(minimum = 1, maximum = 256)]
    pub limit: Option<u32>,
    /// When no run is ready, wait up to this long for one, ms (0–30000; default 0; at
    /// most 2 s short of the server's `--request-timeout`).
    #[validate(range(max = 30_000))]
    #[schema(maximum = 30_000)]
    pub wait_ms: Option<u64>,
}

/// Runs claimed: each one attempt the worker now holds, until it reports its end or its
/// lease runs out.
#[derive(Debug, Serialize, ToSchema)]
pub struct Claimed {
    pub runs: Vec<ClaimedAttempt>,
    /// The server's time: a worker times `attempt_deadline` from it, not from its own
    /// clock.
    #[serde(serialize_with = "crate::domain::time::ms")]
    pub now: DateTime<Utc>,
    /// The lease each attempt holds, ms: heartbeat well within it (the SDKs heartbeat every
    /// `heartbeat_ms`), or the attempt is taken back and retried.
    pub lease_ms: u64,
    pub heartbeat_ms: u64,
}

/// One claimed attempt: everything the worker needs to execute it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClaimedAttempt {
    /// The fence: every report of this attempt names it. Opaque.
    pub attempt_token: String,
    pub run_id: String,
    pub agent: String,
    #[schema(value_type = Object)]
    pub input: Value,
    /// The state an earlier attempt saved: start from it.
    #[schema(value_type = Option<Object>)]
    pub checkpoint: Option<Value>,
    /// This attempt's number, from 1.
    pub attempt: u32,
    pub max_attempts: u32,
    /// The attempt's time limit, ms.
    pub timeout_ms: u64,
    /// When the attempt must have ended: its time limit, or the run's deadline if sooner.
    /// Past it the worker stops the agent and reports a `timeout` failure.
    #[serde(serialize_with = "crate::domain::time::ms")]
    pub attempt_deadline: DateTime<Utc>,
    /// Whether `attempt_deadline` is the run's deadline (a failure there is final).
    pub deadline_is_run_deadline: bool,
    /// The whole run's deadline, if it has one.
    #[serde(serialize_with = "crate::domain::time::ms_opt")]
    pub run_deadline: Option<DateTime<Utc>>,
    pub tenant: String,
    pub metadata: BTreeMap<String, String>,
    /// Who created the run: `key:<key id>`, `run_token:<run id>` or `open`; absent for a
    /// run the engine made (a compensation run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// The W3C trace context of the request that created the run: continue its trace.
    pub traceparent: Option<String>,
    /// The results of the runs this one depends on, by run id.
    #[schema(value_type = Object)]
    pub dependencies: BTreeMap<String, Value>,
}

impl ClaimedAttempt {
    fn new(run: ClaimedRun, now: DateTime<Utc>) -> Self {
        let by_timeout = now + chrono::Duration::milliseconds(run.timeout_ms as i64);
        let (attempt_deadline, deadline_is_run_deadline) = match run.deadline {
            Some(deadline) if deadline < by_timeout => (deadline, true),
            _ => (by_timeout, false),
        };
        Self {
            attempt_token: attempt_token(&run.fence()),
            run_id: run.id.to_string(),
            agent: run.agent,
            input: run.input,
            checkpoint: run.checkpoint,
            attempt: run.attempt,
            max_attempts: run.max_attempts,
            timeout_ms: run.timeout_ms,
            attempt_deadline,
            deadline_is_run_deadline,
            run_deadline: run.deadline,
            tenant: run.tenant,
            metadata: run.metadata,
            created_by: run.created_by,
            traceparent: run.trace_parent,
            dependencies: run
                .dependencies
                .into_iter()
                .map(|(id, result)| (id.to_string(), result))
                .collect(),
        }
    }
}

/// How often an SDK heartbeats while it holds attempts: often enough that a cancel
/// reaches the agent within a second, and at least three times a lease.
pub(super) fn heartbeat_every(lease: Duration) -> Duration {
    (lease / 3).min(Duration::from_millis(500))
}

/// Claim runs of declared agents, waiting up to `wait_ms` when none is ready.
///
/// Claims take runs in the same order and under the same rules as agentq's own workers
/// (priority, then due time; `--agent-limit`), with the same lease and fence, on every
/// backend (with Redis delivery too: external workers claim from the runs table through
/// the API). An empty `runs` after the wait is no error: claim again.
#[utoipa::path(post, path = "/v1/workers/{worker_id}/claim", tag = "workers", operation_id = "claim_runs",
    params(("worker_id" = String, Path, description = "The worker's id, as in its heartbeat")),
    request_body = ClaimRequest,
    responses(
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "The runs claimed (possibly none)", body = Claimed),
        (status = 422, description = "An agent not declared, or bad limits", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the worker scope", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn claim_runs(
    State(state): State<ApiState>,
    caller: Caller,
    Path(worker_id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Claimed>, ApiError> {
    caller.require(Scope::Worker)?;
    let worker_id = check_worker_id(&worker_id)?;
    let request: ClaimRequest = from_value(body)?;
    request.validate()?;
    let declared = state.declared.current_with(&request.agents).await?;
    let unknown: Vec<FieldError> = request
        .agents
        .iter()
        .enumerate()
        .filter(|(_, a)| !declared.contains(a))
        .map(|(i, a)| {
            FieldError::new(
                format!("agents/{i}"),
                "unknown_agent",
                format!("no agent named `{a}` is declared: declare it first (PUT /v1/agents/{a})"),
            )
        })
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::Validation(unknown));
    }
    let agents: Arc<[String]> = request.agents.into();
    let limit = request.limit.unwrap_or(1) as usize;
    let work = &state.work;
    let wait = Duration::from_millis(request.wait_ms.unwrap_or(0)).min(work.max_claim_wait);
    let until = tokio::time::Instant::now() + wait;
    let runs = loop {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        // a wait in the writer ends at a commit of this process that makes runs ready;
        // other processes' runs are found by looking again every poll interval
        let wait = (!left.is_zero()).then(|| left.min(work.poll_interval));
        let claim = state.store.claim(
            worker_id.clone(),
            Some(agents.clone()),
            limit,
            work.lease,
            wait,
            work.agent_limits.clone(),
        );
        // at shutdown a waiting claim ends empty: the writer gives back what it would
        // have handed to a caller that stopped waiting
        let runs = tokio::select! {
            // an answer the writer already gave is taken, never dropped
            biased;
            runs = claim => runs?,
            _ = work.stopping.cancelled(), if wait.is_some() => Vec::new(),
        };
        if !runs.is_empty() || left.is_zero() || work.stopping.is_cancelled() {
            break runs;
        }
    };
    let now = Utc::now();
    let runs = runs
        .into_iter()
        .map(|run| {
            state
                .metrics
                .attempt_started(&run.agent, Duration::from_millis(run.queue_wait_ms));
            work.claimed.remember(&run, work.lease * 4);
            ClaimedAttempt::new(run, now)
        })
        .collect();
    Ok(Json(Claimed {
        runs,
        now,
        lease_ms: work.lease.as_millis() as u64,
        heartbeat_ms: heartbeat_every(work.lease).as_millis() as u64,
    }))
}
