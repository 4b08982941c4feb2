//! A run and what happens to it: the record clients read, the events it appends, its errors.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Backoff, RunStatus, Tenant};

/// A run's id: a UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub Uuid);

impl RunId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for RunId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for RunId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// The registered name of an agent (`echo`, `http`, or an application's own).
pub type AgentName = String;

/// A run as the API accepts it, after validation and with every default applied.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    pub id: RunId,
    pub agent: AgentName,
    pub input: Value,
    pub priority: i32,
    pub max_attempts: u32,
    pub timeout: Duration,
    pub backoff: Backoff,
    /// When the first attempt may start; `None` means now.
    pub run_at: Option<DateTime<Utc>>,
    /// The whole run (every attempt, every wait) must finish by then.
    pub deadline: Option<DateTime<Utc>>,
    /// The run must start by then, or it fails as `expired`.
    pub expires_at: Option<DateTime<Utc>>,
    pub metadata: BTreeMap<String, String>,
    /// The run to create if this one fails for good.
    pub on_failure: Option<Compensation>,
    /// The failed run this one compensates.
    pub compensates: Option<RunId>,
    /// Runs that must succeed before this one may start.
    pub depends_on: Vec<RunId>,
    /// Where to POST the run when it finishes.
    pub callback_url: Option<String>,
    /// The client's Idempotency-Key, if it sent one.
    pub idempotency: Option<IdempotencyKey>,
    /// Whose run it is: only callers of this tenant see it.
    pub tenant: Tenant,
    /// The W3C `traceparent` of the request that created the run, which every attempt's
    /// span continues; `None` when there is no trace to continue.
    pub trace_parent: Option<String>,
    /// Who created it, as an event's `actor` says it (`key:<id>`, `run_token:<run id>`,
    /// `open`); `None` for runs the engine made (compensations).
    pub created_by: Option<String>,
    /// Its concurrency key, limit and policy, when it has a key.
    pub concurrency: Option<super::Concurrency>,
}

/// A secret setting: its value never appears in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// What a waiting run waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WaitingFor {
    /// Any one of these signal names resumes the run.
    pub signals: Vec<String>,
    #[serde(serialize_with = "crate::domain::time::ms")]
    pub until: DateTime<Utc>,
}

/// A signal as an agent receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Signal {
    pub name: String,
    pub payload: Value,
    /// The wait ended without a signal (the run asked to be resumed on timeout).
    pub timed_out: bool,
}

/// What to run when a run fails for good: `agent` gets
/// `{"input": input, "failed_run": {"id", "agent", "input", "error"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Compensation {
    pub agent: AgentName,
    #[serde(default)]
    pub input: Value,
}

/// An Idempotency-Key with the fingerprint of the request that used it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: String,
    /// Identifies the request body: a retry must send the same one.
    pub fingerprint: String,
    /// After this the key may name a new run.
    pub expires_at: DateTime<Utc>,
}

/// What inserting a run did.
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    /// A new run.
    New(Box<Run>),
    /// The Idempotency-Key already names this run, created by the same request.
    Existing(RunId),
}

/// The last progress an agent reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Progress {
    /// 0 to 100.
    pub percent: u8,
    pub message: Option<String>,
}

/// Why an attempt or a run failed. Kinds are stable snake_case strings.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RunErrorKind {
    /// The agent returned an error.
    AgentError,
    /// The attempt ran past its `timeout_ms`.
    Timeout,
    /// The worker running the attempt stopped heartbeating (killed, machine gone).
    LostWorker,
    /// The agent panicked.
    Panicked,
    /// The run was cancelled.
    Cancelled,
    /// The run did not finish before its `deadline`.
    DeadlineExceeded,
    /// The run did not start before its `expires_at`.
    Expired,
    /// A run it depends on failed.
    DependencyFailed,
    /// The signal it waited for did not arrive in time.
    WaitTimeout,
}

impl RunErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AgentError => "agent_error",
            Self::Timeout => "timeout",
            Self::LostWorker => "lost_worker",
            Self::Panicked => "panicked",
            Self::Cancelled => "cancelled",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::Expired => "expired",
            Self::DependencyFailed => "dependency_failed",
            Self::WaitTimeout => "wait_timeout",
        }
    }
}

/// An error recorded on a run or an attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunError {
    pub kind: RunErrorKind,
    pub message: String,
}

/// The whole record of a run, as stored and as `GET /v1/runs/{id}` returns it. A caller
/// that may change runs but not read them (a key with `runs:write` and not `runs:read`)
/// gets it without what the run holds: `input` is null, and `result`, `checkpoint`,
/// `progress`, `error`, `on_failure`, `callback_url` and `concurrency_key` are null,
/// `metadata` empty.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Run {
    #[schema(value_type = String, format = Uuid)]
    pub id: RunId,
    /// The tenant the run belongs to (`default` without API keys).
    pub tenant: String,
    /// Who created it: `key:<key id>`, `run_token:<run id>` or `open`; absent for a run
    /// the engine made (a compensation run).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "key:k3fz81")]
    pub created_by: Option<String>,
    pub agent: AgentName,
    pub status: RunStatus,
    /// The input it was created with (null in a list unless `include` names it).
    pub input: Value,
    /// Higher runs first among runs that are due.
    pub priority: i32,
    pub metadata: BTreeMap<String, String>,
    pub progress: Option<Progress>,
    /// The number of the current (or last) attempt; 0 before the first starts.
    pub attempt: u32,
    pub max_attempts: u32,
    /// What it returned, once it succeeded (null in a list unless `include` names it).
    pub result: Option<Value>,
    pub error: Option<RunError>,
    /// The state the agent last saved with `ctx.checkpoint`; the next attempt starts from it
    /// (null in a list unless `include` names it).
    pub checkpoint: Option<Value>,
    /// The whole run must finish by then.
    #[serde(serialize_with = "crate::domain::time::ms_opt")]
    pub deadline: Option<DateTime<Utc>>,
    /// The run must start by then.
    #[serde(serialize_with = "crate::domain::time::ms_opt")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The run to create if this one fails for good (null in a list unless `include`
    /// names it).
    pub on_failure: Option<Compensation>,
    /// The compensation run created when this one failed.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub compensation_run_id: Option<RunId>,
    /// The failed run this one compensates.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub compensates_run_id: Option<RunId>,
    /// Runs that must succeed before this one may start.
    #[schema(value_type = Vec<String>)]
    pub depends_on: Vec<RunId>,
    /// While `waiting`: the signals that resume the run, and when the wait ends.
    pub waiting_for: Option<WaitingFor>,
    /// Its concurrency key (see `POST /v1/runs`): at most `concurrency_limit` runs of the
    /// key (same tenant and agent) hold it at once.
    pub concurrency_key: Option<String>,
    pub concurrency_limit: Option<u32>,
    /// `blocked` until a run holding its key finishes (its key is full).
    pub waiting_for_key: bool,
    /// Where the run is POSTed when it finishes (a completion webhook).
    pub callback_url: Option<String>,
    /// Per-attempt time limit.
    pub timeout_ms: u64,
    pub backoff_base_ms: u64,
    pub backoff_cap_ms: u64,
    /// When the run is (or was) due to start: its `run_at`, or the next attempt's due time.
    #[serde(serialize_with = "crate::domain::time::ms")]
    pub run_at: DateTime<Utc>,
    /// While `retrying`: when the next attempt is due.
    #[serde(serialize_with = "crate::domain::time::ms_opt")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The worker process holding the run while it is `running`.
    pub worker_id: Option<String>,
    /// While `running`: when its worker loses it unless the worker renews its lease (one
    /// lease per worker covers all its runs, from its first renewal after the claim).
    #[serde(serialize_with = "crate::domain::time::ms_opt")]
    pub lease_until: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::domain::time::ms")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::domain::time::ms_opt")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::domain::time::ms_opt")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::domain::time::ms")]
    pub updated_at: DateTime<Utc>,
}

impl Run {
    /// The run without what it holds (input, result, checkpoint, progress, error,
    /// metadata, compensation, callback URL and concurrency key), for a caller that may
    /// change runs but not read them.
    pub fn without_content(self) -> Self {
        Self {
            input: Value::Null,
            metadata: BTreeMap::new(),
            progress: None,
            result: None,
            error: None,
            checkpoint: None,
            on_failure: None,
            callback_url: None,
            concurrency_key: None,
            ..self
        }
    }
}

/// What an event records. Stored as its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Created,
    Started,
    Progress,
    Log,
    RetryScheduled,
    Succeeded,
    Failed,
    /// A worker shutting down handed the run back without using up the attempt.
    Released,
    /// The attempt's worker stopped heartbeating; the sweeper took the run back.
    AttemptLost,
    /// The agent saved a checkpoint (the state is on the run).
    Checkpoint,
    /// The run failed for good and its compensation run was created.
    CompensationCreated,
    /// Every run it depends on succeeded: the run is queued.
    Unblocked,
    /// The agent suspended the run until a signal arrives.
    Waiting,
    /// A signal was sent to the run.
    SignalReceived,
    /// A waiting run is queued again: its signal arrived, or its wait timed out.
    Resumed,
    /// The completion webhook was delivered.
    WebhookDelivered,
    /// A completion webhook delivery failed (and will be tried again unless given up).
    WebhookFailed,
    /// Cancelled by request.
    Cancelled,
    /// A failed run was put back in the queue by request, its attempts reset.
    Requeued,
    /// A run that had not started had its priority or run_at changed by request.
    Changed,
    /// A part of the run's output stream (its data is the part).
    Stream,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Started => "started",
            Self::Progress => "progress",
            Self::Log => "log",
            Self::RetryScheduled => "retry_scheduled",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Released => "released",
            Self::AttemptLost => "attempt_lost",
            Self::Checkpoint => "checkpoint",
            Self::CompensationCreated => "compensation_created",
            Self::Unblocked => "unblocked",
            Self::Waiting => "waiting",
            Self::SignalReceived => "signal_received",
            Self::Resumed => "resumed",
            Self::WebhookDelivered => "webhook_delivered",
            Self::WebhookFailed => "webhook_failed",
            Self::Cancelled => "cancelled",
            Self::Requeued => "requeued",
            Self::Changed => "changed",
            Self::Stream => "stream",
        }
    }
}

/// One entry of a run's ordered event log.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RunEvent {
    /// Position in the run's log, from 1, without gaps.
    pub seq: i64,
    #[serde(serialize_with = "crate::domain::time::ms")]
    pub at: DateTime<Utc>,
    #[serde(rename = "type")]
    #[schema(value_type = EventKind, example = "started")]
    pub kind: String,
    /// The attempt the event belongs to (0 before the first).
    pub attempt: u32,
    pub data: Value,
    /// Who made the event, when an API call made it (created, cancelled, requeued, signal
    /// received): `key:<key id>`, `run_token:<run id>` (a run's own token) or `open` (a
    /// server without keys). Absent on events the engine or an attempt made.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "key:k3fz81")]
    pub actor: Option<String>,
}
