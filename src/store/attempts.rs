//! [`Store`]'s attempts: claiming runs, and every fenced write of a running attempt
//! (progress, logs, checkpoints, signals taken, its outcome, its lease), and taking back
//! the runs of attempts that ended without one.

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
    /// Extends the leases of the attempts a worker is executing. Returns those it still
    /// holds; an attempt missing from the answer has lost its run (swept or handed back).
    pub async fn renew_leases(
        &self,
        fences: Vec<Fence>,
        lease: Duration,
    ) -> Result<Vec<Fence>, StoreError> {
        command!(self, AttemptRenew { fences, lease })
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
