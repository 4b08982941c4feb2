//! `GET /metrics`: Prometheus metrics in the OpenMetrics text format (see
//! `telemetry::Metrics` for what is measured and where).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::jobs::GONE_AFTER;
use crate::telemetry::METRICS_CONTENT_TYPE;

use super::ApiState;
use super::auth::Caller;
use crate::domain::Scope;

/// Prometheus metrics, in the OpenMetrics text format.
///
/// Runs created and finished, attempts, run duration and queue wait, HTTP requests, and
/// gauges of the queue read from the database. Counters are per process; if the database
/// does not answer, the gauges are left out.
#[utoipa::path(get, path = "/metrics", tag = "system", operation_id = "get_metrics",
    responses(
        (status = 200, description = "The metrics (OpenMetrics text format)", body = String,
         content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"),
        (status = 401, description = "No valid API key", body = crate::api::Problem,
         content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the admin scope", body = crate::api::Problem,
         content_type = "application/problem+json"),
    ))]
pub async fn get_metrics(State(state): State<ApiState>, caller: Caller) -> Response {
    if let Err(e) = caller.require(Scope::Admin) {
        return e.into_response();
    }
    let load = match state.store.queue_load(GONE_AFTER).await {
        Ok(load) => Some(load),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: could not read the queue's gauges");
            None
        }
    };
    let agents: Vec<&str> = state.registry.names().collect();
    let body = state
        .metrics
        .render(&state.store.transitions(), load.as_ref(), &agents);
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], body).into_response()
}
