//! Agents declared at run time by workers outside the process (Python, TypeScript, any
//! HTTP client): what they declare and what the store keeps of it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// What an agent's runs get where the run sets nothing itself; unset here, the server's
/// defaults apply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentDefaults {
    /// Per-attempt time limit, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_base_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_cap_ms: Option<u64>,
}

/// An agent a worker declares, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentDeclaration {
    pub name: String,
    pub description: String,
    /// A JSON Schema (already checked to compile).
    pub input_schema: Value,
    pub defaults: AgentDefaults,
    /// The worker that declares it.
    pub declared_by: String,
    /// The API key it used, when the server uses keys.
    pub key_id: Option<String>,
}

/// A declared agent as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DeclaredAgent {
    pub name: String,
    pub description: String,
    /// JSON Schema of the agent's input.
    pub input_schema: Value,
    pub defaults: AgentDefaults,
    /// Counts up from 1 each time the input schema changes.
    pub version: u32,
    /// The worker that declared it last.
    pub declared_by: String,
    #[serde(serialize_with = "crate::domain::time::ms")]
    pub declared_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::domain::time::ms")]
    pub created_at: DateTime<Utc>,
}

/// One input schema an agent had: who declared it and when.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AgentSchemaChange {
    pub version: u32,
    pub declared_by: String,
    /// The id of the API key the worker used, when the server uses keys.
    pub key_id: Option<String>,
    #[serde(serialize_with = "crate::domain::time::ms")]
    pub declared_at: DateTime<Utc>,
    pub input_schema: Value,
}

/// What a declaration did.
#[derive(Debug, Clone, PartialEq)]
pub struct Declared {
    pub agent: DeclaredAgent,
    /// The agent was new.
    pub created: bool,
    /// Its input schema is new (a first declaration counts): a change was recorded.
    pub schema_changed: bool,
}

/// Whether an agent's queue is paused: while it is, no worker claims its runs; new runs
/// are accepted and wait, running ones finish.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AgentPauseState {
    pub agent: String,
    pub paused: bool,
    /// Since when, while paused.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "crate::domain::time::ms_opt")]
    pub paused_at: Option<DateTime<Utc>>,
    /// Who paused it (`key:<key id>` or `open`), while paused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_by: Option<String>,
}
