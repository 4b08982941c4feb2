//! `POST /v1/workers/{worker_id}/heartbeat`: a worker says it is alive, renews the leases
//! of all its attempts at once, and hears which of them it must stop.

use std::collections::HashSet;

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use validator::Validate;

use crate::domain::{RunStatus, Scope, WorkerBeat};
use std::time::Duration;

use crate::jobs::outcome::Failure;
use crate::store::{Fence, StoreError};

use super::super::ApiState;
use super::super::auth::Caller;
use super::super::error::{ApiError, Problem};
use super::super::extract::{JsonBody, from_value};
use super::claim::heartbeat_every;
use super::{check_worker_id, parse_token};

/// What a worker reports about itself.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// What it is written in (`python`, `typescript`, …).
    #[validate(length(min = 1, max = 32))]
    pub language: String,
    /// Its SDK's version.
    #[validate(length(min = 1, max = 64))]
    pub version: String,
    #[serde(default)]
    #[validate(length(max = 255))]
    pub host: String,
    #[serde(default)]
    #[validate(range(max = 2_147_483_647))]
    #[schema(maximum = 2_147_483_647)]
    pub pid: u32,
    /// The agents it serves.
    #[validate(length(max = 100))]
    pub agents: Vec<String>,
    /// How many attempts it runs at once.
    #[validate(range(min = 1, max = 100_000))]
    pub concurrency: u32,
    /// When it started (default: its first heartbeat).
    pub started_at: Option<DateTime<Utc>>,
    /// Attempts it finished since it started.
    #[serde(default)]
    #[validate(range(max = 9_007_199_254_740_991u64))]
    #[schema(maximum = 9_007_199_254_740_991u64)]
    pub processed: u64,
    /// Why it cannot work right now, if it cannot.
    #[validate(length(max = 2000))]
    pub last_error: Option<String>,
    /// The attempt tokens of every attempt it is executing: their leases are renewed.
    #[serde(default)]
    #[validate(length(max = 100_000))]
    pub attempts: Vec<String>,
    /// It is shutting down and has stopped its agents: its row says `stopped`, and any
    /// attempt it still holds goes back to the queue without using up the attempt.
    #[serde(default)]
    pub stopping: bool,
}

/// What the worker must know.
#[derive(Debug, Serialize, ToSchema)]
pub struct HeartbeatReply {
    /// Attempts the worker must stop: their reports are refused from now on.
    pub stop: Vec<StopAttempt>,
    /// The lease an attempt holds, ms.
    pub lease_ms: u64,
    /// Heartbeat at least this often while attempts run (ms).
    pub heartbeat_ms: u64,
    /// Attempts handed back to the queue (`stopping`).
    pub handed_back: u64,
}

/// An attempt to stop, and why.
#[derive(Debug, Serialize, ToSchema)]
pub struct StopAttempt {
    pub attempt_token: String,
    /// `cancelled` (by the API), `finished` (the run ended another way), `lost` (its
    /// lease ran out and the run went back to the queue, or another attempt holds it), or
    /// `timeout` / `deadline_exceeded` (it ran past its time limit by more than a lease
    /// without its worker ending it: the server ended it).
    pub reason: String,
}

/// Heartbeat: register or refresh the worker and renew its attempts' leases.
///
/// A worker that stops heartbeating loses its attempts when their lease runs out: they
/// are retried (or failed as `lost_worker` when out of attempts), exactly as when an
/// agentq worker process is killed. The worker shows in `GET /v1/workers`.
#[utoipa::path(post, path = "/v1/workers/{worker_id}/heartbeat", tag = "workers", operation_id = "worker_heartbeat",
    params(("worker_id" = String, Path, description = "Chosen by the worker: 1–128 of A-Z a-z 0-9 _ . : -, unique per process")),
    request_body = HeartbeatRequest,
    responses(
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "Recorded", body = HeartbeatReply),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the worker scope", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn worker_heartbeat(
    State(state): State<ApiState>,
    caller: Caller,
    Path(worker_id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<HeartbeatReply>, ApiError> {
    caller.require(Scope::Worker)?;
    let worker_id = check_worker_id(&worker_id)?;
    let request: HeartbeatRequest = from_value(body)?;
    request.validate()?;
    let lease = state.work.lease;
    let mut stop = Vec::new();
    let mut fences = Vec::with_capacity(request.attempts.len());
    for token in &request.attempts {
        match parse_token(token, &worker_id) {
            Some(fence) => fences.push((token, fence)),
            None => stop.push(StopAttempt {
                attempt_token: token.clone(),
                reason: "lost".into(),
            }),
        }
    }
    if !fences.is_empty() {
        let held: HashSet<Fence> = state
            .store
            .renew_leases(fences.iter().map(|(_, f)| f.clone()).collect(), lease)
            .await?
            .into_iter()
            .collect();
        for (token, fence) in fences.iter().filter(|(_, f)| !held.contains(f)) {
            state.work.claimed.forget(fence);
            stop.push(StopAttempt {
                attempt_token: (*token).clone(),
                reason: why_lost(&state, fence).await?.into(),
            });
        }
        // an attempt still running a lease past its time limit (its worker neither ended
        // nor stopped it) is ended here, as agentq's own worker would end it
        let held: Vec<Fence> = held.into_iter().collect();
        for (fence, terms) in state.work.claimed.overdue(&held, lease) {
            let (failure, reason) = if terms.cut_by_deadline {
                (Failure::DeadlineExceeded, "deadline_exceeded")
            } else {
                (Failure::Timeout(Duration::ZERO), "timeout")
            };
            let ended = super::report::finish(&state, fence.clone(), Err(failure), None).await;
            if ended.status == 200 {
                tracing::warn!(run.id = %fence.run_id, run.attempt = fence.attempt, worker.id = %worker_id, "an external worker's attempt ran past its time limit; ended it");
                let token = super::attempt_token(&fence);
                stop.push(StopAttempt {
                    attempt_token: token,
                    reason: reason.into(),
                });
            }
        }
    }
    let handed_back = if request.stopping {
        state.store.release_worker(worker_id.clone()).await?
    } else {
        0
    };
    let running = request.attempts.len().saturating_sub(stop.len()) as u64;
    state
        .store
        .heartbeat(WorkerBeat {
            id: worker_id.to_string(),
            host: request.host,
            pid: request.pid,
            version: request.version,
            agents: request.agents,
            concurrency: request.concurrency,
            started_at: request.started_at.unwrap_or_else(Utc::now),
            running: if request.stopping { 0 } else { running },
            processed: request.processed,
            restarts: 0,
            last_restart_at: None,
            last_error: request.last_error.map(crate::domain::storable),
            stopped: request.stopping,
            language: request.language,
        })
        .await?;
    Ok(Json(HeartbeatReply {
        stop,
        lease_ms: lease.as_millis() as u64,
        heartbeat_ms: heartbeat_every(lease).as_millis() as u64,
        handed_back,
    }))
}

/// Why an attempt no longer holds its run.
async fn why_lost(state: &ApiState, fence: &Fence) -> Result<&'static str, ApiError> {
    let run = match state.store.get_run(fence.run_id).await {
        Ok(run) => run,
        Err(StoreError::NotFound) => return Ok("lost"),
        Err(e) => return Err(e.into()),
    };
    Ok(match run.status {
        RunStatus::Cancelled => "cancelled",
        _ if run.attempt == fence.attempt && run.status.is_terminal() => "finished",
        _ => "lost",
    })
}
