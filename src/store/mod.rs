//! All SQL for runs and their events, behind one `Store` handle.
//!
//! Writes go through a single writer task that group-commits whatever is waiting (see
//! `sqlite::writer`); reads use a pool. Every write of an attempt is fenced by
//! [`Fence`]: a worker that lost its run cannot overwrite it. A call returns only after
//! its write is committed, so nothing is acknowledged before it is stored.

mod error;
mod hub;
mod model;
mod postgres;
mod sqlite;
mod tally;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::{
    Inserted, NewRun, Progress, QueueStats, Run, RunEvent, RunId, RunStatus, StatusCounts,
    WorkerBeat, WorkerInfo,
};

pub use error::StoreError;
pub use model::{
    AgentLimits, AgentLoad, ApiKeyInfo, ClaimedRun, Fence, FinishedKey, KeyRecord, Outcome, Purged,
    QueueLoad, RequeueFilter, RequeueTarget, RunFilter, RunPage, Sweep, Transition,
    TransitionCount, WebhookDelivery, WebhookResult,
};
pub use postgres::check_url as check_postgres_url;

/// Settings that shape the store's connection, chosen at start-up.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Connections in the read pool.
    pub read_connections: u32,
    /// SQLite `synchronous`: `normal` survives a crashed process; `full` also a lost machine.
    pub sqlite_synchronous_full: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            read_connections: 4,
            sqlite_synchronous_full: false,
        }
    }
}

/// A cheap, cloneable handle to the runs table.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Engine>,
}

/// The engine compiled for each dialect (see `engine/mod.rs`).
enum Engine {
    Sqlite(sqlite::engine::Engine),
    Postgres(postgres::engine::Engine),
}

/// Runs `$body` with `$e` bound to whichever dialect's engine the store uses.
macro_rules! on_engine {
    ($store:expr, $e:ident => $body:expr) => {
        match &*$store.inner {
            Engine::Sqlite($e) => $body,
            Engine::Postgres($e) => $body,
        }
    };
}

/// Sends a write to whichever dialect's writer the store uses and awaits its reply.
/// `$command` is built from the types of `engine::writer::cmd`, which each dialect
/// compiles for itself, so the same words name each dialect's own command.
macro_rules! command {
    ($store:expr, $command:expr) => {
        match &*$store.inner {
            Engine::Sqlite(e) => {
                #[allow(unused_imports)]
                use sqlite::engine::writer::cmd::*;
                e.writer.call($command).await
            }
            Engine::Postgres(e) => {
                #[allow(unused_imports)]
                use postgres::engine::writer::cmd::*;
                e.writer.call($command).await
            }
        }
    };
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Connects to `url` (`sqlite://path`, creating the file if needed, or
    /// `postgres://…`). Does not migrate.
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let engine = if url.starts_with("sqlite:") {
            Engine::Sqlite(sqlite::connect(url, options).await?)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Engine::Postgres(postgres::connect(url, options).await?)
        } else {
            return Err(StoreError::Unsupported(format!(
                "database URL must start with sqlite:// or postgres:// (got `{}`)",
                url.split(':').next().unwrap_or_default()
            )));
        };
        Ok(Self {
            inner: Arc::new(engine),
        })
    }

    /// Which database the store uses: `sqlite` or `postgres`.
    pub fn dialect(&self) -> &'static str {
        match &*self.inner {
            Engine::Sqlite(_) => "sqlite",
            Engine::Postgres(_) => "postgres",
        }
    }

    /// Prepares the database for Redis delivery: creates the indexes only it reads, which
    /// the table-claiming default would otherwise keep up for nothing. Idempotent; on a
    /// large table the first call takes as long as building them.
    pub async fn enable_redis_delivery(&self) -> Result<(), StoreError> {
        on_engine!(self, e => e.enable_redis_delivery().await)
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        on_engine!(self, e => e.migrate().await)
    }

    /// Inserts a new run (status `queued`) with its `created` event; or, when its
    /// Idempotency-Key already names a run created by the same request, returns that run's
    /// id (`Conflict` if the key was used with a different request).
    pub async fn insert_run(&self, run: NewRun) -> Result<Inserted, StoreError> {
        command!(self, RunInsert(run))?
    }

    /// Claims up to `limit` due runs of `agents` (all agents when `None`) for `worker_id`.
    /// With `wait`, an empty claim is held until runs become claimable or `wait` passes.
    /// With `agent_limits` (and `agents` named), no agent ends up with more runs running
    /// over all workers than its limit.
    pub async fn claim(
        &self,
        worker_id: Arc<str>,
        agents: Option<Arc<[String]>>,
        limit: usize,
        lease: Duration,
        wait: Option<Duration>,
        agent_limits: Option<AgentLimits>,
    ) -> Result<Vec<ClaimedRun>, StoreError> {
        let wait_until = wait.map(|w| to_ms(Utc::now()) + w.as_millis() as i64);
        let agent_limits = agent_limits.filter(|l| !l.is_empty());
        command!(
            self,
            RunClaim {
                worker_id,
                agents,
                limit,
                lease,
                wait_until,
                agent_limits,
            }
        )
    }

    /// Redis delivery: marks up to `window` minus the already sent ready runs of `agent`
    /// as sent, in claim order (priority, then due time), each with a new dispatch seq.
    /// With `cap` (the agent's `--agent-limit`), runs sent plus runs running stay within
    /// it. Returns (id, seq) in that order; the caller pushes one message per run.
    pub async fn dispatch(
        &self,
        agent: String,
        window: usize,
        cap: Option<u32>,
    ) -> Result<Vec<(RunId, i64)>, StoreError> {
        command!(self, RunDispatch { agent, window, cap })
    }

    /// Redis delivery: claims the runs of these messages (id, dispatch seq) for
    /// `worker_id`, as `claim` does; a message that is stale (superseded, its run claimed,
    /// cancelled or otherwise changed) claims nothing.
    pub async fn claim_dispatched(
        &self,
        worker_id: Arc<str>,
        messages: Vec<(RunId, i64)>,
        lease: Duration,
    ) -> Result<Vec<ClaimedRun>, StoreError> {
        command!(
            self,
            RunClaimDispatched {
                worker_id,
                messages,
                lease
            }
        )
    }

    /// Redis delivery: runs of `agents` marked as sent more than `older_than` ago, oldest
    /// first, up to `limit`, as (agent, id, dispatch seq).
    pub async fn dispatched_before(
        &self,
        older_than: Duration,
        limit: usize,
        agents: &[String],
    ) -> Result<Vec<(String, RunId, i64)>, StoreError> {
        let before = to_ms(Utc::now()) - older_than.as_millis() as i64;
        on_engine!(self, e => e.dispatched_before(before, limit, agents).await)
    }

    /// Redis delivery: these messages are lost (Redis restarted or was flushed); their runs
    /// are sent again by the next top-up. A message no longer current changes nothing.
    pub async fn undispatch(&self, messages: Vec<(RunId, i64)>) -> Result<u64, StoreError> {
        command!(self, RunUndispatch(messages))
    }

    /// Waits until a commit of this process makes runs ready (other processes' inserts are
    /// not seen: poll as well).
    pub async fn runs_ready(&self) {
        on_engine!(self, e => e.hub.ready().await)
    }

    /// Records an attempt's outcome. Returns `false` when the fence no longer holds.
    pub async fn finish(&self, fence: Fence, outcome: Outcome) -> Result<bool, StoreError> {
        command!(self, AttemptFinish { fence, outcome })
    }

    /// Records progress; writes of one batch are coalesced, the last one always lands.
    pub async fn progress(&self, fence: Fence, progress: Progress) -> Result<bool, StoreError> {
        command!(self, AttemptProgress { fence, progress })
    }

    /// Appends a `log` event to a running attempt.
    pub async fn log(
        &self,
        fence: Fence,
        level: &str,
        message: String,
    ) -> Result<bool, StoreError> {
        let level = level.to_owned();
        command!(
            self,
            AttemptLog {
                fence,
                level,
                message
            }
        )
    }

    /// Saves an attempt's checkpoint: the next attempt starts from it. Fenced like every
    /// write of an attempt; `false` when the attempt no longer owns its run.
    pub async fn checkpoint(
        &self,
        fence: Fence,
        state: serde_json::Value,
    ) -> Result<bool, StoreError> {
        command!(self, AttemptCheckpoint { fence, state })
    }

    /// Consumes the oldest pending signal among `names` for a running attempt.
    pub async fn take_signal(
        &self,
        fence: Fence,
        names: Vec<String>,
    ) -> Result<Option<crate::domain::Signal>, StoreError> {
        command!(self, AttemptTakeSignal { fence, names })
    }

    /// Sends a signal to a run: kept until a wait consumes it, and resuming the run if it
    /// waits for it (returns whether it did). `Conflict` if the run has finished.
    pub async fn signal(
        &self,
        id: RunId,
        name: String,
        payload: serde_json::Value,
    ) -> Result<bool, StoreError> {
        command!(self, RunSignal { id, name, payload })?
    }

    /// Whether any webhook delivery is due (a read).
    pub async fn has_due_webhooks(&self) -> Result<bool, StoreError> {
        on_engine!(self, e => e.has_due_webhooks().await)
    }

    /// Claims up to `limit` due webhook deliveries for `lease`.
    pub async fn claim_webhooks(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        command!(self, WebhookClaim { limit, lease })
    }

    /// Records a delivery attempt's result (and an event on the run).
    pub async fn webhook_done(
        &self,
        delivery: WebhookDelivery,
        result: WebhookResult,
    ) -> Result<(), StoreError> {
        command!(self, WebhookDone { delivery, result })
    }

    /// Extends the leases of the attempts a worker is executing. Returns those it still
    /// holds; an attempt missing from the answer has lost its run (swept or handed back).
    pub async fn renew_leases(
        &self,
        fences: Vec<Fence>,
        lease: Duration,
    ) -> Result<Vec<Fence>, StoreError> {
        command!(self, AttemptRenew { fences, lease })
    }

    /// Hands these attempts' runs back to the queue without using up the attempt.
    pub async fn hand_back(&self, fences: Vec<Fence>) -> Result<u64, StoreError> {
        command!(self, AttemptHandBack(fences))
    }

    /// Takes back runs whose lease expired: retried, or failed when out of attempts.
    pub async fn sweep_expired(&self) -> Result<Sweep, StoreError> {
        command!(self, RunSweep)
    }

    /// Hands every run `worker_id` holds back to the queue without using up its attempt
    /// (graceful shutdown). Returns how many it handed back.
    pub async fn release_worker(&self, worker_id: Arc<str>) -> Result<u64, StoreError> {
        command!(self, WorkerRelease(worker_id))
    }

    /// Cancels a run that has not finished. A running attempt is fenced out at once and its
    /// worker stops it at its next lease renewal. `Conflict` if the run already finished.
    pub async fn cancel_run(&self, id: RunId) -> Result<Run, StoreError> {
        command!(self, RunCancel(id))??;
        self.get_run(id).await
    }

    /// Puts a failed run back in the queue, its attempts reset and its history kept.
    /// `Conflict` if the run is not failed.
    pub async fn requeue_run(&self, id: RunId) -> Result<Run, StoreError> {
        command!(self, RunRequeue(RequeueTarget::One(id)))??;
        self.get_run(id).await
    }

    /// Puts every failed run matching `filter` back in the queue, in chunks of
    /// `filter.limit` so no single transaction holds the writer for long. Returns how many.
    pub async fn requeue_failed(&self, filter: RequeueFilter) -> Result<u64, StoreError> {
        let chunk = u64::from(filter.limit.max(1));
        let mut total = 0;
        loop {
            let target = RequeueTarget::Failed(RequeueFilter {
                limit: chunk as u32,
                ..filter.clone()
            });
            let n = command!(self, RunRequeue(target))??;
            total += n;
            if n < chunk {
                return Ok(total);
            }
        }
    }

    /// Where retention of finished runs of `status` ends: runs that finished more than
    /// `older_than` ago, and those beyond the newest `keep`, come before the key returned
    /// (the later of the two). `None` when neither applies. `keep` reads the index of
    /// finished runs (`runs_finished`) up to that many entries.
    pub async fn retention_bound(
        &self,
        status: RunStatus,
        older_than: Option<Duration>,
        keep: Option<u64>,
    ) -> Result<Option<FinishedKey>, StoreError> {
        let by_age =
            older_than.map(|age| FinishedKey::at(to_ms(Utc::now()) - age.as_millis() as i64));
        let by_count = match keep {
            Some(keep) => on_engine!(self, e => e.oldest_kept(status, keep).await)?,
            None => None,
        };
        Ok(by_age.max(by_count))
    }

    /// Deletes up to `limit` finished runs of `status` that come after `after` (from the
    /// oldest when `None`) and before `before`, oldest first, with their events, signals,
    /// dependencies and webhook deliveries; runs something still needs are passed over
    /// (see the writer's `cmd/run_purge.rs`). One transaction of the writer.
    pub async fn purge_finished(
        &self,
        status: RunStatus,
        after: Option<FinishedKey>,
        before: FinishedKey,
        limit: usize,
    ) -> Result<Purged, StoreError> {
        let after = after.unwrap_or(FinishedKey::at(i64::MIN));
        command!(
            self,
            RunPurge {
                status,
                after,
                before,
                limit
            }
        )
    }

    pub async fn get_run(&self, id: RunId) -> Result<Run, StoreError> {
        on_engine!(self, e => e.get_run(id).await)
    }

    /// The run an Idempotency-Key names for this same request (unexpired, same body), if any.
    pub async fn idempotent_run(
        &self,
        key: &crate::domain::IdempotencyKey,
    ) -> Result<Option<RunId>, StoreError> {
        on_engine!(self, e => e.idempotent_run(key).await)
    }

    pub async fn list_runs(&self, filter: &RunFilter) -> Result<RunPage, StoreError> {
        on_engine!(self, e => e.list_runs(filter).await)
    }

    /// How many runs match the filter (its statuses, cursor and limit aside), by status.
    pub async fn count_runs(&self, filter: &RunFilter) -> Result<StatusCounts, StoreError> {
        on_engine!(self, e => e.count_runs(filter).await)
    }

    /// Every agent with runs unfinished, or finished in the hour before `now`: its runs by
    /// state and its finished runs per minute of that hour (from `throughput_start(now)`).
    /// Only `tenant`'s runs, if given.
    pub async fn queue_stats(
        &self,
        tenant: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Vec<QueueStats>, StoreError> {
        let now = to_ms(now);
        on_engine!(self, e => e.queue_stats(now, tenant).await)
    }

    /// How many of the tenant's runs have not finished.
    pub async fn count_active_runs(&self, tenant: &str) -> Result<u64, StoreError> {
        on_engine!(self, e => e.count_active_runs(tenant).await)
    }

    /// The run's events with `seq > after`, oldest first; `NotFound` if the run does not exist.
    pub async fn list_events(&self, id: RunId, after: i64) -> Result<Vec<RunEvent>, StoreError> {
        on_engine!(self, e => e.list_events(id, after).await)
    }

    /// Watches the newest committed event seq of a run, for live streams. Changes made by
    /// this process are seen at once; other processes' only by reading again.
    pub fn follow_events(&self, id: RunId) -> tokio::sync::watch::Receiver<i64> {
        on_engine!(self, e => e.hub.follow(id.to_string()))
    }

    /// Registers a worker process or records its heartbeat.
    pub async fn heartbeat(&self, beat: WorkerBeat) -> Result<(), StoreError> {
        command!(self, WorkerHeartbeat(beat))
    }

    /// Worker processes heard from in the last hour, newest first; those silent for
    /// `gone_after` are marked gone.
    pub async fn list_workers(&self, gone_after: Duration) -> Result<Vec<WorkerInfo>, StoreError> {
        let now = to_ms(Utc::now());
        let since = now - 60 * 60 * 1000;
        on_engine!(self, e => e.list_workers(since, now - gone_after.as_millis() as i64).await)
    }

    /// Stores a new API key (its secret only as `secret_hash`).
    pub async fn insert_key(&self, key: &ApiKeyInfo, secret_hash: &str) -> Result<(), StoreError> {
        on_engine!(self, e => e.insert_key(key, secret_hash).await)
    }

    /// Every API key, oldest first, revoked ones included.
    pub async fn list_keys(&self) -> Result<Vec<ApiKeyInfo>, StoreError> {
        on_engine!(self, e => e.list_keys().await)
    }

    /// Revokes a live key; `false` when no live key has this id.
    pub async fn revoke_key(&self, id: &str) -> Result<bool, StoreError> {
        let now = to_ms(Utc::now());
        on_engine!(self, e => e.revoke_key(id, now).await)
    }

    /// The key with this id, revoked or not.
    pub async fn find_key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        on_engine!(self, e => e.find_key(id).await)
    }

    /// How many keys were ever made, revoked ones included.
    pub async fn count_keys(&self) -> Result<u64, StoreError> {
        on_engine!(self, e => e.count_keys().await)
    }

    /// A secret every process of this database shares, made by whichever asks first
    /// (`candidate` is kept if none exists yet).
    pub async fn server_secret(&self, name: &str, candidate: &str) -> Result<String, StoreError> {
        on_engine!(self, e => e.server_secret(name, candidate).await)
    }

    /// The transitions this process's writer committed since it started, by agent.
    pub fn transitions(&self) -> Vec<TransitionCount> {
        on_engine!(self, e => e.tally.snapshot())
    }

    /// Runs running and waiting to run, by agent, and the worker processes alive (heard
    /// from within `gone_after`), as the database has them now.
    pub async fn queue_load(&self, gone_after: Duration) -> Result<QueueLoad, StoreError> {
        let now = to_ms(Utc::now());
        on_engine!(self, e => e.queue_load(now, now - gone_after.as_millis() as i64).await)
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_engine!(self, e => e.ping().await)
    }

    /// Stops the writer after it has committed what it was given, and closes connections.
    pub async fn close(&self) {
        on_engine!(self, e => e.close().await)
    }
}

pub(crate) fn to_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// Rounds up to the millisecond: a run asked not to start before `t` never starts early.
pub(crate) fn to_ms_ceil(t: DateTime<Utc>) -> i64 {
    let ms = t.timestamp_millis();
    if t.timestamp_subsec_nanos().is_multiple_of(1_000_000) {
        ms
    } else {
        ms + 1
    }
}

pub(crate) fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}
