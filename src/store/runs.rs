//! [`Store`]'s runs: create, read, list and count them, cancel, retry and signal them,
//! and follow their events.

use super::*;

impl Store {
    /// Inserts a new run (status `queued`) with its `created` event; or, when its
    /// Idempotency-Key already names a run created by the same request, returns that run's
    /// id (`Conflict` if the key was used with a different request).
    pub async fn insert_run(&self, run: NewRun) -> Result<Inserted, StoreError> {
        command!(self, RunInsert(run))?
    }
    /// Inserts the runs of a batch in one transaction, all or none (`BadBatchDependencies`
    /// when a dependency on a stored run is bad); runs of the batch may depend on each other.
    pub async fn insert_batch(&self, runs: Vec<NewRun>) -> Result<BatchInserted, StoreError> {
        command!(self, RunInsertBatch(runs))?
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
    /// How many of the tenant's runs have not finished.
    pub async fn count_active_runs(&self, tenant: &str) -> Result<u64, StoreError> {
        on_engine!(self, e => e.count_active_runs(tenant).await)
    }
    /// Cancels a run that has not finished. A running attempt is fenced out at once and its
    /// worker stops it at its next lease renewal. `Conflict` if the run already finished.
    /// `actor` is who asked (recorded on the `cancelled` event).
    pub async fn cancel_run(&self, id: RunId, actor: Option<String>) -> Result<Run, StoreError> {
        command!(self, RunCancel { id, actor })??;
        self.get_run(id).await
    }
    /// Changes the priority or run_at of a run that has not started (`None` keeps it);
    /// `Conflict` once it started. `actor` is who asked (recorded on the `changed` event).
    pub async fn change_run(
        &self,
        id: RunId,
        priority: Option<i32>,
        run_at: Option<DateTime<Utc>>,
        actor: Option<String>,
    ) -> Result<Run, StoreError> {
        let run_at = run_at.map(to_ms_ceil);
        command!(
            self,
            RunChange {
                id,
                priority,
                run_at,
                actor
            }
        )??;
        self.get_run(id).await
    }
    /// Puts a failed run back in the queue, its attempts reset and its history kept.
    /// `Conflict` if the run is not failed.
    pub async fn requeue_run(&self, id: RunId, actor: Option<String>) -> Result<Run, StoreError> {
        command!(
            self,
            RunRequeue {
                target: RequeueTarget::One(id),
                actor
            }
        )??;
        self.get_run(id).await
    }
    /// Puts every failed run matching `filter` back in the queue, in chunks of
    /// `filter.limit` so no single transaction holds the writer for long. Returns how many.
    pub async fn requeue_failed(
        &self,
        filter: RequeueFilter,
        actor: Option<String>,
    ) -> Result<u64, StoreError> {
        let chunk = u64::from(filter.limit.max(1));
        let mut total = 0;
        loop {
            let target = RequeueTarget::Failed(RequeueFilter {
                limit: chunk as u32,
                ..filter.clone()
            });
            let n = command!(
                self,
                RunRequeue {
                    target,
                    actor: actor.clone()
                }
            )??;
            total += n;
            if n < chunk {
                return Ok(total);
            }
        }
    }
    /// Sends a signal to a run: kept until a wait consumes it, and resuming the run if it
    /// waits for it (returns whether it did). `Conflict` if the run has finished.
    /// A signal with a signature another stored signal of the run has is refused
    /// (`Conflict`): a signed request is taken once.
    pub async fn signal(&self, id: RunId, signal: NewSignal) -> Result<bool, StoreError> {
        command!(self, RunSignal { id, signal })?
    }
    /// The run's events with `seq > after`, oldest first; `NotFound` if the run does not exist.
    pub async fn list_events(&self, id: RunId, after: i64) -> Result<Vec<RunEvent>, StoreError> {
        Ok(self
            .list_events_within(id, after, EventBounds::ALL)
            .await?
            .events)
    }
    /// A run's events after `after`, as many as `bounds` allow, and whether more follow.
    pub async fn list_events_within(
        &self,
        id: RunId,
        after: i64,
        bounds: EventBounds,
    ) -> Result<EventPage, StoreError> {
        on_engine!(self, e => e.list_events(id, after, bounds).await)
    }
    /// Follows a run's committed events, for live streams. Events committed by this
    /// process are told at once (and kept a while in memory); other processes' are seen
    /// only by reading again.
    pub fn follow_events(&self, id: RunId) -> EventFollower {
        on_engine!(self, e => e.hub.follow(id.to_string()))
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
    /// Runs running and waiting to run, by agent, and the worker processes alive (heard
    /// from within `gone_after`), as the database has them now.
    pub async fn queue_load(&self, gone_after: Duration) -> Result<QueueLoad, StoreError> {
        let now = self.now_ms();
        on_engine!(self, e => e.queue_load(now, now - gone_after.as_millis() as i64).await)
    }
}
