//! The agents a process knows, with their input schemas compiled once.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::Agent;

struct Registered {
    agent: Arc<dyn Agent>,
    schema: Value,
    validator: jsonschema::Validator,
}

/// Agents by name. Built at start-up, then shared read-only.
#[derive(Default)]
pub struct AgentRegistry {
    agents: BTreeMap<String, Registered>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("agent name `{0}` is invalid: use 1–64 of a-z, 0-9, `_`, `-`, `.`")]
    InvalidName(String),
    #[error("agent `{0}` is registered twice")]
    Duplicate(String),
    #[error("agent `{name}` has an invalid input schema: {reason}")]
    InvalidSchema { name: String, reason: String },
}

/// One problem found in a run's input, located by JSON pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputProblem {
    /// JSON pointer into the input (`""` for the input itself).
    pub pointer: String,
    pub message: String,
}

/// An agent as `GET /v1/agents` lists it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AgentInfo {
    pub name: String,
    pub description: String,
    /// JSON Schema of the agent's input.
    pub input_schema: Value,
    /// `in_process`: compiled into agentq; `external`: declared by a worker over HTTP.
    pub kind: AgentKind,
    /// An external agent's declaration: its defaults, schema version, and who declared it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub declared: Option<DeclarationInfo>,
}

/// Where an agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgentKind {
    InProcess,
    External,
}

/// An external agent's declaration, as `GET /v1/agents` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeclarationInfo {
    pub defaults: crate::domain::AgentDefaults,
    /// Counts up from 1 each time the input schema changes.
    pub version: u32,
    /// The worker that declared it last.
    pub declared_by: String,
    #[serde(serialize_with = "crate::domain::time::ms")]
    pub declared_at: chrono::DateTime<chrono::Utc>,
}

pub(crate) fn valid_agent_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b))
}

impl AgentRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, agent: impl Agent) -> Result<&mut Self, RegistryError> {
        self.register_arc(Arc::new(agent))
    }

    pub fn register_arc(&mut self, agent: Arc<dyn Agent>) -> Result<&mut Self, RegistryError> {
        let name = agent.name().to_owned();
        if !valid_agent_name(&name) {
            return Err(RegistryError::InvalidName(name));
        }
        if self.agents.contains_key(&name) {
            return Err(RegistryError::Duplicate(name));
        }
        let schema = agent.input_schema();
        let validator =
            jsonschema::validator_for(&schema).map_err(|e| RegistryError::InvalidSchema {
                name: name.clone(),
                reason: e.to_string(),
            })?;
        self.agents.insert(
            name,
            Registered {
                agent,
                schema,
                validator,
            },
        );
        Ok(self)
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Agent>> {
        self.agents.get(name).map(|r| r.agent.clone())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.agents.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.agents.keys().map(String::as_str)
    }

    pub fn list(&self) -> Vec<AgentInfo> {
        self.agents
            .iter()
            .map(|(name, r)| AgentInfo {
                name: name.clone(),
                description: r.agent.description().to_owned(),
                input_schema: r.schema.clone(),
                kind: AgentKind::InProcess,
                declared: None,
            })
            .collect()
    }

    /// Checks `input` against the agent's schema. `None` when the agent is unknown.
    pub fn check_input(&self, name: &str, input: &Value) -> Option<Vec<InputProblem>> {
        let registered = self.agents.get(name)?;
        Some(input_problems(&registered.validator, input))
    }
}

/// What is wrong with `input` under `validator` (at most 20 problems), each located by
/// JSON pointer.
pub(crate) fn input_problems(
    validator: &jsonschema::Validator,
    input: &Value,
) -> Vec<InputProblem> {
    validator
        .iter_errors(input)
        .take(20)
        .map(|e| {
            // name the offending property itself, not the object holding it
            let child = match &e.kind {
                jsonschema::error::ValidationErrorKind::Required { property } => {
                    property.as_str().map(str::to_owned)
                }
                jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected }
                    if unexpected.len() == 1 =>
                {
                    Some(unexpected[0].clone())
                }
                _ => None,
            };
            let mut pointer = e.instance_path.to_string();
            if let Some(child) = child {
                pointer.push('/');
                pointer.push_str(&child.replace('~', "~0").replace('/', "~1"));
            }
            InputProblem {
                pointer,
                message: e.to_string(),
            }
        })
        .collect()
}

impl std::fmt::Debug for AgentRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.agents.keys()).finish()
    }
}
