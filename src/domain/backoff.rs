//! Exponential backoff with "equal jitter" for retries.

use std::time::Duration;

use rand::Rng;

/// Delay before attempt `n + 1` after attempt `n` failed: a uniform draw from
/// `[c/2, c]` with `c = min(cap, base × 2^(n−1))` ("equal jitter"), so that many runs
/// failing together spread their retries instead of returning in a herd, while a run
/// never comes back much sooner than its backoff asked (full jitter, `[0, c]`, can
/// retry a "60 s" backoff after a few milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// The upper bound of the delay after the given failed attempt (1-based).
    pub fn ceiling(&self, failed_attempt: u32) -> Duration {
        let exp = failed_attempt.saturating_sub(1).min(63);
        let factor = 1u64.checked_shl(exp).unwrap_or(u64::MAX);
        let ms = (self.base.as_millis() as u64).saturating_mul(factor);
        Duration::from_millis(ms).min(self.cap)
    }

    /// A jittered delay after the given failed attempt, drawn from `rng`.
    pub fn delay(&self, failed_attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(failed_attempt).as_millis() as u64;
        Duration::from_millis(rng.random_range(ceiling.div_ceil(2)..=ceiling))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{SeedableRng, rngs::StdRng};

    fn backoff() -> Backoff {
        Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(300),
        }
    }

    #[test]
    fn ceiling_doubles_per_attempt_until_the_cap() {
        let b = backoff();
        let secs: Vec<u64> = (1..=11).map(|n| b.ceiling(n).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn delay_stays_within_half_the_ceiling_and_the_ceiling_and_spreads() {
        let b = backoff();
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 1..=12 {
            let draws: Vec<Duration> = (0..200).map(|_| b.delay(attempt, &mut rng)).collect();
            assert!(draws.iter().all(|d| *d <= b.ceiling(attempt)));
            assert!(draws.iter().all(|d| *d * 2 >= b.ceiling(attempt)));
            let distinct: std::collections::HashSet<_> = draws.iter().collect();
            assert!(distinct.len() > 50, "attempt {attempt}: too little jitter");
        }
    }

    #[test]
    fn a_zero_base_gives_immediate_retries() {
        let b = Backoff {
            base: Duration::ZERO,
            cap: Duration::from_secs(1),
        };
        assert_eq!(b.delay(5, &mut rand::rng()), Duration::ZERO);
    }
}
