//! Pausing and resuming an agent's queue: `POST /v1/agents/{name}/pause` and `/resume`.
//! Durable and for every process: while paused no worker (agentq's own, through Redis, or
//! external) claims the agent's runs; new runs are accepted and wait; running ones finish.

use axum::Json;
use axum::extract::{Path, State};

use crate::domain::{AgentPauseState, Scope};

use super::ApiState;
use super::auth::Caller;
use super::error::{ApiError, Problem};

/// Pause an agent's queue: nothing of it is claimed until it is resumed, by any worker
/// process; new runs are still accepted (they wait), running runs finish. Pausing a paused
/// agent changes nothing. Needs the `admin` scope (queues are every tenant's).
#[utoipa::path(post, path = "/v1/agents/{name}/pause", tag = "agents", operation_id = "pause_agent",
    params(("name" = String, Path, description = "Agent name")),
    responses(
        (status = 200, description = "The agent, paused", body = AgentPauseState),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the admin scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such agent (registered or declared)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn pause_agent(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<AgentPauseState>, ApiError> {
    set_paused(&state, &caller, name, true).await
}

/// Resume a paused agent's queue: its waiting runs are claimed again at once. Resuming an
/// agent that is not paused changes nothing. Needs the `admin` scope.
#[utoipa::path(post, path = "/v1/agents/{name}/resume", tag = "agents", operation_id = "resume_agent",
    params(("name" = String, Path, description = "Agent name")),
    responses(
        (status = 200, description = "The agent, not paused", body = AgentPauseState),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the admin scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such agent (registered or declared)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn resume_agent(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<AgentPauseState>, ApiError> {
    set_paused(&state, &caller, name, false).await
}

/// Pauses or resumes an agent this process has, or an external worker declared, and
/// answers its state as stored.
async fn set_paused(
    state: &ApiState,
    caller: &Caller,
    agent: String,
    pause: bool,
) -> Result<Json<AgentPauseState>, ApiError> {
    caller.require(Scope::Admin)?;
    let known = state.registry.contains(&agent) || state.declared.current().await?.contains(&agent);
    if !known {
        return Err(ApiError::NotFound("agent"));
    }
    if pause {
        state
            .store
            .pause_agent(&agent, Some(caller.actor()))
            .await?;
    } else {
        state.store.resume_agent(&agent).await?;
    }
    let paused = state.store.paused_agents().await?;
    Ok(Json(
        paused
            .into_iter()
            .find(|p| p.agent == agent)
            .unwrap_or(AgentPauseState {
                agent,
                paused: false,
                paused_at: None,
                paused_by: None,
            }),
    ))
}
