//! Retention: a janitor in every worker process deletes finished runs past their
//! retention, with their events, in small batches.
//!
//! A finished run (`succeeded`, `failed`, `cancelled`) goes once it finished longer ago
//! than its status's retention, or once it is no longer among the newest `max_runs` of its
//! status, whichever comes first; oldest first. Runs something still needs are kept (see
//! the store's `purge_finished`). Each batch is one transaction of the store's writer,
//! shared with whatever the hot path sends at that moment, so batches are small and the
//! janitor pauses between them. Several worker processes may run it at once: deletes are
//! idempotent, and on PostgreSQL a run another process is deleting is skipped.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::domain::RunStatus;
use crate::store::{Store, StoreError};

/// How long finished runs are kept. Nothing set: every run is kept for good.
#[derive(Debug, Clone)]
pub struct RetentionOptions {
    pub succeeded: Option<Duration>,
    pub failed: Option<Duration>,
    pub cancelled: Option<Duration>,
    /// Keep at most this many finished runs of each terminal status (the newest by finish
    /// time).
    pub max_runs: Option<u64>,
    /// How often the janitor looks for runs to delete.
    pub every: Duration,
}

impl Default for RetentionOptions {
    fn default() -> Self {
        Self {
            succeeded: None,
            failed: None,
            cancelled: None,
            max_runs: None,
            every: Duration::from_secs(5),
        }
    }
}

impl RetentionOptions {
    /// Whether any run is ever deleted.
    pub fn is_enabled(&self) -> bool {
        self.max_runs.is_some() || TERMINAL.iter().any(|&s| self.age(s).is_some())
    }

    fn age(&self, status: RunStatus) -> Option<Duration> {
        match status {
            RunStatus::Succeeded => self.succeeded,
            RunStatus::Failed => self.failed,
            RunStatus::Cancelled => self.cancelled,
            _ => None,
        }
    }
}

const TERMINAL: [RunStatus; 3] = [
    RunStatus::Succeeded,
    RunStatus::Failed,
    RunStatus::Cancelled,
];

/// Runs per transaction: deleting one run deletes its few event rows too, so a batch
/// stays within milliseconds.
const BATCH: usize = 500;

/// Between two batches, the writer is left to the hot path.
const PAUSE: Duration = Duration::from_millis(20);

pub(crate) async fn keep_tidy(store: Store, options: RetentionOptions, stop: CancellationToken) {
    if !options.is_enabled() {
        return;
    }
    let mut tick = tokio::time::interval(options.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let mut deleted = [0u64; 3];
        let result = tidy(&store, &options, &stop, &mut deleted).await;
        if deleted.iter().sum::<u64>() > 0 {
            tracing::info!(
                succeeded = deleted[0],
                failed = deleted[1],
                cancelled = deleted[2],
                "deleted finished runs past their retention"
            );
        }
        if let Err(e) = result {
            tracing::warn!(error = %e, "deleting finished runs past their retention failed");
        }
    }
}

/// One round: every terminal status, batch after batch, until none is left to delete.
async fn tidy(
    store: &Store,
    options: &RetentionOptions,
    stop: &CancellationToken,
    deleted: &mut [u64; 3],
) -> Result<(), StoreError> {
    for (count, &status) in deleted.iter_mut().zip(TERMINAL.iter()) {
        let bound = store
            .retention_bound(status, options.age(status), options.max_runs)
            .await?;
        let Some(before) = bound else { continue };
        let mut after = None;
        loop {
            let purged = store
                .purge_finished(status, after, before.clone(), BATCH)
                .await?;
            *count += purged.deleted;
            let Some(next) = purged.next else { break };
            after = Some(next);
            tokio::select! {
                _ = tokio::time::sleep(PAUSE) => {}
                _ = stop.cancelled() => return Ok(()),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_is_off_until_a_setting_asks_for_it() {
        assert!(!RetentionOptions::default().is_enabled());
        let by_age = RetentionOptions {
            failed: Some(Duration::from_secs(60)),
            ..Default::default()
        };
        assert!(by_age.is_enabled());
        assert_eq!(by_age.age(RunStatus::Failed), Some(Duration::from_secs(60)));
        assert_eq!(by_age.age(RunStatus::Succeeded), None);
        let by_count = RetentionOptions {
            max_runs: Some(10),
            ..Default::default()
        };
        assert!(by_count.is_enabled());
    }
}
