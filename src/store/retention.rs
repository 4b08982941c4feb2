//! [`Store`]'s retention: which finished runs are past it, and deleting them.

use super::*;

impl Store {
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
        let by_age = older_than.map(|age| FinishedKey::at(self.now_ms() - age.as_millis() as i64));
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
}
