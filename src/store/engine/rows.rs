//! Mapping between SQLite rows and domain values.

use std::collections::BTreeMap;

use sqlx::FromRow;

use crate::domain::{
    Progress, Run, RunError, RunErrorKind, RunEvent, RunId, RunStatus, WaitingFor, WorkerInfo,
    WorkerState,
};
use crate::store::{StoreError, from_ms};

/// The run holding an Idempotency-Key (`FIND_KEY`).
#[derive(FromRow)]
pub(super) struct KeyRow {
    id: String,
    /// The fingerprint of the request that took the key.
    pub(super) request_hash: Option<String>,
    idempotency_expires_at: Option<i64>,
}

impl KeyRow {
    /// Past its expiry at `now` (ms), the key names no run and may be taken again.
    pub(super) fn expired(&self, now: i64) -> bool {
        self.idempotency_expires_at.is_some_and(|t| t <= now)
    }

    pub(super) fn run_id(&self) -> Result<RunId, StoreError> {
        parse_id(&self.id)
    }
}

#[derive(FromRow)]
pub(super) struct RunRow {
    id: String,
    agent: String,
    status: String,
    /// Null where a list leaves it out.
    input: Option<String>,
    priority: i64,
    metadata: String,
    progress_percent: Option<i64>,
    progress_message: Option<String>,
    attempt: i64,
    max_attempts: i64,
    result: Option<String>,
    checkpoint: Option<String>,
    error_kind: Option<String>,
    error_message: Option<String>,
    timeout_ms: i64,
    backoff_base_ms: i64,
    backoff_cap_ms: i64,
    run_at: i64,
    deadline: Option<i64>,
    expires_at: Option<i64>,
    on_failure: Option<String>,
    compensation_run_id: Option<String>,
    compensates_run_id: Option<String>,
    depends_on: Option<String>,
    waiting_for: Option<String>,
    wait_until: Option<i64>,
    callback_url: Option<String>,
    worker_id: Option<String>,
    lease_until: Option<i64>,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    updated_at: i64,
    tenant: String,
    created_by: Option<String>,
    concurrency_key: Option<String>,
    concurrency_limit: Option<i64>,
    key_waiting: i64,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

pub(super) fn parse_id(id: &str) -> Result<RunId, StoreError> {
    id.parse().map_err(|e| corrupt("run id", e))
}

fn parse_error_kind(kind: &str) -> Result<RunErrorKind, StoreError> {
    serde_json::from_value(serde_json::Value::String(kind.to_owned()))
        .map_err(|e| corrupt("error kind", e))
}

impl TryFrom<RunRow> for Run {
    type Error = StoreError;

    fn try_from(r: RunRow) -> Result<Self, Self::Error> {
        let status: RunStatus = r.status.parse().map_err(|e| corrupt("status", e))?;
        let error = match (r.error_kind, r.error_message) {
            (Some(kind), message) => Some(RunError {
                kind: parse_error_kind(&kind)?,
                message: message.unwrap_or_default(),
            }),
            (None, _) => None,
        };
        let metadata: BTreeMap<String, String> = serde_json::from_str(&r.metadata)?;
        Ok(Run {
            id: parse_id(&r.id)?,
            tenant: r.tenant,
            created_by: r.created_by,
            agent: r.agent,
            status,
            input: r
                .input
                .as_deref()
                .map_or(Ok(serde_json::Value::Null), serde_json::from_str)?,
            priority: r.priority as i32,
            metadata,
            progress: r.progress_percent.map(|p| Progress {
                percent: p.clamp(0, 100) as u8,
                message: r.progress_message,
            }),
            attempt: r.attempt as u32,
            max_attempts: r.max_attempts as u32,
            result: r.result.as_deref().map(serde_json::from_str).transpose()?,
            checkpoint: r
                .checkpoint
                .as_deref()
                .map(serde_json::from_str)
                .transpose()?,
            error,
            timeout_ms: r.timeout_ms as u64,
            backoff_base_ms: r.backoff_base_ms as u64,
            backoff_cap_ms: r.backoff_cap_ms as u64,
            run_at: from_ms(r.run_at),
            deadline: r.deadline.map(from_ms),
            expires_at: r.expires_at.map(from_ms),
            on_failure: r
                .on_failure
                .as_deref()
                .map(serde_json::from_str)
                .transpose()?,
            compensation_run_id: r.compensation_run_id.as_deref().map(parse_id).transpose()?,
            compensates_run_id: r.compensates_run_id.as_deref().map(parse_id).transpose()?,
            callback_url: r.callback_url,
            concurrency_key: r.concurrency_key,
            concurrency_limit: r.concurrency_limit.map(|n| n as u32),
            // a run cancelled or failed while it waited keeps the mark, not the wait
            waiting_for_key: r.key_waiting != 0 && status == RunStatus::Blocked,
            waiting_for: match (status, r.waiting_for.as_deref(), r.wait_until) {
                (RunStatus::Waiting, Some(names), Some(until)) => Some(WaitingFor {
                    signals: serde_json::from_str(names)?,
                    until: from_ms(until),
                }),
                _ => None,
            },
            depends_on: match r.depends_on.as_deref() {
                Some(ids) => serde_json::from_str::<Vec<String>>(ids)?
                    .iter()
                    .map(|id| parse_id(id))
                    .collect::<Result<_, _>>()?,
                None => Vec::new(),
            },
            next_attempt_at: (status == RunStatus::Retrying).then(|| from_ms(r.run_at)),
            worker_id: r.worker_id,
            lease_until: r.lease_until.map(from_ms),
            created_at: from_ms(r.created_at),
            started_at: r.started_at.map(from_ms),
            finished_at: r.finished_at.map(from_ms),
            updated_at: from_ms(r.updated_at),
        })
    }
}

#[derive(FromRow)]
pub(super) struct EventRow {
    seq: i64,
    at: i64,
    #[sqlx(rename = "type")]
    kind: String,
    attempt: i64,
    data: String,
    actor: Option<String>,
}

impl RunRow {
    /// The bytes of what may be large: its bodies and metadata, as stored.
    pub(super) fn bodies_len(&self) -> usize {
        [
            &self.input,
            &self.result,
            &self.checkpoint,
            &self.on_failure,
        ]
        .iter()
        .map(|b| b.as_ref().map_or(0, String::len))
        .sum::<usize>()
            + self.metadata.len()
    }
}

impl EventRow {
    /// The bytes of its `data` as stored.
    pub(super) fn data_len(&self) -> usize {
        self.data.len()
    }
}

impl TryFrom<EventRow> for RunEvent {
    type Error = StoreError;

    fn try_from(r: EventRow) -> Result<Self, Self::Error> {
        Ok(RunEvent {
            seq: r.seq,
            at: from_ms(r.at),
            kind: r.kind,
            attempt: r.attempt as u32,
            data: serde_json::from_str(&r.data)?,
            actor: r.actor,
        })
    }
}

#[derive(FromRow)]
pub(super) struct WorkerRow {
    id: String,
    host: String,
    pid: i64,
    version: String,
    agents: String,
    concurrency: i64,
    started_at: i64,
    heartbeat_at: i64,
    running: i64,
    processed: i64,
    restarts: i64,
    last_error: Option<String>,
    stopped_at: Option<i64>,
    language: String,
    last_restart_at: Option<i64>,
}

impl WorkerRow {
    /// The registry entry; a worker not heard from since `gone_before` (ms) is gone.
    pub(super) fn into_info(self, gone_before: i64) -> Result<WorkerInfo, StoreError> {
        let state = if self.stopped_at.is_some() {
            WorkerState::Stopped
        } else if self.heartbeat_at < gone_before {
            WorkerState::Gone
        } else {
            WorkerState::Alive
        };
        Ok(WorkerInfo {
            id: self.id,
            state,
            host: self.host,
            pid: self.pid as u32,
            version: self.version,
            agents: serde_json::from_str(&self.agents)?,
            concurrency: self.concurrency as u32,
            started_at: from_ms(self.started_at),
            last_heartbeat_at: from_ms(self.heartbeat_at),
            // what a worker no longer heard from last reported running is not running now
            running: if state == WorkerState::Alive {
                self.running as u64
            } else {
                0
            },
            processed: self.processed as u64,
            restarts: self.restarts as u32,
            last_restart_at: self.last_restart_at.map(from_ms),
            last_error: self.last_error,
            language: self.language,
        })
    }
}

/// A declared agent (`DECLARED_AGENTS`).
#[derive(FromRow)]
pub(super) struct DeclaredAgentRow {
    name: String,
    description: String,
    input_schema: String,
    timeout_ms: Option<i64>,
    max_attempts: Option<i64>,
    backoff_base_ms: Option<i64>,
    backoff_cap_ms: Option<i64>,
    version: i64,
    declared_by: String,
    declared_at: i64,
    created_at: i64,
}

impl TryFrom<DeclaredAgentRow> for crate::domain::DeclaredAgent {
    type Error = StoreError;

    fn try_from(r: DeclaredAgentRow) -> Result<Self, StoreError> {
        Ok(Self {
            name: r.name,
            description: r.description,
            input_schema: serde_json::from_str(&r.input_schema)?,
            defaults: crate::domain::AgentDefaults {
                timeout_ms: r.timeout_ms.map(|v| v as u64),
                max_attempts: r.max_attempts.map(|v| v as u32),
                backoff_base_ms: r.backoff_base_ms.map(|v| v as u64),
                backoff_cap_ms: r.backoff_cap_ms.map(|v| v as u64),
            },
            version: r.version as u32,
            declared_by: r.declared_by,
            declared_at: from_ms(r.declared_at),
            created_at: from_ms(r.created_at),
        })
    }
}

/// One schema an agent had (`AGENT_SCHEMA_CHANGES`).
#[derive(FromRow)]
pub(super) struct SchemaChangeRow {
    version: i64,
    declared_by: String,
    key_id: Option<String>,
    declared_at: i64,
    input_schema: String,
}

impl TryFrom<SchemaChangeRow> for crate::domain::AgentSchemaChange {
    type Error = StoreError;

    fn try_from(r: SchemaChangeRow) -> Result<Self, StoreError> {
        Ok(Self {
            version: r.version as u32,
            declared_by: r.declared_by,
            key_id: r.key_id,
            declared_at: from_ms(r.declared_at),
            input_schema: serde_json::from_str(&r.input_schema)?,
        })
    }
}

/// A schedule as stored (`schedule_columns!`).
#[derive(FromRow)]
pub(super) struct ScheduleRow {
    id: String,
    tenant: String,
    name: Option<String>,
    agent: String,
    cron: Option<String>,
    timezone: Option<String>,
    interval_ms: Option<i64>,
    catch_up: String,
    template: String,
    next_tick_at: Option<i64>,
    paused_at: Option<i64>,
    last_tick_at: Option<i64>,
    last_run_id: Option<String>,
    missed_ticks: i64,
    created_at: i64,
    created_by: Option<String>,
}

impl ScheduleRow {
    fn catch_up(&self) -> Result<crate::domain::CatchUp, StoreError> {
        self.catch_up.parse().map_err(|e| corrupt("catch_up", e))
    }

    fn template(&self) -> Result<crate::domain::RunTemplate, StoreError> {
        serde_json::from_str(&self.template).map_err(|e| corrupt("schedule template", e))
    }

    /// The schedule as a ticking process needs it; `None` when it has no next tick.
    pub(super) fn due(self) -> Result<Option<crate::domain::DueSchedule>, StoreError> {
        let Some(next) = self.next_tick_at else {
            return Ok(None);
        };
        Ok(Some(crate::domain::DueSchedule {
            catch_up: self.catch_up()?,
            template: self.template().map_err(|e| e.to_string()),
            next_tick_at: from_ms(next),
            interval_ms: self.interval_ms.map(|ms| ms as u64),
            id: self.id,
            tenant: self.tenant,
            cron: self.cron,
            timezone: self.timezone,
            created_by: self.created_by,
        }))
    }
}

impl TryFrom<ScheduleRow> for crate::domain::Schedule {
    type Error = StoreError;

    fn try_from(r: ScheduleRow) -> Result<Self, StoreError> {
        Ok(Self {
            catch_up: r.catch_up()?,
            run: serde_json::to_value(r.template()?)?,
            id: r.id,
            name: r.name,
            tenant: r.tenant,
            agent: r.agent,
            cron: r.cron,
            timezone: r.timezone,
            interval_ms: r.interval_ms.map(|ms| ms as u64),
            next_tick_at: r.next_tick_at.map(from_ms),
            paused: r.paused_at.is_some(),
            paused_at: r.paused_at.map(from_ms),
            last_tick_at: r.last_tick_at.map(from_ms),
            last_run_id: r.last_run_id,
            missed_ticks: r.missed_ticks.max(0) as u64,
            created_at: from_ms(r.created_at),
            created_by: r.created_by,
        })
    }
}
