//! Reads: point lookups, filtered listing with cursor paging, and a run's events.

use futures::TryStreamExt;

use crate::domain::{
    IdempotencyKey, QueueStats, Run, RunEvent, RunId, RunStatus, StatusCounts, THROUGHPUT_MINUTES,
    throughput_start,
};
use crate::store::{EventBounds, EventPage, FinishedKey, RunFilter, RunPage, StoreError, to_ms};

use super::rows::{
    DeclaredAgentRow, EventRow, KeyRow, RunRow, ScheduleRow, SchemaChangeRow, WorkerRow,
};
use super::{Engine, sql};

/// Binds a `RunFilter` to the dialect's `run_filter!` parameters (the first six).
macro_rules! bind_filter {
    ($query:expr, $f:expr) => {
        $query
            .bind($f.agent.as_deref())
            .bind($f.created_after.map(to_ms))
            .bind($f.created_before.map(to_ms))
            .bind($f.tenant.as_deref())
            .bind($f.metadata_json())
            .bind($f.search_pattern())
            .bind($f.concurrency_key.as_deref())
    };
}

impl Engine {
    /// Every agent declared by an external worker, by name.
    pub(in crate::store) async fn declared_agents(
        &self,
    ) -> Result<Vec<crate::domain::DeclaredAgent>, StoreError> {
        let rows: Vec<DeclaredAgentRow> = sqlx::query_as(sql::DECLARED_AGENTS)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    pub(in crate::store) async fn paused_agents(
        &self,
    ) -> Result<Vec<crate::domain::AgentPauseState>, StoreError> {
        let rows: Vec<(String, i64, Option<String>)> = sqlx::query_as(sql::PAUSED_AGENTS)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(agent, at, by)| crate::domain::AgentPauseState {
                agent,
                paused: true,
                paused_at: Some(crate::store::from_ms(at)),
                paused_by: by,
            })
            .collect())
    }

    pub(in crate::store) async fn get_schedule(
        &self,
        id: &str,
    ) -> Result<crate::domain::Schedule, StoreError> {
        let row: ScheduleRow = sqlx::query_as(sql::GET_SCHEDULE)
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        row.try_into()
    }

    pub(in crate::store) async fn list_schedules(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<crate::domain::Schedule>, StoreError> {
        let rows: Vec<ScheduleRow> = sqlx::query_as(sql::LIST_SCHEDULES)
            .bind(tenant)
            .bind(tenant.is_none())
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// Up to `limit` schedules whose tick is at or before now, earliest first.
    pub(in crate::store) async fn due_schedules(
        &self,
        limit: u32,
    ) -> Result<Vec<crate::domain::DueSchedule>, StoreError> {
        let rows: Vec<ScheduleRow> = sqlx::query_as(sql::DUE_SCHEDULES)
            .bind(self.clock.now_ms())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        let due = rows
            .into_iter()
            .map(ScheduleRow::due)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(due.into_iter().flatten().collect())
    }

    /// When the next schedule ticks, if any does.
    pub(in crate::store) async fn next_schedule_tick(
        &self,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
        let next: Option<i64> = sqlx::query_scalar(sql::NEXT_SCHEDULE_TICK)
            .fetch_one(&self.pool)
            .await?;
        Ok(next.map(crate::store::from_ms))
    }

    /// The input schemas a declared agent had, oldest first.
    pub(in crate::store) async fn agent_schema_changes(
        &self,
        name: &str,
    ) -> Result<Vec<crate::domain::AgentSchemaChange>, StoreError> {
        let rows: Vec<SchemaChangeRow> = sqlx::query_as(sql::AGENT_SCHEMA_CHANGES)
            .bind(name)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    pub(in crate::store) async fn get_run(&self, id: RunId) -> Result<Run, StoreError> {
        let row: RunRow = sqlx::query_as(sql::GET_RUN)
            .bind(id.to_string())
            .fetch_one(&self.pool)
            .await?;
        row.try_into()
    }

    /// The run an Idempotency-Key names for this same request: the key unexpired and held
    /// with the same body. (The writer frees an expired key when a new run takes it.)
    pub(in crate::store) async fn idempotent_run(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Option<RunId>, StoreError> {
        let row: Option<KeyRow> = sqlx::query_as(sql::FIND_KEY)
            .bind(&key.key)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row)
                if !row.expired(self.clock.now_ms())
                    && row.request_hash.as_deref() == Some(key.fingerprint.as_str()) =>
            {
                Ok(Some(row.run_id()?))
            }
            _ => Ok(None),
        }
    }

    pub(in crate::store) async fn list_runs(&self, f: &RunFilter) -> Result<RunPage, StoreError> {
        let statuses = (!f.statuses.is_empty()).then(|| {
            serde_json::to_string(&f.statuses).expect("statuses serialise to a JSON array")
        });
        let limit = f.limit.max(1);
        // read row by row: a page that reaches its bytes stops reading (a page of 500 runs
        // with megabyte inputs is never in memory whole)
        let mut rows = bind_filter!(sqlx::query_as::<_, RunRow>(sql::LIST_RUNS), f)
            .bind(statuses)
            .bind(f.before.map(|id| id.to_string()))
            .bind(i64::from(limit) + 1)
            .bind(f.bodies.input)
            .bind(f.bodies.result)
            .bind(f.bodies.checkpoint)
            .bind(f.bodies.on_failure)
            .fetch(&self.pool);
        let mut more = false;
        let mut runs = Vec::new();
        let mut bytes = 0usize;
        while let Some(row) = rows.try_next().await? {
            bytes = bytes.saturating_add(row.bodies_len());
            if runs.len() == limit as usize || (bytes > f.page_bytes && !runs.is_empty()) {
                more = true;
                break;
            }
            runs.push(Run::try_from(row)?);
        }
        drop(rows);
        let next_cursor = if more {
            runs.last().map(|r| r.id)
        } else {
            None
        };
        Ok(RunPage { runs, next_cursor })
    }

    /// How many runs match the filter's agent, time range, tenant, metadata and search
    /// (its statuses, cursor and limit aside), by status.
    pub(in crate::store) async fn count_runs(
        &self,
        f: &RunFilter,
    ) -> Result<StatusCounts, StoreError> {
        let rows: Vec<(String, i64)> = bind_filter!(sqlx::query_as(sql::COUNT_RUNS), f)
            .fetch_all(&self.pool)
            .await?;
        let pairs = rows
            .into_iter()
            .map(|(status, n)| {
                let status = status.parse::<RunStatus>().map_err(StoreError::Corrupt)?;
                Ok((status, n.max(0) as u64))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(StatusCounts::from_pairs(pairs))
    }

    /// Each agent's unfinished runs by state at `now` (ms), and its finished runs per
    /// minute of the hour before (the current minute last); the tenant's only, if given.
    pub(in crate::store) async fn queue_stats(
        &self,
        now: i64,
        tenant: Option<&str>,
    ) -> Result<Vec<QueueStats>, StoreError> {
        let mut queues: std::collections::BTreeMap<String, QueueStats> = Default::default();
        let states: Vec<(String, String, i64, Option<i64>)> = sqlx::query_as(sql::QUEUE_STATES)
            .bind(now)
            .bind(tenant)
            .fetch_all(&self.pool)
            .await?;
        for (agent, state, runs, oldest) in states {
            let q = queues
                .entry(agent.clone())
                .or_insert_with(|| QueueStats::new(agent));
            let runs = runs.max(0) as u64;
            match state.as_str() {
                "running" => q.running = runs,
                "retrying" => q.retrying = runs,
                "waiting" => q.waiting = runs,
                "blocked" => q.blocked = runs,
                "scheduled" => q.scheduled = runs,
                _ => {
                    q.queued = runs;
                    q.oldest_queued_at = oldest.map(crate::store::from_ms);
                    q.oldest_queued_age_ms = oldest.map(|at| now.saturating_sub(at).max(0) as u64);
                }
            }
        }
        let start = throughput_start(now);
        let finished: Vec<(String, String, i64, i64)> = sqlx::query_as(sql::THROUGHPUT)
            .bind(start)
            .bind(tenant)
            .fetch_all(&self.pool)
            .await?;
        for (agent, status, index, runs) in finished {
            let Ok(index) = usize::try_from(index) else {
                continue;
            };
            let q = queues
                .entry(agent.clone())
                .or_insert_with(|| QueueStats::new(agent));
            let series = match status.as_str() {
                "succeeded" => &mut q.succeeded_per_minute,
                "failed" => &mut q.failed_per_minute,
                _ => &mut q.cancelled_per_minute,
            };
            // a run finished after `now` (by another process's clock) counts in the last minute
            let index = index.min(THROUGHPUT_MINUTES - 1);
            series[index] += runs.max(0) as u64;
        }
        Ok(queues.into_values().collect())
    }

    pub(in crate::store) async fn count_active_runs(
        &self,
        tenant: &str,
    ) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(sql::COUNT_ACTIVE_RUNS)
            .bind(tenant)
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    pub(in crate::store) async fn list_events(
        &self,
        id: RunId,
        after: i64,
        bounds: EventBounds,
    ) -> Result<EventPage, StoreError> {
        let id = id.to_string();
        let mut tx = self.pool.begin().await?;
        let exists: Option<i64> = sqlx::query_scalar(sql::RUN_EXISTS)
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
        // one more than the limit says whether more follow; read row by row, so a page that
        // reaches its bytes stops decoding there
        let mut more = false;
        let mut events = Vec::new();
        {
            let mut rows = sqlx::query_as::<_, EventRow>(sql::LIST_EVENTS)
                .bind(&id)
                .bind(after)
                .bind(i64::from(bounds.limit).saturating_add(1))
                .fetch(&mut *tx);
            let mut bytes = 0usize;
            while let Some(row) = rows.try_next().await? {
                bytes = bytes.saturating_add(row.data_len());
                if events.len() == bounds.limit as usize
                    || (bytes > bounds.bytes && !events.is_empty())
                {
                    more = true;
                    break;
                }
                events.push(RunEvent::try_from(row)?);
            }
        }
        tx.commit().await?;
        Ok(EventPage { events, more })
    }

    /// Whether any webhook delivery is due: a read, so idle workers need no write lock.
    pub(in crate::store) async fn has_due_webhooks(&self) -> Result<bool, StoreError> {
        let due: bool = sqlx::query_scalar(sql::HAS_DUE_WEBHOOKS)
            .bind(self.clock.now_ms())
            .fetch_one(&self.pool)
            .await?;
        Ok(due)
    }

    /// Workers heard from since `since` (ms); those silent since `gone_before` are gone.
    pub(in crate::store) async fn list_workers(
        &self,
        since: i64,
        gone_before: i64,
    ) -> Result<Vec<crate::domain::WorkerInfo>, StoreError> {
        let rows: Vec<WorkerRow> = sqlx::query_as(sql::LIST_WORKERS)
            .bind(since)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(|r| r.into_info(gone_before)).collect()
    }

    /// Redis delivery: runs marked as sent before `before` (ms), up to `limit`, as
    /// (agent, id, dispatch seq): the messages the reconciler looks for in Redis.
    pub(in crate::store) async fn dispatched_before(
        &self,
        before: i64,
        limit: usize,
        agents: &[String],
    ) -> Result<Vec<(String, crate::domain::RunId, i64)>, StoreError> {
        let agents = serde_json::to_string(agents).expect("agent names serialise");
        let rows: Vec<(String, String, i64)> = sqlx::query_as(sql::DISPATCHED_BEFORE)
            .bind(before)
            .bind(limit as i64)
            .bind(agents)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|(agent, id, seq)| Ok((agent, super::rows::parse_id(&id)?, seq)))
            .collect()
    }

    /// The oldest of the newest `keep` finished runs of `status`: count-based retention
    /// deletes what finished before it. `None` while there are no more than `keep`.
    pub(in crate::store) async fn oldest_kept(
        &self,
        status: RunStatus,
        keep: u64,
    ) -> Result<Option<FinishedKey>, StoreError> {
        let row: Option<(i64, String)> = sqlx::query_as(sql::OLDEST_KEPT)
            .bind(status.as_str())
            .bind(keep.saturating_sub(1).min(i64::MAX as u64) as i64)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(finished_at, id)| FinishedKey { finished_at, id }))
    }

    /// Runs running and waiting to run by agent, and the worker processes alive (heard
    /// from since `alive_since`, not stopped), at `now` (ms).
    pub(in crate::store) async fn queue_load(
        &self,
        now: i64,
        alive_since: i64,
    ) -> Result<crate::store::QueueLoad, StoreError> {
        let rows: Vec<(String, String, i64, Option<i64>)> = sqlx::query_as(sql::RUN_GAUGES)
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        let mut agents: std::collections::BTreeMap<String, crate::store::AgentLoad> =
            Default::default();
        for (agent, state, runs, oldest) in rows {
            let load = agents
                .entry(agent.clone())
                .or_insert_with(|| crate::store::AgentLoad {
                    agent,
                    ..Default::default()
                });
            let runs = runs.max(0) as u64;
            match state.as_str() {
                "running" => load.running = runs,
                "ready" => {
                    load.ready = runs;
                    load.oldest_ready_at = oldest.map(crate::store::from_ms);
                }
                _ => load.scheduled = runs,
            }
        }
        let workers_alive: i64 = sqlx::query_scalar(sql::WORKERS_ALIVE)
            .bind(alive_since)
            .fetch_one(&self.pool)
            .await?;
        Ok(crate::store::QueueLoad {
            agents: agents.into_values().collect(),
            workers_alive: workers_alive.max(0) as u64,
        })
    }
}
