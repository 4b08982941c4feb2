//! [`Store`]'s side of Redis delivery: marking ready runs as sent, claiming them from their
//! messages, and forgetting messages Redis lost.

use super::*;

impl Store {
    /// Redis delivery: marks up to `window` minus the already sent ready runs of `agent`
    /// as sent, in claim order (priority, then due time), each with a new dispatch seq.
    /// With `cap` (the agent's `--agent-limit`), runs sent plus runs running stay within
    /// it. Returns (id, seq) in that order; the caller pushes one message per run.
    pub async fn dispatch(
        &self,
        agent: String,
        window: usize,
        cap: Option<u32>,
    ) -> Result<Vec<(RunId, i64)>, StoreError> {
        command!(self, RunDispatch { agent, window, cap })
    }
    /// Redis delivery: claims the runs of these messages (id, dispatch seq) for
    /// `worker_id`, as `claim` does; a message that is stale (superseded, its run claimed,
    /// cancelled or otherwise changed) claims nothing.
    pub async fn claim_dispatched(
        &self,
        worker_id: Arc<str>,
        messages: Vec<(RunId, i64)>,
        lease: Duration,
    ) -> Result<Vec<ClaimedRun>, StoreError> {
        command!(
            self,
            RunClaimDispatched {
                worker_id,
                messages,
                lease
            }
        )
    }
    /// Redis delivery: runs of `agents` marked as sent more than `older_than` ago, oldest
    /// first, up to `limit`, as (agent, id, dispatch seq).
    pub async fn dispatched_before(
        &self,
        older_than: Duration,
        limit: usize,
        agents: &[String],
    ) -> Result<Vec<(String, RunId, i64)>, StoreError> {
        let before = self.now_ms() - older_than.as_millis() as i64;
        on_engine!(self, e => e.dispatched_before(before, limit, agents).await)
    }
    /// Redis delivery: these messages are lost (Redis restarted or was flushed); their runs
    /// are sent again by the next top-up. A message no longer current changes nothing.
    pub async fn undispatch(&self, messages: Vec<(RunId, i64)>) -> Result<u64, StoreError> {
        command!(self, RunUndispatch(messages))
    }
}
