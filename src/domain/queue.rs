//! The queue as the dashboard shows it: runs counted by status, and per agent.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::RunStatus;

/// How many runs are in each status; every status is present, zero or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct StatusCounts {
    pub total: u64,
    #[schema(value_type = BTreeMap<String, u64>, example = json!({"queued": 3, "running": 1, "succeeded": 40}))]
    pub by_status: BTreeMap<RunStatus, u64>,
}

impl StatusCounts {
    /// Counts from `(status, n)` pairs; statuses not among them count zero.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (RunStatus, u64)>) -> Self {
        let mut by_status: BTreeMap<RunStatus, u64> =
            RunStatus::ALL.iter().map(|s| (*s, 0)).collect();
        for (status, n) in pairs {
            *by_status.entry(status).or_default() += n;
        }
        Self {
            total: by_status.values().sum(),
            by_status,
        }
    }
}

/// The minutes a throughput series covers: the last hour, the current minute last.
pub const THROUGHPUT_MINUTES: usize = 60;

/// The start (ms) of the minute a throughput series starts at, for a series read at `now`
/// (ms): `THROUGHPUT_MINUTES - 1` whole minutes before the current one.
pub fn throughput_start(now_ms: i64) -> i64 {
    const MINUTE: i64 = 60_000;
    (now_ms.div_euclid(MINUTE) - (THROUGHPUT_MINUTES as i64 - 1)) * MINUTE
}

/// One agent's queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct QueueStats {
    pub agent: String,
    /// Paused (`POST /v1/agents/{name}/pause`): none of its runs is claimed.
    pub paused: bool,
    /// Since when, while paused.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "crate::domain::time::ms_opt")]
    pub paused_at: Option<DateTime<Utc>>,
    /// Waiting for runs they depend on.
    pub blocked: u64,
    /// Queued and due: waiting for a worker.
    pub queued: u64,
    /// Queued to start later (`run_at` in the future).
    pub scheduled: u64,
    pub running: u64,
    /// Failed an attempt, the next one due later or now.
    pub retrying: u64,
    /// Suspended until a signal.
    pub waiting: u64,
    /// When the longest-waiting queued run became due.
    #[serde(serialize_with = "crate::domain::time::ms_opt")]
    pub oldest_queued_at: Option<DateTime<Utc>>,
    /// How long it has waited, in milliseconds.
    pub oldest_queued_age_ms: Option<u64>,
    /// Runs that succeeded in each minute of the last hour, oldest first.
    pub succeeded_per_minute: Vec<u64>,
    /// Runs that failed for good in each minute of the last hour, oldest first.
    pub failed_per_minute: Vec<u64>,
    /// Runs cancelled in each minute of the last hour, oldest first.
    pub cancelled_per_minute: Vec<u64>,
}

impl QueueStats {
    pub fn new(agent: String) -> Self {
        Self {
            agent,
            succeeded_per_minute: vec![0; THROUGHPUT_MINUTES],
            failed_per_minute: vec![0; THROUGHPUT_MINUTES],
            cancelled_per_minute: vec![0; THROUGHPUT_MINUTES],
            ..Self::default()
        }
    }
}
