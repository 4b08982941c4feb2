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
        for (worker, fences) in by_worker {
            let fresh = self.covered.fresh(&worker, &fences);
            let kept = command!(
                self,
                AttemptRenew {
                    worker: worker.clone(),
                    fences,
                    fresh,
                    lease
                }
            )?;
            self.covered.set(&worker, &kept, lease);
            held.extend(kept);
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

/// The attempts, by worker, whose runs this process saw covered by their worker's lease at
/// its last renewal there: the next renewal checks only the others one by one. A worker's
/// entry is replaced at each of its renewals (attempts that ended drop out) and forgotten
/// when it has not renewed here for a while. Another process renewing for the same worker
/// (an external worker's heartbeats reaching several API processes) checks once what it has
/// not seen itself.
#[derive(Default)]
pub(super) struct Covered(std::sync::Mutex<CoveredByWorker>);

/// Per worker: when it last renewed here, and its attempts seen covered then.
type CoveredByWorker = HashMap<Arc<str>, (std::time::Instant, HashSet<(RunId, u32)>)>;

impl Covered {
    fn fresh(&self, worker: &Arc<str>, fences: &[Fence]) -> Vec<Fence> {
        let map = self.lock();
        let seen = map.get(worker).map(|(_, seen)| seen);
        fences
            .iter()
            .filter(|f| !seen.is_some_and(|s| s.contains(&(f.run_id, f.claim))))
            .cloned()
            .collect()
    }

    fn set(&self, worker: &Arc<str>, held: &[Fence], lease: Duration) {
        let mut map = self.lock();
        let now = std::time::Instant::now();
        map.retain(|_, (at, _)| now.duration_since(*at) < lease * 4);
        let seen = held.iter().map(|f| (f.run_id, f.claim)).collect();
        map.insert(worker.clone(), (now, seen));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CoveredByWorker> {
        // a panic while holding this lock cannot leave the map inconsistent
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
