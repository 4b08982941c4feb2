//! `GET /metrics`: Prometheus metrics in the OpenMetrics text format (see
//! `telemetry::Metrics` for what is measured and where).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::timeout::TimeoutLayer;

use crate::jobs::{AgentRegistry, GONE_AFTER};
use crate::store::{QueueLoad, Store, Transition, TransitionCount};
use crate::telemetry::{AgentGauges, LoadSnapshot, METRICS_CONTENT_TYPE, Metrics, Snapshot};

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
    metrics_page(&state.store, &state.registry, &state.metrics).await
}

/// What `--metrics-listen` serves from: cheap handles only.
#[derive(Clone)]
pub struct Scrape {
    pub store: Store,
    pub registry: Arc<AgentRegistry>,
    pub metrics: Metrics,
    /// One scrape at a time: a flood of them waits here (and times out) instead of
    /// each reading the database.
    pub one_at_a_time: Arc<tokio::sync::Mutex<()>>,
}

/// How long a scrape of `--metrics-listen` may take, waiting its turn included.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// The router of `--metrics-listen`: `GET /metrics` with no key (the address is the
/// access control), anything else a 404 problem.
pub fn metrics_router(scrape: Scrape) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(s): State<Scrape>| async move {
                let _turn = s.one_at_a_time.lock().await;
                metrics_page(&s.store, &s.registry, &s.metrics).await
            }),
        )
        .fallback(super::middleware::not_found)
        .with_state(scrape)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            SCRAPE_TIMEOUT,
        ))
}

/// The store's counts and gauges as telemetry takes them.
pub(crate) fn snapshot(store: &Store, load: Option<QueueLoad>) -> Snapshot {
    let mut snapshot = Snapshot {
        writer_transactions: store.writer_transactions(),
        storage_full: store.storage_full().is_some(),
        ..Snapshot::default()
    };
    let transitions: Vec<TransitionCount> = store.transitions();
    for t in transitions {
        let status = match t.transition {
            Transition::Succeeded => "succeeded",
            Transition::Failed(kind) => {
                snapshot
                    .failed
                    .push((t.agent.clone(), kind.as_str(), t.runs));
                "failed"
            }
            Transition::Cancelled => "cancelled",
            Transition::Retried => {
                snapshot.retried.push((t.agent, t.runs));
                continue;
            }
        };
        // failures come by error kind: one count per (agent, status), as the series is
        match snapshot
            .finished
            .iter_mut()
            .find(|(a, s, _)| *a == t.agent && *s == status)
        {
            Some((_, _, runs)) => *runs += t.runs,
            None => snapshot.finished.push((t.agent, status, t.runs)),
        }
    }
    snapshot.load = load.map(|load| LoadSnapshot {
        agents: load
            .agents
            .into_iter()
            .map(|a| AgentGauges {
                agent: a.agent,
                running: a.running,
                ready: a.ready,
                scheduled: a.scheduled,
                oldest_ready_at: a.oldest_ready_at,
            })
            .collect(),
        workers_alive: load.workers_alive,
    });
    snapshot
}

async fn metrics_page(store: &Store, registry: &AgentRegistry, metrics: &Metrics) -> Response {
    let load = match store.queue_load(GONE_AFTER).await {
        Ok(load) => Some(load),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: could not read the queue's gauges");
            None
        }
    };
    let agents: Vec<&str> = registry.names().collect();
    let body = metrics.render(&snapshot(store, load), &agents);
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], body).into_response()
}
