//! Steering runs: cancel one, retry a failed one, retry many failed ones.

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{Run, Scope};
use crate::store::RequeueFilter;

use super::ApiState;
use super::auth::Caller;
use super::error::{ApiError, Problem};
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
    Ok(Json(
        state.store.cancel_run(id, Some(caller.actor())).await?,
    ))
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
    Ok(Json(
        state.store.requeue_run(id, Some(caller.actor())).await?,
    ))
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
