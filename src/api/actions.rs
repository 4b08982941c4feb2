//! Steering runs: cancel one, change one that has not started, retry a failed one, retry
//! many failed ones.

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use validator::Validate;

use crate::domain::{Run, Scope};
use crate::store::RequeueFilter;

use super::ApiState;
use super::auth::Caller;
use super::error::{ApiError, FieldError, Problem};
use super::extract::JsonBody;
use super::extract::parse_run_id;

/// Cancel a run that has not finished. Queued and retrying runs are cancelled at once; a
/// running run's agent is told to stop within a second, wherever it runs.
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs", operation_id = "cancel_run",
    params(("id" = String, Path, description = "Run id")),
    responses(
        (status = 200, description = "The cancelled run", body = Run),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks runs:write", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such run (or another tenant's)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The run already finished", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn cancel_run(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Run>, ApiError> {
    let id = parse_run_id(&id)?;
    caller.may_write(&state.store.get_run(id).await?)?;
    let cancelled = state.store.cancel_run(id, Some(caller.actor())).await?;
    Ok(Json(caller.shown(cancelled)))
}

/// What to change of a run that has not started; at least one field.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeRunRequest {
    /// Higher runs first among due runs.
    #[validate(range(min = -1000, max = 1000))]
    #[schema(minimum = -1000, maximum = 1000)]
    pub priority: Option<i32>,
    /// Do not start before this time (RFC 3339); a past time makes it due now. Before the
    /// run's deadline and expires_at, if it has them.
    pub run_at: Option<DateTime<Utc>>,
}

/// Change the priority or run_at of a run that has not started (queued, or blocked on its
/// dependencies): it takes its new place in the queue at once, whatever delivers it. A
/// `changed` event records what changed and who changed it.
#[utoipa::path(patch, path = "/v1/runs/{id}", tag = "runs", operation_id = "change_run",
    params(("id" = String, Path, description = "Run id")),
    request_body = ChangeRunRequest,
    responses(
        (status = 200, description = "The run, changed", body = Run),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks runs:write", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such run (or another tenant's)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The run has started (or finished)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, or none", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn change_run(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<ChangeRunRequest>,
) -> Result<Json<Run>, ApiError> {
    let id = parse_run_id(&id)?;
    request.validate()?;
    if request.priority.is_none() && request.run_at.is_none() {
        return Err(ApiError::Validation(vec![FieldError::new(
            "priority",
            "required",
            "give priority, run_at or both",
        )]));
    }
    let run = state.store.get_run(id).await?;
    caller.may_write(&run)?;
    if let Some(at) = request.run_at {
        for (field, limit) in [("deadline", run.deadline), ("expires_at", run.expires_at)] {
            if limit.is_some_and(|limit| limit <= at) {
                return Err(ApiError::Validation(vec![FieldError::new(
                    "run_at",
                    "range",
                    format!("run_at must be earlier than the run's {field}"),
                )]));
            }
        }
    }
    let changed = state
        .store
        .change_run(id, request.priority, request.run_at, Some(caller.actor()))
        .await?;
    Ok(Json(caller.shown(changed)))
}

/// Put a failed run back in the queue: attempts reset, history kept.
#[utoipa::path(post, path = "/v1/runs/{id}/retry", tag = "runs", operation_id = "retry_run",
    params(("id" = String, Path, description = "Run id")),
    responses(
        (status = 200, description = "The run, queued again", body = Run),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks runs:write", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such run (or another tenant's)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The run is not failed", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn retry_run(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Run>, ApiError> {
    let id = parse_run_id(&id)?;
    caller.may_write(&state.store.get_run(id).await?)?;
    let requeued = state.store.requeue_run(id, Some(caller.actor())).await?;
    Ok(Json(caller.shown(requeued)))
}

/// Which failed runs to retry; every field narrows the set.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRunsRequest {
    pub agent: Option<String>,
    /// Runs created at or after this time.
    pub created_after: Option<DateTime<Utc>>,
    /// Runs created before this time.
    pub created_before: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RetryRunsResponse {
    /// How many failed runs were put back in the queue.
    pub requeued: u64,
}

/// Put every failed run matching the filter back in the queue (the dead-letter replay).
#[utoipa::path(post, path = "/v1/runs/retry", tag = "runs", operation_id = "retry_runs",
    request_body = RetryRunsRequest,
    responses(
        (status = 200, description = "How many of the caller's tenant's failed runs were requeued", body = RetryRunsResponse),
        (status = 400, description = "Malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the admin scope", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Text holding a NUL character", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn retry_runs(
    State(state): State<ApiState>,
    caller: Caller,
    JsonBody(request): JsonBody<RetryRunsRequest>,
) -> Result<Json<RetryRunsResponse>, ApiError> {
    caller.require(Scope::Admin)?;
    let filter = RequeueFilter {
        tenant: caller.tenant_filter(),
        agent: request.agent,
        created_after: request.created_after,
        created_before: request.created_before,
        limit: 500,
    };
    let requeued = state
        .store
        .requeue_failed(filter, Some(caller.actor()))
        .await?;
    Ok(Json(RetryRunsResponse { requeued }))
}
