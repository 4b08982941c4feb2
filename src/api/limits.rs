//! Per-tenant limits on the API: a request rate (`--tenant-rate-limit`) and a cap on runs
//! not yet finished (`--tenant-max-active-runs`). Both answer `429` with `Retry-After`.
//!
//! Each API process keeps its own buckets (N processes behind a load balancer allow N
//! times the rate; size the flag per process). The active-runs count is read from the
//! database at most once a second per tenant and counted up locally in between (under a
//! lock, so one process never admits past the cap); other processes' inserts are seen
//! within about a second. Retries of failed runs (`POST …/retry`) are not counted.
//! A token bucket is a few lines; a rate-limiting crate would add five dependencies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::Store;

use super::error::ApiError;

/// How long a database count of a tenant's active runs is trusted.
const ACTIVE_COUNT_TTL: Duration = Duration::from_secs(1);

/// The limits and their state; one per API process.
#[derive(Debug, Default)]
pub struct Limits {
    /// Requests per second per tenant (also the burst).
    rate: Option<u32>,
    max_active: Option<u64>,
    buckets: Mutex<HashMap<String, Bucket>>,
    /// Per tenant: the count of runs not finished and when it was read, plus the runs
    /// this process admitted since. Each tenant's is locked on its own (held across that
    /// tenant's database count), so one tenant's count holds up no other tenant.
    active: Mutex<HashMap<String, Arc<ActiveCount>>>,
}

/// A tenant's count of runs not finished, when it was read, plus what was admitted since.
type ActiveCount = tokio::sync::Mutex<Option<(Instant, u64)>>;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Limits {
    pub fn new(rate: Option<u32>, max_active: Option<u64>) -> Self {
        Self {
            rate: rate.filter(|r| *r > 0),
            max_active,
            ..Self::default()
        }
    }

    /// Takes one request from the tenant's bucket, or says when to try again.
    pub fn take_request(&self, tenant: &str) -> Result<(), ApiError> {
        let Some(rate) = self.rate else {
            return Ok(());
        };
        let rate = f64::from(rate);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limit lock");
        if buckets.len() > 100_000 {
            // tenants come from keys, so this is a safety net, not a working set
            buckets.retain(|_, b| now.duration_since(b.at) < Duration::from_secs(60));
        }
        let bucket = buckets.entry(tenant.to_owned()).or_insert(Bucket {
            tokens: rate,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + refill).min(rate);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - bucket.tokens) / rate).ceil().max(1.0) as u64;
        Err(ApiError::TooManyRequests {
            code: "rate_limited",
            detail: format!("over the limit of {rate} requests per second for this tenant"),
            retry_after: wait,
        })
    }

    /// Reserves room for a new run of the tenant, or refuses it while the tenant has
    /// `--tenant-max-active-runs` runs not finished. The check and the reservation happen
    /// under one lock (held across the database count), so concurrent requests of this
    /// process cannot all pass on the same count. Give the room back with
    /// [`Limits::unreserve`] when no run was created after all.
    pub async fn admit_run(&self, store: &Store, tenant: &str) -> Result<(), ApiError> {
        self.admit_runs(store, tenant, 1).await
    }

    /// [`Limits::admit_run`] for `n` runs at once (a batch), all under one lock: all fit,
    /// or none is admitted. A batch larger than the whole cap never fits: a `422`.
    pub async fn admit_runs(&self, store: &Store, tenant: &str, n: u64) -> Result<(), ApiError> {
        let Some(max) = self.max_active else {
            return Ok(());
        };
        if n > max {
            return Err(ApiError::Validation(vec![super::error::FieldError::new(
                "runs",
                "length",
                format!("{n} runs are more than this tenant may have unfinished ({max})"),
            )]));
        }
        let entry = self
            .active
            .lock()
            .expect("limits lock")
            .entry(tenant.to_owned())
            .or_default()
            .clone();
        let mut active = entry.lock().await;
        let cached = active.filter(|(at, _)| at.elapsed() < ACTIVE_COUNT_TTL);
        // a fresh count restarts the clock; a cached one keeps its age
        let (at, count) = match cached {
            Some(entry) => entry,
            None => (Instant::now(), store.count_active_runs(tenant).await?),
        };
        if count + n > max {
            *active = Some((at, count));
            return Err(ApiError::TooManyRequests {
                code: "too_many_active_runs",
                detail: format!(
                    "this tenant has {count} runs not finished, the most allowed is {max}; wait for some to finish"
                ),
                retry_after: 1,
            });
        }
        *active = Some((at, count + n));
        Ok(())
    }

    /// Gives back a reservation of [`Limits::admit_run`] that created no run (refused,
    /// failed, or an Idempotency-Key naming an existing run).
    pub async fn unreserve(&self, tenant: &str) {
        self.unreserve_n(tenant, 1).await
    }

    /// Gives back `n` reservations (a batch that created no run).
    pub async fn unreserve_n(&self, tenant: &str, count: u64) {
        if self.max_active.is_none() {
            return;
        }
        let entry = self
            .active
            .lock()
            .expect("limits lock")
            .get(tenant)
            .cloned();
        if let Some(entry) = entry
            && let Some((_, n)) = entry.lock().await.as_mut()
        {
            *n = n.saturating_sub(count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_the_rate_then_refuses_with_a_retry_after() {
        let limits = Limits::new(Some(3), None);
        for _ in 0..3 {
            limits.take_request("acme").unwrap();
        }
        match limits.take_request("acme") {
            Err(ApiError::TooManyRequests { retry_after, .. }) => assert_eq!(retry_after, 1),
            other => panic!("expected 429, got {other:?}"),
        }
        // another tenant has its own bucket
        limits.take_request("globex").unwrap();
        // no limit: always allowed
        let none = Limits::new(None, None);
        for _ in 0..1000 {
            none.take_request("acme").unwrap();
        }
    }
}
