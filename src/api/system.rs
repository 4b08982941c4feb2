//! Agents listing and health endpoints.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::{QueueStats, Scope, WorkerInfo, throughput_start};
use crate::jobs::{AgentInfo, GONE_AFTER};

use super::ApiError;

use super::ApiState;
use super::auth::Caller;

#[derive(Serialize, ToSchema)]
pub struct AgentList {
    pub agents: Vec<AgentInfo>,
}

/// Every agent with its input schema: those compiled into agentq (`in_process`) and those
/// external workers declared (`external`).
#[utoipa::path(get, path = "/v1/agents", tag = "agents", operation_id = "list_agents",
    responses(
        (status = 200, description = "The agents", body = AgentList),
        (status = 401, description = "No valid API key or run token", body = crate::api::Problem,
         content_type = "application/problem+json"),
        (status = 403, description = "The key lacks runs:read", body = crate::api::Problem,
         content_type = "application/problem+json"),
    ))]
pub async fn list_agents(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Json<AgentList>, ApiError> {
    // a run token may see what its run's agent expects; a key needs runs:read or worker
    if !matches!(caller, Caller::Token(_)) {
        caller.require_any(&[Scope::RunsRead, Scope::Worker])?;
    }
    let mut agents = state.registry.list();
    agents.extend(state.declared.current().await?.list());
    agents.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(AgentList { agents }))
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `ready` or `unavailable`.
    pub status: String,
    /// Each dependency checked and what was found (`ok` or the failure).
    #[schema(value_type = Object)]
    pub checks: serde_json::Map<String, serde_json::Value>,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "system", operation_id = "healthz",
    security(()),
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        checks: serde_json::Map::new(),
    })
}

#[derive(Serialize, ToSchema)]
pub struct WorkerList {
    /// Worker processes heard from in the last hour, newest first.
    pub workers: Vec<WorkerInfo>,
}

/// Worker processes: every process running workers registers and heartbeats every
/// 2 s; one silent for 10 s is shown as `gone`, one that shut down cleanly as `stopped`.
#[utoipa::path(get, path = "/v1/workers", tag = "workers", operation_id = "list_workers",
    responses(
        (status = 200, description = "The workers", body = WorkerList),
        (status = 401, description = "No valid API key", body = crate::api::Problem,
         content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the admin scope", body = crate::api::Problem,
         content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable", body = crate::api::Problem,
         content_type = "application/problem+json"),
    ))]
pub async fn list_workers(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Json<WorkerList>, ApiError> {
    caller.require(Scope::Admin)?;
    let workers = state.store.list_workers(GONE_AFTER).await?;
    Ok(Json(WorkerList { workers }))
}

#[derive(Serialize, ToSchema)]
pub struct QueueList {
    /// Every registered agent, and any other with runs unfinished or finished in the last
    /// hour, by name.
    pub queues: Vec<QueueStats>,
    /// The minute the throughput series start at (each has one entry per minute, the
    /// current minute last).
    #[serde(serialize_with = "crate::domain::time::ms")]
    pub window_start: chrono::DateTime<chrono::Utc>,
}

/// Per agent: its unfinished runs by state, how long the oldest queued run has waited,
/// and its finished runs per minute over the last hour. The caller's tenant's runs only.
#[utoipa::path(get, path = "/v1/queues", tag = "agents", operation_id = "list_queues",
    responses(
        (status = 200, description = "The queues", body = QueueList),
        (status = 401, description = "No valid API key", body = crate::api::Problem,
         content_type = "application/problem+json"),
        (status = 403, description = "The key lacks runs:read", body = crate::api::Problem,
         content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable", body = crate::api::Problem,
         content_type = "application/problem+json"),
    ))]
pub async fn list_queues(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Json<QueueList>, ApiError> {
    caller.require(Scope::RunsRead)?;
    let tenant = caller.tenant_filter();
    let now = chrono::Utc::now();
    let mut queues = state.store.queue_stats(tenant.as_deref(), now).await?;
    // registered and declared agents show up idle rather than missing
    let declared = state.declared.current().await?.list();
    let names = state.registry.names().map(str::to_owned);
    for agent in names.chain(declared.into_iter().map(|a| a.name)) {
        if !queues.iter().any(|q| q.agent == agent) {
            queues.push(QueueStats::new(agent));
        }
    }
    // paused agents say so, even with nothing queued
    for pause in state.store.paused_agents().await? {
        let at = match queues.iter().position(|q| q.agent == pause.agent) {
            Some(at) => at,
            None => {
                queues.push(QueueStats::new(pause.agent.clone()));
                queues.len() - 1
            }
        };
        queues[at].paused = true;
        queues[at].paused_at = pause.paused_at;
    }
    queues.sort_by(|a, b| a.agent.cmp(&b.agent));
    let start = throughput_start(now.timestamp_millis());
    Ok(Json(QueueList {
        queues,
        window_start: chrono::DateTime::from_timestamp_millis(start).unwrap_or(now),
    }))
}

/// Readiness: the database answers, its storage takes writes (`checks.storage`: `ok`, or
/// `full: …` while writes find it full) and, in a process that runs workers, the worker
/// loop can claim runs.
#[utoipa::path(get, path = "/readyz", tag = "system", operation_id = "readyz",
    security(()),
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "A dependency failed", body = Health),
    ))]
pub async fn readyz(State(state): State<ApiState>) -> (StatusCode, Json<Health>) {
    let mut checks = serde_json::Map::new();
    let (status, word) = match state.store.ping().await {
        Ok(()) => {
            checks.insert("database".into(), "ok".into());
            (StatusCode::OK, "ready")
        }
        Err(e) => {
            checks.insert("database".into(), e.to_string().into());
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
    };
    // a full storage answers reads (the ping) but takes no write
    let (status, word) = match state.store.storage_full() {
        None => {
            checks.insert("storage".into(), "ok".into());
            (status, word)
        }
        Some(why) => {
            checks.insert("storage".into(), format!("full: {why}").into());
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
    };
    let (status, word) = match state.worker.as_ref().map(|w| w.problem()) {
        None => (status, word),
        Some(None) => {
            checks.insert("worker".into(), "ok".into());
            (status, word)
        }
        Some(Some(problem)) => {
            checks.insert("worker".into(), problem.into());
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
    };
    let health = Health {
        status: word.into(),
        checks,
    };
    (status, Json(health))
}
