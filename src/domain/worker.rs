//! Worker processes as the registry shows them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

/// What a worker process reports about itself with every heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerBeat {
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub version: String,
    pub agents: Vec<String>,
    pub concurrency: u32,
    pub started_at: DateTime<Utc>,
    /// Attempts executing now.
    pub running: u64,
    /// Attempts finished since the process started.
    pub processed: u64,
    /// Times the worker loop was restarted after it stopped on its own.
    pub restarts: u32,
    /// When it last was.
    pub last_restart_at: Option<DateTime<Utc>>,
    /// Why the worker last could not work (cannot reach the database, say), while it lasts.
    pub last_error: Option<String>,
    /// The process stopped cleanly.
    pub stopped: bool,
    /// What it is written in: `rust` for agentq's own workers; an SDK's language otherwise.
    pub language: String,
}

/// Whether a registered worker is heard from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// It heartbeats.
    Alive,
    /// It stopped heartbeating without saying goodbye (killed, lost its network).
    Gone,
    /// It shut down cleanly.
    Stopped,
}

/// A worker process in the registry.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct WorkerInfo {
    /// Unique per process: host, pid and a random suffix.
    pub id: String,
    pub state: WorkerState,
    pub host: String,
    pub pid: u32,
    /// What it is written in: `rust` for agentq's own worker processes, `python`,
    /// `typescript` (or what an external worker says) for one connected over HTTP.
    pub language: String,
    /// The agentq version it runs; for an external worker, its SDK's version.
    pub version: String,
    pub agents: Vec<String>,
    pub concurrency: u32,
    #[serde(serialize_with = "crate::domain::time::ms")]
    pub started_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::domain::time::ms")]
    pub last_heartbeat_at: DateTime<Utc>,
    /// Attempts it is running now; 0 once it is gone or stopped (its runs are taken back
    /// when their leases end), whatever it reported last.
    pub running: u64,
    pub processed: u64,
    /// Times its worker loop stopped on its own and was started again (`--max-restarts`
    /// in a row, and the process exits).
    pub restarts: u32,
    /// When that last happened.
    #[serde(serialize_with = "crate::domain::time::ms_opt")]
    pub last_restart_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}
