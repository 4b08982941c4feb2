//! Executing runs: the agent interface and registry, built-in agents, the apalis backend
//! over the runs table, and the worker runtime (leases, sweeper, retention, shutdown).
//!
//! This is the only module that names apalis types.

mod agent;
mod backend;
pub mod builtin;
mod declared;
pub mod egress;
pub(crate) mod execute;
pub(crate) mod outcome;
mod presence;
mod redis;
mod registry;
mod retention;
mod runtime;
mod schedules;
mod stop;
mod supervise;
mod webhooks;

pub(crate) use agent::check_checkpoint;
pub use agent::{Agent, AgentError, MAX_CHECKPOINT_BYTES, OnTimeout, RunContext};
pub use declared::{DeclaredAgents, DeclaredSnapshot, FRESH_FOR};
pub use egress::{EgressClient, EgressPolicy};
pub use presence::{GONE_AFTER, HEARTBEAT_EVERY, WorkerStatus};
pub use redis::{MAX_DISPATCH_WINDOW, RedisOptions, RedisTls};
pub(crate) use registry::valid_agent_name;
pub use registry::{
    AgentInfo, AgentKind, AgentRegistry, DeclarationInfo, InputProblem, RegistryError,
};
pub use retention::RetentionOptions;
pub use runtime::{WorkerOptions, run_worker, served_agents, sweep};
pub use schedules::tick_schedules;
pub use webhooks::WebhookOptions;

/// Errors of the worker side.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("agent `{0}` is not registered")]
    UnknownAgent(String),
    #[error("runs are submitted through the store, not pushed through apalis")]
    PushUnsupported,
    /// Claiming runs failed this many times in a row: the worker loop stops (and is
    /// started again by its supervisor).
    #[error("claiming runs failed {0} times in a row: {1}")]
    ClaimsFailing(u32, String),
    /// A worker loop was restarted `--max-restarts` times in a row.
    #[error("{0}")]
    GaveUp(String),
}
