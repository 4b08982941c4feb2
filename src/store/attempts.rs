//! [`Store`]'s attempts: claiming runs, and every fenced write of a running attempt
//! (progress, logs, checkpoints, signals taken, its outcome, its lease), and taking back
//! the runs of attempts that ended without one.

use std::collections::{HashMap, HashSet};

use super::*;

impl Store {
    /// Claims up to `limit` due runs of `agents` (all agents when `None`) for `worker_id`.
    /// With `wait`, an empty claim is held until runs become claimable or `wait` passes.
    /// With `agent_limits` (and `agents` named), no agent ends up with more runs running
    /// over all workers than its limit.
    pub async fn claim(
        &self,
        worker_id: Arc<str>,
        agents: Option<Arc<[String]>>,
        limit: usize,
        lease: Duration,
        wait: Option<Duration>,
        agent_limits: Option<AgentLimits>,
    ) -> Result<Vec<ClaimedRun>, StoreError> {
        let wait_until = wait.map(|w| to_ms(Utc::now()) + w.as_millis() as i64);
        let agent_limits = agent_limits.filter(|l| !l.is_empty());
        command!(
            self,
            RunClaim {
                worker_id,
                agents,
                limit,
                lease,
                wait_until,
                agent_limits,
            }
        )
    }
    /// [`Store::claim`], sent at once without waiting for its reply or for room in the
    /// writer's queue: a worker claims the next run of a slot while that slot's outcome is
    /// being written, and both land in one batch. `None` when the writer's queue is full
    /// or the writer stopped (claim the usual way then).
    pub fn claim_soon(
        &self,
        worker_id: Arc<str>,
        agents: Option<Arc<[String]>>,
        limit: usize,
        lease: Duration,
        wait: Option<Duration>,
        agent_limits: Option<AgentLimits>,
    ) -> Option<ClaimReply> {
        let wait_until = wait.map(|w| to_ms(Utc::now()) + w.as_millis() as i64);
        let agent_limits = agent_limits.filter(|l| !l.is_empty());
        command_now!(
            self,
            RunClaim {
                worker_id,
                agents,
                limit,
                lease,
                wait_until,
                agent_limits,
            }
        )
        .map(ClaimReply)
    }
    /// Waits until a commit of this process makes runs ready (other processes' inserts are
    /// not seen: poll as well).
    pub async fn runs_ready(&self) {
        on_engine!(self, e => e.hub.ready().await)
    }
    /// Records an attempt's outcome. Returns `false` when the fence no longer holds.
    pub async fn finish(&self, fence: Fence, outcome: Outcome) -> Result<bool, StoreError> {
        command!(self, AttemptFinish { fence, outcome })
    }
    /// Records progress; writes of one batch are coalesced, the last one always lands.
    pub async fn progress(&self, fence: Fence, progress: Progress) -> Result<bool, StoreError> {
        command!(self, AttemptProgress { fence, progress })
    }
    /// Appends a `log` event to a running attempt.
    pub async fn log(
        &self,
        fence: Fence,
        level: &str,
        message: String,
    ) -> Result<bool, StoreError> {
        let level = level.to_owned();
        command!(
            self,
            AttemptLog {
                fence,
                level,
                message
            }
        )
    }
    /// Appends parts to the run's output stream (checked with `StreamPart::checked`). The
    /// adjacent appends of one attempt in one batch are written together.
    pub async fn stream(
        &self,
        fence: Fence,
        parts: Vec<crate::domain::StreamPart>,
    ) -> Result<Streamed, StoreError> {
        let limit = self.max_stream_bytes;
        command!(
            self,
            AttemptStream {
                fence,
                parts,
                limit
            }
        )
    }
    /// Saves an attempt's checkpoint: the next attempt starts from it. Fenced like every
    /// write of an attempt; `false` when the attempt no longer owns its run.
    pub async fn checkpoint(
        &self,
        fence: Fence,
        state: serde_json::Value,
    ) -> Result<bool, StoreError> {
        command!(self, AttemptCheckpoint { fence, state })
    }
    /// Consumes the oldest pending signal among `names` for a running attempt.
    /// With `taken_by` (an external worker's wait report id), the same report sent again
    /// gets the signal it took the first time.
    pub async fn take_signal(
        &self,
        fence: Fence,
        names: Vec<String>,
        taken_by: Option<String>,
    ) -> Result<Option<crate::domain::Signal>, StoreError> {
        command!(
            self,
            AttemptTakeSignal {
                fence,
                names,
                taken_by
            }
        )
    }
    /// Extends the leases of the attempts a worker is executing: one write for each worker
    /// (its lease covers its runs), and one for each attempt not yet covered. Returns those
    /// it still holds; an attempt missing from the answer has lost its run (cancelled,
    /// swept or handed back).
    pub async fn renew_leases(
        &self,
        fences: Vec<Fence>,
        lease: Duration,
    ) -> Result<Vec<Fence>, StoreError> {
        let mut by_worker: HashMap<Arc<str>, Vec<Fence>> = HashMap::new();
        for fence in fences {
            by_worker
                .entry(fence.worker_id.clone())
                .or_default()
                .push(fence);
        }
        let mut held = Vec::new();
        let now = self.clock.now();
        for (worker, fences) in by_worker {
            let (fresh, epoch, reconcile) = self.covered.fresh(&worker, &fences, now, lease);
            let renewed = command!(
                self,
                AttemptRenew {
                    worker: worker.clone(),
                    fences,
                    fresh,
                    epoch,
                    reconcile,
                    lease
                }
            )?;
            self.covered.set(&worker, &renewed, now, lease);
            held.extend(renewed.held);
        }
        Ok(held)
    }
    /// Hands these attempts' runs back to the queue without using up the attempt.
    pub async fn hand_back(&self, fences: Vec<Fence>) -> Result<u64, StoreError> {
        command!(self, AttemptHandBack(fences))
    }
    /// Takes back runs whose lease expired: retried, or failed when out of attempts.
    pub async fn sweep_expired(&self) -> Result<Sweep, StoreError> {
        command!(self, RunSweep)
    }
}

/// What a renewal of a worker's lease found.
pub(super) struct Renewed {
    /// The attempts still held; the others were lost.
    pub(super) held: Vec<Fence>,
    /// The lease's epoch now.
    pub(super) epoch: i64,
    /// Whether the covered runs the worker no longer sends got leases of their own back.
    pub(super) reconciled: bool,
}

/// The attempts, by worker, whose runs this process saw covered by their worker's lease at
/// its last renewal there, and under which epoch of the lease: the next renewal under the
/// same epoch checks only the others one by one. A worker's entry is replaced at each of its
/// renewals (attempts that ended drop out) and forgotten when it has not renewed here for
/// four leases. Another process renewing for the same worker (an external worker's
/// heartbeats reaching several API processes) checks once what it has not seen itself, and
/// everything when the lease was taken again meanwhile (a new epoch). Once a lease, a
/// renewal also gives the worker's covered runs it no longer sends leases of their own.
#[derive(Default)]
pub(super) struct Covered(std::sync::Mutex<CoveredByWorker>);

/// Per worker, what its last renewal here found.
type CoveredByWorker = HashMap<Arc<str>, Seen>;

struct Seen {
    at: DateTime<Utc>,
    epoch: i64,
    covered: HashSet<(RunId, u32)>,
    reconciled_at: DateTime<Utc>,
}

impl Covered {
    /// The fences not seen covered, the epoch they were seen under, and whether it is time
    /// to reconcile.
    fn fresh(
        &self,
        worker: &Arc<str>,
        fences: &[Fence],
        now: DateTime<Utc>,
        lease: Duration,
    ) -> (Vec<Fence>, Option<i64>, bool) {
        let map = self.lock();
        let Some(seen) = map
            .get(worker)
            .filter(|seen| (now - seen.at).to_std().unwrap_or_default() < lease * 4)
        else {
            return (fences.to_vec(), None, true);
        };
        let fresh = fences
            .iter()
            .filter(|f| !seen.covered.contains(&(f.run_id, f.claim)))
            .cloned()
            .collect();
        let reconcile = (now - seen.reconciled_at).to_std().unwrap_or_default() >= lease;
        (fresh, Some(seen.epoch), reconcile)
    }

    fn set(&self, worker: &Arc<str>, renewed: &Renewed, now: DateTime<Utc>, lease: Duration) {
        let covered = renewed.held.iter().map(|f| (f.run_id, f.claim)).collect();
        let mut map = self.lock();
        map.retain(|_, seen| (now - seen.at).to_std().unwrap_or_default() < lease * 4);
        let reconciled_at = match map.get(worker) {
            Some(seen) if !renewed.reconciled => seen.reconciled_at,
            _ => now,
        };
        map.insert(
            worker.clone(),
            Seen {
                at: now,
                epoch: renewed.epoch,
                covered,
                reconciled_at,
            },
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CoveredByWorker> {
        // a panic while holding this lock cannot leave the map inconsistent
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The reply to [`Store::claim_soon`]: the runs claimed, once the batch holding the claim
/// committed. Dropping it before then gives back whatever the claim takes.
pub struct ClaimReply(tokio::sync::oneshot::Receiver<Result<Vec<ClaimedRun>, StoreError>>);

impl std::future::Future for ClaimReply {
    type Output = Result<Vec<ClaimedRun>, StoreError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|reply| reply.unwrap_or(Err(StoreError::Closed)))
    }
}
