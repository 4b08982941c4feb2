//! The store's clock: the system's, or a test's that stands still until it is moved.
//!
//! It times what the store records: leases and their expiry, due times, event and finish
//! times, retention ages. The writer's waiting (a parked claim's deadline, the wake-up for
//! a run coming due, which the batch hands it as a span) stays on real time, since it
//! sleeps. Callers that compute a time to store (a retry's due time after its backoff, an
//! Idempotency-Key's expiry) compute it on the system's clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{from_ms, to_ms};

/// Where the store reads the time. Cheap to clone; clones of a manual clock move together.
#[derive(Clone, Default)]
pub struct Clock {
    /// Milliseconds since the epoch, for a manual clock.
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system's clock (the default).
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that shows `start` until [`Clock::advance`] moves it, for tests that would
    /// otherwise sleep for a lease to expire.
    pub fn manual(start: DateTime<Utc>) -> Self {
        Self {
            manual: Some(Arc::new(AtomicI64::new(to_ms(start)))),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        from_ms(self.now_ms())
    }

    pub(crate) fn now_ms(&self) -> i64 {
        match &self.manual {
            Some(ms) => ms.load(Ordering::SeqCst),
            None => to_ms(Utc::now()),
        }
    }

    /// Moves a manual clock forward; panics on the system's, which nobody moves.
    pub fn advance(&self, by: Duration) {
        let ms = self
            .manual
            .as_ref()
            .expect("only a manual clock is advanced");
        ms.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.manual {
            Some(_) => write!(f, "Clock::manual({})", self.now()),
            None => f.write_str("Clock::system"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_its_clones_move_with_it() {
        let start = DateTime::from_timestamp_millis(1_000_000).unwrap();
        let clock = Clock::manual(start);
        let clone = clock.clone();
        assert_eq!(clock.now(), start);
        clone.advance(Duration::from_millis(1500));
        assert_eq!(clock.now_ms(), 1_001_500);
        let system = Clock::system().now_ms();
        assert!((system - to_ms(Utc::now())).abs() < 1000);
    }
}
