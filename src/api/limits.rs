//! Per-tenant limits on the API: a request rate (`--tenant-rate-limit`) and a cap on runs
//! not yet finished (`--tenant-max-active-runs`). Both answer `429` with `Retry-After`.
//!
//! Each API process keeps its own buckets (N processes behind a load balancer allow N
//! times the rate; size the flag per process). The active-runs count is read from the
//! database at most once a second per tenant and counted up locally in between, so the
//! cap holds across processes to within about a second of other processes' inserts.
//! A token bucket is a few lines; a rate-limiting crate would add five dependencies.

use std::collections::HashMap;
use std::sync::Mutex;
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
    active: Mutex<HashMap<String, (Instant, u64)>>,
}

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

    /// Refuses a new run while the tenant has `--tenant-max-active-runs` runs not finished.
    pub async fn admit_run(&self, store: &Store, tenant: &str) -> Result<(), ApiError> {
        let Some(max) = self.max_active else {
            return Ok(());
        };
        let cached = self
            .active
            .lock()
            .expect("active runs lock")
            .get(tenant)
            .filter(|(at, _)| at.elapsed() < ACTIVE_COUNT_TTL)
            .map(|(_, n)| *n);
        let active = match cached {
            Some(n) => n,
            None => {
                let n = store.count_active_runs(tenant).await?;
                self.active
                    .lock()
                    .expect("active runs lock")
                    .insert(tenant.to_owned(), (Instant::now(), n));
                n
            }
        };
        if active >= max {
            return Err(ApiError::TooManyRequests {
                code: "too_many_active_runs",
                detail: format!(
                    "this tenant has {active} runs not finished, the most allowed is {max}; wait for some to finish"
                ),
                retry_after: 1,
            });
        }
        Ok(())
    }

    /// Counts a run just accepted for the tenant, until the next database count.
    pub fn accepted(&self, tenant: &str) {
        if self.max_active.is_some()
            && let Some((_, n)) = self
                .active
                .lock()
                .expect("active runs lock")
                .get_mut(tenant)
        {
            *n += 1;
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
