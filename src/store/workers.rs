//! [`Store`]'s worker registry: heartbeats, the list of worker processes, and handing
//! back a stopping worker's runs.

use super::*;

impl Store {
    /// Registers a worker process or records its heartbeat.
    pub async fn heartbeat(&self, beat: WorkerBeat) -> Result<(), StoreError> {
        command!(self, WorkerHeartbeat(beat))
    }
    /// Worker processes heard from in the last hour, newest first; those silent for
    /// `gone_after` are marked gone.
    pub async fn list_workers(&self, gone_after: Duration) -> Result<Vec<WorkerInfo>, StoreError> {
        let now = self.now_ms();
        let since = now - 60 * 60 * 1000;
        on_engine!(self, e => e.list_workers(since, now - gone_after.as_millis() as i64).await)
    }
    /// Hands every run `worker_id` holds back to the queue without using up its attempt
    /// (graceful shutdown). Returns how many it handed back.
    pub async fn release_worker(&self, worker_id: Arc<str>) -> Result<u64, StoreError> {
        command!(self, WorkerRelease(worker_id))
    }
}
