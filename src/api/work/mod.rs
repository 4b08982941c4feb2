//! The worker protocol: how a worker outside the process (the Python and TypeScript SDKs,
//! any HTTP client) serves agents. It declares them (`declare.rs`), heartbeats
//! (`heartbeat.rs`), long-polls for runs (`claim.rs`) and reports on each attempt
//! (`report.rs`). The API claims on the worker's behalf with the same claim, lease and
//! fence as an in-process worker: the attempt token it hands out is that fence, and every
//! report is a fenced write. Every route needs the `worker` scope (or `admin`).

pub(super) mod claim;
pub(super) mod declare;
pub(super) mod heartbeat;
pub(super) mod report;

use std::sync::Arc;
use std::time::Duration;

use crate::domain::RunId;
use crate::jobs::outcome::Terms;
use crate::store::{AgentLimits, Fence};

use super::error::{ApiError, FieldError};

/// What the worker protocol needs of the server's worker settings.
#[derive(Debug, Clone)]
pub struct WorkOptions {
    /// `--lease`: an attempt not renewed for this long is taken back.
    pub lease: Duration,
    /// `--poll-interval`: how often a waiting claim looks for runs other processes made
    /// ready.
    pub poll_interval: Duration,
    /// `--agent-limit`, applied to external workers' claims too.
    pub agent_limits: Option<AgentLimits>,
    /// `--max-result-bytes`.
    pub max_result_bytes: usize,
    /// The longest a claim waits: [`claim::MAX_CLAIM_WAIT_MS`], and short of
    /// `--request-timeout`, which would otherwise cut the long poll.
    pub max_claim_wait: Duration,
    /// Fires when the process shuts down: a waiting claim answers at once (empty), so
    /// the graceful shutdown does not wait out long polls.
    pub stopping: tokio_util::sync::CancellationToken,
    /// What this process's claims handed out, so a report needs no read of its run.
    pub claimed: Claimed,
}

/// What decides an attempt's outcome besides how it ended, kept from its claim.
#[derive(Debug, Clone)]
pub(super) struct ClaimTerms {
    pub(super) agent: String,
    pub(super) terms: Terms,
    pub(super) timeout_ms: u64,
    /// When the claim handed it out, and how long it may run from then: its time limit, or
    /// less when the run's deadline comes first (then `cut_by_deadline`).
    claimed_at: std::time::Instant,
    pub(super) limit: Duration,
    pub(super) cut_by_deadline: bool,
    /// Kept until then at most: an attempt reported later (or through another process)
    /// reads its run instead.
    expires: std::time::Instant,
}

impl ClaimTerms {
    /// Terms read from the run itself.
    pub(super) fn read(agent: String, terms: Terms, timeout_ms: u64) -> Self {
        let now = std::time::Instant::now();
        Self {
            agent,
            terms,
            timeout_ms,
            claimed_at: now,
            limit: Duration::from_millis(timeout_ms),
            cut_by_deadline: false,
            expires: now,
        }
    }
}

/// The terms of the attempts this process's claims handed out, by fence. Bounded: entries
/// go when their attempt reports its end, and expired ones are swept as it grows.
#[derive(Debug, Default, Clone)]
pub struct Claimed(Arc<std::sync::Mutex<ClaimedInner>>);

#[derive(Debug, Default)]
struct ClaimedInner {
    terms: std::collections::HashMap<(RunId, u32), ClaimTerms>,
    /// The size after the last sweep: the next sweep comes when it has doubled.
    swept_at: usize,
}

impl Claimed {
    pub(super) fn remember(&self, run: &crate::store::ClaimedRun, keep: Duration) {
        let mut inner = self.lock();
        let now = std::time::Instant::now();
        if inner.terms.len() >= (2 * inner.swept_at).max(1024) {
            inner.terms.retain(|_, t| t.expires > now);
            inner.swept_at = inner.terms.len();
        }
        let timeout = Duration::from_millis(run.timeout_ms);
        let to_deadline = run
            .deadline
            .map(|d| (d - chrono::Utc::now()).to_std().unwrap_or_default());
        let terms = ClaimTerms {
            agent: run.agent.clone(),
            terms: Terms::from(run),
            timeout_ms: run.timeout_ms,
            claimed_at: now,
            limit: to_deadline.map_or(timeout, |d| d.min(timeout)),
            cut_by_deadline: to_deadline.is_some_and(|d| d < timeout),
            expires: now + timeout + keep,
        };
        inner.terms.insert((run.id, run.claim), terms);
    }

    /// The attempt's terms, if this process claimed it.
    pub(super) fn get(&self, fence: &Fence) -> Option<ClaimTerms> {
        let inner = self.lock();
        let terms = inner.terms.get(&(fence.run_id, fence.claim))?;
        (terms.terms.attempt == fence.attempt).then(|| terms.clone())
    }

    /// Whether this process claimed the fence's run and claim for another attempt number.
    pub(super) fn contradicts(&self, fence: &Fence) -> bool {
        let inner = self.lock();
        inner
            .terms
            .get(&(fence.run_id, fence.claim))
            .is_some_and(|t| t.terms.attempt != fence.attempt)
    }

    /// The attempts, among `fences`, this process claimed that are past their time limit
    /// by more than `grace`: their worker neither finished nor stopped them.
    pub(super) fn overdue(&self, fences: &[Fence], grace: Duration) -> Vec<(Fence, ClaimTerms)> {
        let inner = self.lock();
        let now = std::time::Instant::now();
        fences
            .iter()
            .filter_map(|f| {
                let t = inner.terms.get(&(f.run_id, f.claim))?;
                (t.terms.attempt == f.attempt && now > t.claimed_at + t.limit + grace)
                    .then(|| (f.clone(), t.clone()))
            })
            .collect()
    }

    /// The attempt ended: its terms go.
    pub(super) fn forget(&self, fence: &Fence) {
        self.lock().terms.remove(&(fence.run_id, fence.claim));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ClaimedInner> {
        // a panic while holding this lock cannot leave the map inconsistent
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A worker id: 1–128 of `A-Z a-z 0-9 _ . : -`.
pub(super) fn check_worker_id(id: &str) -> Result<Arc<str>, ApiError> {
    let ok = (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
    if ok {
        Ok(Arc::from(id))
    } else {
        Err(ApiError::Validation(vec![FieldError::new(
            "worker_id",
            "pattern",
            "a worker id is 1 to 128 of A-Z, a-z, 0-9, _, ., : and -",
        )]))
    }
}

/// The attempt token a claim hands out: `<run id>.<claim>.<attempt>`. With the worker's
/// id it is the attempt's fence.
pub(super) fn attempt_token(fence: &Fence) -> String {
    format!("{}.{}.{}", fence.run_id, fence.claim, fence.attempt)
}

/// The fence an attempt token names for `worker`; `None` when it is not a token.
pub(super) fn parse_token(token: &str, worker: &Arc<str>) -> Option<Fence> {
    let mut parts = token.rsplitn(3, '.');
    let attempt = parts.next()?.parse().ok()?;
    let claim = parts.next()?.parse().ok()?;
    let run_id: RunId = parts.next()?.parse().ok()?;
    Some(Fence {
        run_id,
        claim,
        attempt,
        worker_id: worker.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_token_names_its_fence_and_nothing_else_parses() {
        let worker: Arc<str> = Arc::from("w-1");
        let fence = Fence {
            run_id: RunId::new(),
            claim: 7,
            attempt: 3,
            worker_id: worker.clone(),
        };
        let token = attempt_token(&fence);
        assert_eq!(parse_token(&token, &worker), Some(fence));
        for bad in [
            "",
            "x.1.1",
            "1.1",
            &format!("{}.1", RunId::new()),
            &format!("{}.a.1", RunId::new()),
        ] {
            assert_eq!(parse_token(bad, &worker), None, "{bad}");
        }
    }

    #[test]
    fn worker_ids_are_short_and_plain() {
        assert!(check_worker_id("host-1:4242.ab_C").is_ok());
        for bad in ["", "a b", "a/b", &"x".repeat(129)] {
            assert!(check_worker_id(bad).is_err(), "{bad}");
        }
    }
}
