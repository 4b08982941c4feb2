//! `PUT /v1/agents/{name}`: a worker declares an agent; `GET /v1/agents/{name}`: one
//! agent, with the input schemas a declared one had.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use validator::Validate;

use crate::domain::{AgentDeclaration, AgentDefaults, AgentSchemaChange, DeclaredAgent, Scope};
use crate::jobs::{AgentInfo, valid_agent_name};

use super::super::ApiState;
use super::super::auth::Caller;
use super::super::error::{ApiError, FieldError, Problem};
use super::super::extract::{JsonBody, from_value};
use super::check_worker_id;

/// An agent's declaration.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeclareAgentRequest {
    /// The worker declaring it (as in its heartbeat): recorded with a schema change.
    pub worker_id: String,
    /// One line for `GET /v1/agents` and the dashboard.
    #[serde(default)]
    #[validate(length(max = 1000))]
    pub description: String,
    /// A JSON Schema every run's `input` must satisfy, checked when the run is created
    /// (default `{}`: anything).
    #[serde(default = "any_input")]
    #[schema(value_type = Object)]
    pub input_schema: Value,
    /// What its runs get where they set nothing themselves.
    #[serde(default)]
    pub defaults: DeclaredDefaults,
}

fn any_input() -> Value {
    serde_json::json!({})
}

/// The same bounds as the run's own fields in `POST /v1/runs`.
#[derive(Debug, Default, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeclaredDefaults {
    #[validate(range(min = 1, max = 86_400_000))]
    #[schema(minimum = 1, maximum = 86_400_000)]
    pub timeout_ms: Option<u64>,
    #[validate(range(min = 1, max = 100))]
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<u32>,
    #[validate(range(min = 0, max = 3_600_000))]
    #[schema(maximum = 3_600_000)]
    pub backoff_base_ms: Option<u64>,
    #[validate(range(min = 0, max = 86_400_000))]
    #[schema(maximum = 86_400_000)]
    pub backoff_cap_ms: Option<u64>,
}

/// What a declaration did, and the agent as stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct Declaration {
    pub agent: DeclaredAgent,
    /// The agent was new.
    pub created: bool,
    /// Its input schema is new (a first declaration counts): the change was recorded.
    pub schema_changed: bool,
}

/// One agent; a declared one with the input schemas it had, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentDetail {
    #[serde(flatten)]
    pub agent: AgentInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_changes: Option<Vec<AgentSchemaChange>>,
}

/// Declare (or update) an agent served by an external worker.
///
/// Runs of a declared agent are validated against its input schema by every API process
/// and wait in the queue until a worker claims them. Declaring the same schema again
/// changes nothing but the description and defaults; a new schema counts `version` up
/// and is recorded with the worker and key that declared it. A name an agent compiled
/// into agentq holds is refused.
#[utoipa::path(put, path = "/v1/agents/{name}", tag = "workers", operation_id = "declare_agent",
    params(("name" = String, Path, description = "1–64 of a-z, 0-9, `_`, `-`, `.`")),
    request_body = DeclareAgentRequest,
    responses(
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 201, description = "Declared for the first time", body = Declaration),
        (status = 200, description = "Declared again (schema_changed says whether it changed)", body = Declaration),
        (status = 409, description = "An agent compiled into agentq holds the name (`agent_name_taken`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid name, schema or defaults", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the worker scope", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn declare_agent(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<(StatusCode, Json<Declaration>), ApiError> {
    caller.require(Scope::Worker)?;
    let request: DeclareAgentRequest = from_value(body)?;
    let mut problems = field_problems(request.validate(), "");
    problems.extend(field_problems(request.defaults.validate(), "defaults/"));
    if !valid_agent_name(&name) {
        problems.push(FieldError::new(
            "name",
            "pattern",
            "an agent name is 1 to 64 of a-z, 0-9, `_`, `-` and `.`",
        ));
    }
    if let Err(e) = jsonschema::validator_for(&request.input_schema) {
        problems.push(FieldError::new(
            "input_schema",
            "schema",
            format!("not a valid JSON Schema: {e}"),
        ));
    }
    let defaults = &request.defaults;
    // with the server's defaults for what it leaves unset, as its runs will have them
    let server = &state.defaults.backoff;
    let base = defaults
        .backoff_base_ms
        .unwrap_or(server.base.as_millis() as u64);
    let cap = defaults
        .backoff_cap_ms
        .unwrap_or(server.cap.as_millis() as u64);
    if cap < base {
        let field = match defaults.backoff_cap_ms {
            Some(_) => "defaults/backoff_cap_ms",
            None => "defaults/backoff_base_ms",
        };
        problems.push(FieldError::new(
            field,
            "range",
            format!(
                "the backoff cap ({cap} ms) would be below its base ({base} ms) for runs that set neither: declare backoff_cap_ms at least backoff_base_ms"
            ),
        ));
    }
    let worker_id = match check_worker_id(&request.worker_id) {
        Ok(id) => id,
        Err(ApiError::Validation(fields)) => {
            problems.extend(fields);
            "".into()
        }
        Err(other) => return Err(other),
    };
    if !problems.is_empty() {
        problems.sort_by(|a, b| a.field.cmp(&b.field));
        return Err(ApiError::Validation(problems));
    }
    if state.registry.contains(&name) {
        return Err(ApiError::ConflictCode {
            code: "agent_name_taken",
            detail: format!(
                "an agent compiled into agentq is named `{name}`; declare yours under another name"
            ),
        });
    }
    let declared = state
        .store
        .declare_agent(AgentDeclaration {
            name,
            description: crate::domain::storable(request.description),
            input_schema: request.input_schema,
            defaults: AgentDefaults {
                timeout_ms: defaults.timeout_ms,
                max_attempts: defaults.max_attempts,
                backoff_base_ms: defaults.backoff_base_ms,
                backoff_cap_ms: defaults.backoff_cap_ms,
            },
            declared_by: worker_id.to_string(),
            key_id: caller.key_id().map(str::to_owned),
        })
        .await?;
    if declared.schema_changed {
        tracing::info!(
            agent = %declared.agent.name, version = declared.agent.version, worker.id = %worker_id,
            "agent declared with a new input schema"
        );
    }
    state.declared.remember(declared.agent.clone());
    let status = if declared.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(Declaration {
            agent: declared.agent,
            created: declared.created,
            schema_changed: declared.schema_changed,
        }),
    ))
}

/// The fields a validation found wrong, named under `prefix`.
fn field_problems(
    checked: Result<(), validator::ValidationErrors>,
    prefix: &str,
) -> Vec<FieldError> {
    match checked.map_err(ApiError::from) {
        Ok(()) => Vec::new(),
        Err(ApiError::Validation(fields)) => fields
            .into_iter()
            .map(|f| FieldError {
                field: format!("{prefix}{}", f.field),
                ..f
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// One agent: compiled into agentq, or declared by a worker (then with every input
/// schema it had, who declared it and when).
#[utoipa::path(get, path = "/v1/agents/{name}", tag = "agents", operation_id = "get_agent",
    params(("name" = String, Path, description = "The agent's name")),
    responses(
        (status = 200, description = "The agent", body = AgentDetail),
        (status = 404, description = "No such agent", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key or run token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks runs:read or worker", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_agent(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<AgentDetail>, ApiError> {
    caller.require_any(&[Scope::RunsRead, Scope::Worker])?;
    if let Some(agent) = state.registry.list().into_iter().find(|a| a.name == name) {
        return Ok(Json(AgentDetail {
            agent,
            schema_changes: None,
        }));
    }
    let declared = state.declared.current().await?;
    let Some(agent) = declared.list().into_iter().find(|a| a.name == name) else {
        return Err(ApiError::NotFound("agent"));
    };
    let changes = state.store.agent_schema_changes(&name).await?;
    Ok(Json(AgentDetail {
        agent,
        schema_changes: Some(changes),
    }))
}
