//! The values the store takes and returns besides the domain's own.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{Backoff, Run, RunError, RunId, RunStatus};

/// Identifies one claim of one run by one worker process. Every write of the attempt is
/// conditional on the run still carrying this claim, so a worker that lost the run (its
/// lease expired and the run was claimed again, or it was handed back) writes nothing.
/// `claim` counts every claim of the run and is never given back, unlike `attempt`
/// (a hand-back returns the attempt), so no two claims share a fence.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fence {
    pub run_id: RunId,
    pub claim: u32,
    /// The attempt number this claim runs, for events and logs.
    pub attempt: u32,
    pub worker_id: Arc<str>,
}

/// What became of stream parts an attempt appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streamed {
    Written,
    /// The attempt no longer owns its run: nothing was written.
    Lost,
    /// The run's stream would pass its limit (bytes): nothing was written.
    Full {
        limit: u64,
    },
}

/// A run claimed by a worker: what it needs to execute one attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimedRun {
    pub id: RunId,
    pub agent: String,
    pub input: Value,
    /// The state the previous attempt saved, if any.
    pub checkpoint: Option<Value>,
    /// The whole run must finish by then.
    #[serde(serialize_with = "crate::domain::time::ms_opt")]
    pub deadline: Option<DateTime<Utc>>,
    /// The results of the runs this one depends on.
    pub dependencies: std::collections::BTreeMap<RunId, Value>,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// The claim's fencing token (see [`Fence`]).
    pub claim: u32,
    pub max_attempts: u32,
    pub timeout_ms: u64,
    pub backoff_base_ms: u64,
    pub backoff_cap_ms: u64,
    pub priority: i32,
    pub worker_id: Arc<str>,
    /// How long the run had been ready (due and unblocked) when this claim took it.
    pub queue_wait_ms: u64,
    /// The W3C `traceparent` of the request that created the run: this attempt's span
    /// continues its trace.
    #[serde(default)]
    pub trace_parent: Option<String>,
    /// Whose run it is.
    #[serde(default)]
    pub tenant: String,
    /// The run's labels.
    #[serde(default)]
    pub metadata: std::collections::BTreeMap<String, String>,
    /// Who created the run (see `Run::created_by`).
    #[serde(default)]
    pub created_by: Option<String>,
}

impl ClaimedRun {
    pub fn fence(&self) -> Fence {
        Fence {
            run_id: self.id,
            claim: self.claim,
            attempt: self.attempt,
            worker_id: self.worker_id.clone(),
        }
    }

    pub fn backoff(&self) -> Backoff {
        Backoff {
            base: std::time::Duration::from_millis(self.backoff_base_ms),
            cap: std::time::Duration::from_millis(self.backoff_cap_ms),
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded(Value),
    /// The attempt failed and another is due at `retry_at`.
    Retry {
        error: RunError,
        retry_at: DateTime<Utc>,
    },
    /// The run failed for good.
    Failed(RunError),
    /// The agent waits for one of these signals, until `until`; the attempt is not counted.
    Wait {
        signals: Vec<String>,
        until: DateTime<Utc>,
        resume_on_timeout: bool,
    },
}

/// Filters and paging for listing runs, newest first.
#[derive(Debug, Clone)]
pub struct RunFilter {
    pub statuses: Vec<RunStatus>,
    pub agent: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    /// Return runs older than this one (the previous page's `next_cursor`).
    pub before: Option<RunId>,
    pub limit: u32,
    /// Only this tenant's runs; `None` for all.
    pub tenant: Option<String>,
    /// Only runs whose metadata has every one of these entries.
    pub metadata: std::collections::BTreeMap<String, String>,
    /// Only runs whose id or a metadata value contains this, ignoring ASCII case.
    pub search: Option<String>,
    /// Only runs with this concurrency key.
    pub concurrency_key: Option<String>,
    /// Which of the runs' bodies a list returns (the others are null); all by default.
    pub bodies: Bodies,
    /// About the most bytes of bodies and metadata one page of a list holds (a page holds
    /// at least one run, whatever its size); unbounded by default.
    pub page_bytes: usize,
}

/// The parts of a run that can be large, each returned by a list or left null.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bodies {
    pub input: bool,
    pub result: bool,
    pub checkpoint: bool,
    pub on_failure: bool,
}

impl Bodies {
    pub const ALL: Self = Self {
        input: true,
        result: true,
        checkpoint: true,
        on_failure: true,
    };
    pub const NONE: Self = Self {
        input: false,
        result: false,
        checkpoint: false,
        on_failure: false,
    };
}

impl Default for Bodies {
    fn default() -> Self {
        Self::ALL
    }
}

impl Default for RunFilter {
    fn default() -> Self {
        Self {
            statuses: Vec::new(),
            agent: None,
            created_after: None,
            created_before: None,
            before: None,
            limit: 0,
            tenant: None,
            metadata: Default::default(),
            search: None,
            concurrency_key: None,
            bodies: Bodies::ALL,
            page_bytes: usize::MAX,
        }
    }
}

impl RunFilter {
    /// `search` as a LIKE pattern with `\` escaping: contains, anywhere.
    pub fn search_pattern(&self) -> Option<String> {
        self.search.as_deref().map(|s| {
            let mut pattern = String::with_capacity(s.len() + 2);
            pattern.push('%');
            for c in s.chars() {
                if matches!(c, '%' | '_' | '\\') {
                    pattern.push('\\');
                }
                pattern.push(c);
            }
            pattern.push('%');
            pattern
        })
    }

    /// `metadata` as a JSON object, `None` when empty.
    pub fn metadata_json(&self) -> Option<String> {
        (!self.metadata.is_empty())
            .then(|| serde_json::to_string(&self.metadata).expect("a string map serialises"))
    }
}

/// One page of runs and the cursor of the next, if any.
#[derive(Debug, Clone)]
pub struct RunPage {
    pub runs: Vec<Run>,
    pub next_cursor: Option<RunId>,
}

/// At most how many of a run's events one read returns, and about how many bytes of their
/// `data` (at least one event is always returned).
#[derive(Debug, Clone, Copy)]
pub struct EventBounds {
    pub limit: u32,
    pub bytes: usize,
}

impl EventBounds {
    /// Every event.
    pub const ALL: Self = Self {
        limit: u32::MAX,
        bytes: usize::MAX,
    };
}

/// A run's events in seq order, and whether more follow the last (a bound cut the read).
#[derive(Debug, Clone, Default)]
pub struct EventPage {
    pub events: Vec<crate::domain::RunEvent>,
    pub more: bool,
}

/// What one sweep of expired leases did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Runs of lost workers retried.
    pub retried: u64,
    /// Runs of lost workers failed: that was their last attempt.
    pub failed: u64,
    /// Runs past a time limit: failed (deadline, expiry, wait) or resumed (a wait that asked to).
    pub timed_out: u64,
}

/// Which failed runs a bulk retry puts back in the queue.
#[derive(Debug, Clone, Default)]
pub struct RequeueFilter {
    pub agent: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    /// At most this many per call.
    pub limit: u32,
    /// Only this tenant's runs; `None` for all.
    pub tenant: Option<String>,
}

/// A completion webhook claimed for delivery.
#[derive(Debug, Clone)]
pub struct WebhookDelivery {
    pub id: i64,
    pub run_id: RunId,
    pub url: String,
    /// This delivery attempt's number, from 1.
    pub attempt: u32,
    pub created_at: DateTime<Utc>,
}

/// How a delivery attempt went.
#[derive(Debug, Clone)]
pub enum WebhookResult {
    Delivered {
        status: u16,
    },
    /// Failed; tried again at `retry_at`, or given up when `None`.
    Failed {
        error: String,
        retry_at: Option<DateTime<Utc>>,
    },
}

/// Which failed runs to put back in the queue.
pub enum RequeueTarget {
    One(RunId),
    /// Up to `limit` failed runs matching the filter, oldest first.
    Failed(RequeueFilter),
}

/// A signal sent to a run through the API.
#[derive(Debug, Clone)]
pub struct NewSignal {
    pub name: String,
    pub payload: serde_json::Value,
    /// Who sent it (see `RunEvent::actor`).
    pub actor: Option<String>,
    /// The `v1` signature of a signed request: the same one is taken once per run.
    pub signature: Option<String>,
}

/// An API key as `agentq keys list` shows it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyInfo {
    pub id: String,
    pub tenant: String,
    /// Comma-separated scopes.
    pub scopes: String,
    pub name: Option<String>,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// What authenticating a key needs to know of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub tenant: String,
    pub scopes: String,
    /// Hex SHA-256 of the key's secret part.
    pub secret_hash: String,
    pub revoked: bool,
}

/// A place in the order retention deletes finished runs in: finish time, then id.
/// Opaque outside the store: taken from [`Store::retention_bound`](super::Store) and
/// [`Purged::next`], handed back to [`Store::purge_finished`](super::Store).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FinishedKey {
    pub(super) finished_at: i64,
    pub(super) id: String,
}

impl FinishedKey {
    /// Before every run that finished at `ms` or later.
    pub(super) fn at(ms: i64) -> Self {
        Self {
            finished_at: ms,
            id: String::new(),
        }
    }
}

/// What one batch of retention did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Purged {
    /// Runs deleted, with their events and other rows.
    pub deleted: u64,
    /// Where the next batch starts; `None` when no candidate is left in the range. Runs
    /// kept because something still needs them are passed over, not looked at again.
    pub next: Option<FinishedKey>,
}

/// A change of state counted for metrics: a run finished, or an attempt of it is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transition {
    Succeeded,
    /// Failed for good, for this reason.
    Failed(crate::domain::RunErrorKind),
    Cancelled,
    /// A retry was scheduled: the attempt failed retryably, or its worker was lost.
    Retried,
}

/// How many runs of an agent this process's writer moved through a transition since it
/// started (a per-process counter: other processes count their own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitionCount {
    pub agent: String,
    pub transition: Transition,
    pub runs: u64,
}

/// The runs of one agent waiting or running, read from the runs table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentLoad {
    pub agent: String,
    pub running: u64,
    /// Queued or retrying, and due.
    pub ready: u64,
    /// Queued or retrying, due later (a delayed run, a retry waiting out its backoff).
    pub scheduled: u64,
    /// When the longest-ready run became due.
    pub oldest_ready_at: Option<DateTime<Utc>>,
}

/// A snapshot of the queue for gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueLoad {
    /// Agents with runs running or waiting to run, by name.
    pub agents: Vec<AgentLoad>,
    /// Worker processes that heartbeat and have not stopped.
    pub workers_alive: u64,
}

/// The most runs of each named agent running at once over all workers (`--agent-limit`).
pub type AgentLimits = std::sync::Arc<std::collections::BTreeMap<String, u32>>;

/// What firing a schedule's tick did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fired {
    /// Another process fired this tick first (or the schedule was paused or deleted).
    NotDue,
    /// The schedule moved on; the tick's run, or why the run was refused (its concurrency
    /// key is full and its policy is `reject`), when the tick made one.
    Moved(Option<Result<crate::domain::RunId, String>>),
}

/// What storing a batch did.
#[derive(Debug, Clone)]
pub enum BatchInserted {
    /// The runs, stored, in the order given.
    New(Vec<crate::domain::Run>),
    /// The batch's Idempotency-Key names a batch stored by the same request: its runs.
    Existing(Vec<crate::domain::RunId>),
}
