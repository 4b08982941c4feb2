//! `POST /v1/workers/{worker_id}/reports`: a worker reports on its attempts, many reports
//! in one request. Each report is a write fenced by its attempt token; one from an attempt
//! that no longer holds its run is refused (`409 attempt_lost`), never applied.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::domain::{Backoff, Progress, Scope, Signal, StreamPart};
use crate::jobs::AgentError;
use crate::jobs::outcome::{Failure, Terms, decide};
use crate::store::{Fence, Outcome, StoreError, Streamed};
use crate::telemetry::AttemptOutcome;

use super::super::ApiState;
use super::super::auth::Caller;
use super::super::error::{ApiError, FieldError, Problem};
use super::super::extract::{JsonBody, from_value};
use super::{ClaimTerms, check_worker_id, parse_token};

/// The most reports one request may carry.
pub const MAX_REPORTS: usize = 1000;

/// Reports, applied in order (a progress before the finish that follows it).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportBatch {
    /// 1 to 1000 reports. A batch holding something that is not a report is refused whole
    /// (`422`, naming `reports/<i>`); a report that cannot apply is answered alone.
    #[schema(min_items = 1, max_items = 1000, value_type = Vec<ReportItem>)]
    pub reports: Vec<Value>,
}

/// One report on one attempt.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ReportItem {
    /// The attempt token its claim handed out.
    pub attempt_token: String,
    #[serde(flatten)]
    pub report: Report,
}

/// What happened in the attempt.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Report {
    /// Progress, shown in GET and the events (percent 0–100).
    Progress {
        percent: u8,
        #[serde(default)]
        message: Option<String>,
    },
    /// A `log` event (`level`: debug, info, warn, error).
    Log { level: String, message: String },
    /// Parts appended to the run's output stream (`GET /v1/runs/{id}/stream`), in order:
    /// 1 to 1000 parts. Refused whole (`413 stream_full`) when the run's stream would pass
    /// `--max-stream-bytes`.
    Stream { parts: Vec<StreamPart> },
    /// State the next attempts start from (at most 1 MiB of JSON).
    Checkpoint {
        #[schema(value_type = Object)]
        state: Value,
    },
    /// Takes the oldest pending signal among `signals` (the reply's `signal`); when there
    /// is none the run becomes `waiting`, frees the worker's slot, and this attempt ends:
    /// a later attempt runs when a signal arrives (or, with `on_timeout: resume`, when
    /// `timeout_ms` passes; with `fail`, the default, the run then fails).
    Wait {
        signals: Vec<String>,
        timeout_ms: u64,
        #[serde(default)]
        on_timeout: OnWaitTimeout,
        /// Chosen by the worker, unique per wait (1–64 characters): this report sent again
        /// (its answer was lost) gets back the signal it took the first time instead of
        /// taking another. The SDKs send one.
        #[serde(default)]
        report_id: Option<String>,
    },
    /// The attempt succeeded with `result` (at most `--max-result-bytes` of JSON).
    Succeed {
        #[schema(value_type = Object)]
        result: Value,
        /// How long the agent ran, ms, for the metrics.
        #[serde(default)]
        elapsed_ms: Option<u64>,
    },
    /// The attempt failed: retried while attempts remain when `retryable` (the default),
    /// failed for good otherwise.
    Fail {
        message: String,
        #[serde(default = "retryable_by_default")]
        retryable: bool,
        /// `error` (default), `timeout` (the worker stopped the agent at its attempt
        /// deadline), or `deadline_exceeded` (stopped at the run's deadline).
        #[serde(default)]
        reason: FailReason,
        #[serde(default)]
        elapsed_ms: Option<u64>,
    },
    /// The worker is shutting down: the run goes back to the queue and the attempt is not
    /// counted.
    HandBack,
}

fn retryable_by_default() -> bool {
    true
}

/// What a wait does when no signal arrives in time.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnWaitTimeout {
    #[default]
    Fail,
    Resume,
}

/// Why an attempt failed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailReason {
    #[default]
    Error,
    Timeout,
    DeadlineExceeded,
}

/// The results, one per report, in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportResults {
    pub results: Vec<ReportResult>,
}

/// How one report went.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportResult {
    /// 200 applied; 409 `attempt_lost`: the attempt no longer holds its run (stop its
    /// agent, report nothing more for it); 413 `stream_full`: the run's output stream
    /// holds as much as it may (nothing of the report was written); 422 `invalid`: the
    /// report itself is wrong; 503 `unavailable`: not applied, send it again; 503
    /// `outcome_unknown`: the connection broke during the commit (it may have been
    /// applied), send it again.
    pub status: u16,
    pub code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// A `wait` that found a signal: the agent goes on with it. A `wait` answered 200
    /// without one suspended the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<Signal>,
}

impl ReportResult {
    fn ok() -> Self {
        Self {
            status: 200,
            code: "ok",
            detail: None,
            signal: None,
        }
    }

    fn lost() -> Self {
        Self {
            status: 409,
            code: "attempt_lost",
            detail: Some("the attempt no longer holds its run (cancelled, finished, or its lease ran out): stop it".into()),
            signal: None,
        }
    }

    fn invalid(detail: impl Into<String>) -> Self {
        Self {
            status: 422,
            code: "invalid",
            detail: Some(detail.into()),
            signal: None,
        }
    }

    pub(super) fn written(written: Result<bool, StoreError>) -> Self {
        match written {
            Ok(true) => Self::ok(),
            Ok(false) => Self::lost(),
            Err(e) => Self::failed(e),
        }
    }

    fn failed(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) | StoreError::Closed => Self {
                status: 503,
                code: "unavailable",
                detail: Some("the database is unavailable: send the report again".into()),
                signal: None,
            },
            StoreError::StorageFull(_) => Self {
                status: 503,
                code: "storage_full",
                detail: Some(
                    "the database's storage is full: not applied; send it again once space is freed"
                        .into(),
                ),
                signal: None,
            },
            StoreError::Uncertain(_) => Self {
                status: 503,
                code: "outcome_unknown",
                detail: Some(
                    "the database connection broke while the report was committed: it may have been applied; send it again"
                        .into(),
                ),
                signal: None,
            },
            other => {
                tracing::error!(error = %other, "a worker's report failed");
                Self {
                    status: 500,
                    code: "internal",
                    detail: Some("internal error".into()),
                    signal: None,
                }
            }
        }
    }
}

/// Report on attempts: progress, logs, checkpoints, waits, and how they ended.
///
/// Reports are applied in the order given; independent ones land in one transaction. The
/// reply holds one result per report: a report of an attempt that lost its run is
/// answered `409 attempt_lost` and changes nothing.
#[utoipa::path(post, path = "/v1/workers/{worker_id}/reports", tag = "workers", operation_id = "report_attempts",
    params(("worker_id" = String, Path, description = "The worker that claimed the attempts")),
    request_body = ReportBatch,
    responses(
        (status = 400, description = "Malformed JSON, or not a report batch", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "One result per report", body = ReportResults),
        (status = 422, description = "No reports, more than 1000, or one that is not a report (`reports/<i>`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the worker scope", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn report_attempts(
    State(state): State<ApiState>,
    caller: Caller,
    Path(worker_id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<ReportResults>, ApiError> {
    caller.require(Scope::Worker)?;
    let worker_id = check_worker_id(&worker_id)?;
    let batch: ReportBatch = from_value(body)?;
    if !(1..=MAX_REPORTS).contains(&batch.reports.len()) {
        return Err(ApiError::Validation(vec![FieldError::new(
            "reports",
            "length",
            "a batch holds 1 to 1000 reports",
        )]));
    }
    // every report is sent to the writer as soon as it is polled, in order: one batch
    // of the writer takes many, and one attempt's reports keep their order
    // a batch holding something that is not a report is refused whole, naming it (the
    // SDKs then send its reports one by one); a report that is one but cannot apply (a
    // token of no attempt, a percent over 100) is refused alone
    let mut items = Vec::with_capacity(batch.reports.len());
    let mut malformed = Vec::new();
    for (i, raw) in batch.reports.into_iter().enumerate() {
        match serde_json::from_value::<ReportItem>(raw) {
            Ok(item) => items.push(item),
            Err(e) => malformed.push(FieldError::new(
                format!("reports/{i}"),
                "invalid",
                format!("not a report: {e}"),
            )),
        }
    }
    if !malformed.is_empty() {
        return Err(ApiError::Validation(malformed));
    }
    let results = futures::future::join_all(items.into_iter().map(|item| {
        let (state, worker_id) = (&state, &worker_id);
        async move {
            let Some(fence) = parse_token(&item.attempt_token, worker_id) else {
                return ReportResult::invalid("`attempt_token` is not an attempt token");
            };
            // a token naming another attempt number than its claim ran is no token of it
            if state.work.claimed.contradicts(&fence) {
                return ReportResult::lost();
            }
            apply(state, fence, item.report).await
        }
    }))
    .await;
    Ok(Json(ReportResults { results }))
}

async fn apply(state: &ApiState, fence: Fence, report: Report) -> ReportResult {
    let store = &state.store;
    match report {
        Report::Progress { percent, message } => {
            if percent > 100 {
                return ReportResult::invalid("`percent` is 0 to 100");
            }
            let progress = Progress {
                percent,
                message: message.map(crate::domain::storable),
            };
            ReportResult::written(store.progress(fence, progress).await)
        }
        Report::Log { level, message } => {
            if !["debug", "info", "warn", "error"].contains(&level.as_str()) {
                return ReportResult::invalid("`level` is debug, info, warn or error");
            }
            let message = crate::domain::storable(message);
            ReportResult::written(store.log(fence, &level, message).await)
        }
        Report::Stream { parts } => stream(store, fence, parts).await,
        Report::Checkpoint { state: saved } => {
            if let Err(problem) = crate::jobs::check_checkpoint(&saved) {
                return ReportResult::invalid(problem);
            }
            ReportResult::written(store.checkpoint(fence, saved).await)
        }
        Report::Wait {
            signals,
            timeout_ms,
            on_timeout,
            report_id,
        } => wait(state, fence, signals, timeout_ms, on_timeout, report_id).await,
        Report::Succeed { result, elapsed_ms } => {
            finish(state, fence, Ok(result), elapsed_ms).await
        }
        Report::Fail {
            message,
            retryable,
            reason,
            elapsed_ms,
        } => {
            let failure = match reason {
                FailReason::Error if retryable => Failure::Agent(AgentError::retryable(message)),
                FailReason::Error => Failure::Agent(AgentError::permanent(message)),
                // the limit is the run's, filled in by `finish`
                FailReason::Timeout => Failure::Timeout(Duration::ZERO),
                FailReason::DeadlineExceeded => Failure::DeadlineExceeded,
            };
            finish(state, fence, Err(failure), elapsed_ms).await
        }
        Report::HandBack => match store.hand_back(vec![fence.clone()]).await {
            Ok(1) => {
                state.work.claimed.forget(&fence);
                ReportResult::ok()
            }
            Ok(_) => ReportResult::lost(),
            Err(e) => ReportResult::failed(e),
        },
    }
}

async fn stream(store: &crate::store::Store, fence: Fence, parts: Vec<StreamPart>) -> ReportResult {
    if !(1..=1000).contains(&parts.len()) {
        return ReportResult::invalid("`parts` holds 1 to 1000 parts");
    }
    let mut checked = Vec::with_capacity(parts.len());
    for (i, part) in parts.into_iter().enumerate() {
        match part.checked() {
            Ok(part) => checked.push(part),
            Err(problem) => return ReportResult::invalid(format!("parts/{i}: {problem}")),
        }
    }
    match store.stream(fence, checked).await {
        Ok(Streamed::Written) => ReportResult::ok(),
        Ok(Streamed::Lost) => ReportResult::lost(),
        Ok(Streamed::Full { limit }) => ReportResult {
            status: 413,
            code: "stream_full",
            detail: Some(format!(
                "the run's output stream is full: it may hold {limit} bytes (--max-stream-bytes)"
            )),
            signal: None,
        },
        Err(e) => ReportResult::failed(e),
    }
}

/// The longest a run may wait for a signal: a year.
const MAX_WAIT_MS: u64 = 365 * 24 * 60 * 60 * 1000;

async fn wait(
    state: &ApiState,
    fence: Fence,
    signals: Vec<String>,
    timeout_ms: u64,
    on_timeout: OnWaitTimeout,
    report_id: Option<String>,
) -> ReportResult {
    if report_id
        .as_ref()
        .is_some_and(|id| id.is_empty() || id.len() > 64)
    {
        return ReportResult::invalid("`report_id` is 1 to 64 characters");
    }
    if signals.is_empty() || signals.len() > 16 {
        return ReportResult::invalid("`signals` names 1 to 16 signals");
    }
    if signals.iter().any(|s| s.is_empty() || s.len() > 64) {
        return ReportResult::invalid("a signal name is 1 to 64 characters");
    }
    if timeout_ms == 0 || timeout_ms > MAX_WAIT_MS {
        return ReportResult::invalid("`timeout_ms` is 1 ms to a year");
    }
    match state
        .store
        .take_signal(fence.clone(), signals.clone(), report_id)
        .await
    {
        Ok(Some(signal)) => {
            return ReportResult {
                signal: Some(signal),
                ..ReportResult::ok()
            };
        }
        Ok(None) => {}
        Err(e) => return ReportResult::failed(e),
    }
    let outcome = Outcome::Wait {
        signals,
        until: Utc::now() + chrono::Duration::milliseconds(timeout_ms as i64),
        resume_on_timeout: on_timeout == OnWaitTimeout::Resume,
    };
    let run_id = fence.run_id;
    let written = state.store.finish(fence, outcome).await;
    if let Ok(true) = written
        && let Ok(run) = state.store.get_run(run_id).await
    {
        let waiting = AttemptOutcome::Waiting;
        state
            .metrics
            .attempt_finished(&run.agent, waiting, Duration::ZERO);
    }
    ReportResult::written(written)
}

/// Ends the attempt: its outcome decided from how it ended and the run's terms, exactly
/// as for an agent of agentq's own.
pub(super) async fn finish(
    state: &ApiState,
    fence: Fence,
    ended: Result<Value, Failure>,
    elapsed_ms: Option<u64>,
) -> ReportResult {
    let known = match terms_of(state, &fence).await {
        Ok(Some(known)) => known,
        Ok(None) => return ReportResult::lost(),
        Err(e) => return ReportResult::failed(e),
    };
    let ClaimTerms {
        agent,
        terms,
        timeout_ms,
        ..
    } = known;
    let ended = match ended {
        Err(Failure::Timeout(_)) => Err(Failure::Timeout(Duration::from_millis(timeout_ms))),
        Ok(result) => crate::jobs::execute::within(result, state.work.max_result_bytes),
        failed => failed,
    };
    let outcome = decide(&terms, ended, Utc::now(), &mut rand::rng());
    let ended_as = match &outcome {
        Outcome::Succeeded(_) => AttemptOutcome::Succeeded,
        Outcome::Retry { .. } => AttemptOutcome::Retry,
        Outcome::Failed(_) => AttemptOutcome::Failed,
        Outcome::Wait { .. } => AttemptOutcome::Waiting,
    };
    let written = state.store.finish(fence.clone(), outcome).await;
    let took = Duration::from_millis(elapsed_ms.unwrap_or(0));
    match &written {
        Ok(true) => state.metrics.attempt_finished(&agent, ended_as, took),
        Ok(false) => state
            .metrics
            .attempt_finished(&agent, AttemptOutcome::Lost, took),
        Err(_) => {}
    }
    if written.is_ok() {
        state.work.claimed.forget(&fence);
    }
    ReportResult::written(written)
}

/// An attempt's terms: kept from its claim by this process, or read from its run (claimed
/// through another process, or long ago). `None` when the run is gone or runs another
/// attempt.
async fn terms_of(state: &ApiState, fence: &Fence) -> Result<Option<ClaimTerms>, StoreError> {
    if let Some(known) = state.work.claimed.get(fence) {
        return Ok(Some(known));
    }
    let run = match state.store.get_run(fence.run_id).await {
        Ok(run) => run,
        Err(StoreError::NotFound) => return Ok(None),
        Err(e) => return Err(e),
    };
    if run.attempt != fence.attempt {
        return Ok(None);
    }
    Ok(Some(ClaimTerms::read(
        run.agent,
        Terms {
            attempt: fence.attempt,
            max_attempts: run.max_attempts,
            backoff: Backoff {
                base: Duration::from_millis(run.backoff_base_ms),
                cap: Duration::from_millis(run.backoff_cap_ms),
            },
            deadline: run.deadline,
        },
        run.timeout_ms,
    )))
}
