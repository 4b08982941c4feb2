//! Supervision of the worker loops (the table path's one, the Redis path's one per agent):
//! a loop that stops on its own is started again after a backoff (1 s doubling to 60 s);
//! one that then runs [`HEALTHY_AFTER`] without stopping, and has worked since it started
//! (a claim or a fetch that succeeded: living alone proves nothing against a database that
//! hangs rather than refuses), counts as healthy again. A loop
//! restarted more than `--max-restarts` times in a row makes the worker give up: it stops
//! like at shutdown and the process exits non-zero, for systemd or the orchestrator to
//! start it afresh (a new connection pool, a new DNS lookup, maybe a fixed setting).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::WorkerStatus;
use crate::telemetry::Metrics;

/// A loop that has run this long without stopping, and worked, counts as healthy again:
/// its restart reason leaves `/readyz`, and the next failure backs off from 1 s and counts
/// from 1.
pub(crate) const HEALTHY_AFTER: Duration = Duration::from_secs(5);

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The worker's decision to give up, shared by all its loops: the first reason is kept,
/// and `stop` ends every loop.
#[derive(Clone)]
pub(crate) struct GiveUp {
    stop: CancellationToken,
    reason: Arc<OnceLock<String>>,
}

impl GiveUp {
    /// Giving up cancels `stop` (a child of the process's shutdown).
    pub(crate) fn new(stop: CancellationToken) -> Self {
        Self {
            stop,
            reason: Arc::default(),
        }
    }

    fn give_up(&self, reason: String) {
        let _ = self.reason.set(reason);
        self.stop.cancel();
    }

    /// Why the worker gave up, if it did.
    pub(crate) fn reason(&self) -> Option<String> {
        self.reason.get().cloned()
    }
}

/// One loop's supervision.
pub(crate) struct Supervisor {
    max_restarts: u32,
    /// Restarts since the loop last counted as healthy.
    in_a_row: u32,
    backoff: Duration,
    status: Arc<WorkerStatus>,
    metrics: Metrics,
    give_up: GiveUp,
}

impl Supervisor {
    pub(crate) fn new(
        max_restarts: u32,
        status: Arc<WorkerStatus>,
        metrics: Metrics,
        give_up: GiveUp,
    ) -> Self {
        Self {
            max_restarts,
            in_a_row: 0,
            backoff: FIRST_BACKOFF,
            status,
            metrics,
            give_up,
        }
    }

    /// Runs one start of the loop to its end, counting it healthy once it has lived
    /// [`HEALTHY_AFTER`] and work was done since it started.
    pub(crate) async fn watch<F: std::future::Future>(&mut self, run: F) -> F::Output {
        let since = self.status.work_seq();
        tokio::pin!(run);
        let mut checks = tokio::time::interval_at(
            tokio::time::Instant::now() + HEALTHY_AFTER,
            Duration::from_secs(1),
        );
        loop {
            tokio::select! {
                ended = &mut run => return ended,
                _ = checks.tick(), if self.in_a_row > 0 => {
                    if self.status.work_seq() > since {
                        self.healthy();
                    }
                }
            }
        }
    }

    /// The loop proved healthy since it was last started.
    fn healthy(&mut self) {
        if self.in_a_row > 0 {
            self.status.claim_failed(None);
        }
        self.in_a_row = 0;
        self.backoff = FIRST_BACKOFF;
    }

    /// The loop stopped on its own because of `reason`: how long to wait before starting
    /// it again, or `None` when it was restarted `max_restarts` times in a row already (the
    /// worker gives up).
    pub(crate) fn stopped(&mut self, reason: &str) -> Option<Duration> {
        // what the loop last failed at (claiming, Redis), when it said
        let reason = match self.status.problem() {
            Some(cause) if !cause.contains("in a row") => format!("{reason} ({cause})"),
            _ => reason.to_owned(),
        };
        let reason = reason.as_str();
        if self.in_a_row >= self.max_restarts {
            let why = format!(
                "{reason}, after {} restarts in a row (--max-restarts {}): the worker gives up and the process exits",
                self.in_a_row, self.max_restarts
            );
            tracing::error!(reason = %why, "worker giving up");
            self.status.claim_failed(Some(why.clone()));
            self.give_up.give_up(why);
            return None;
        }
        self.in_a_row += 1;
        let wait = self.backoff;
        self.status.restarted(format!(
            "{reason}; restart {} of at most {} in a row, in {}s",
            self.in_a_row,
            self.max_restarts,
            wait.as_secs()
        ));
        self.metrics.worker_restarted();
        tracing::error!(reason = %reason, restart_in_s = wait.as_secs(), restart = self.in_a_row, max_restarts = self.max_restarts, "worker loop stopped on its own; restarting");
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        Some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_reset_when_healthy_and_give_up_past_the_limit() {
        let status = Arc::new(WorkerStatus::new(vec!["echo".into()], 1));
        let stop = CancellationToken::new();
        let give_up = GiveUp::new(stop.clone());
        let mut s = Supervisor::new(2, status.clone(), Metrics::new(), give_up.clone());
        assert_eq!(s.stopped("x"), Some(Duration::from_secs(1)));
        assert_eq!(s.stopped("x"), Some(Duration::from_secs(2)));
        s.healthy();
        assert_eq!(s.stopped("x"), Some(Duration::from_secs(1)));
        assert_eq!(s.stopped("x"), Some(Duration::from_secs(2)));
        assert!(!stop.is_cancelled());
        assert_eq!(s.stopped("claims failed"), None);
        assert!(stop.is_cancelled());
        let reason = give_up.reason().unwrap();
        assert!(
            reason.starts_with("claims failed, after 2 restarts in a row"),
            "{reason}"
        );
        assert!(status.problem().unwrap().contains("gives up"));
    }
}
