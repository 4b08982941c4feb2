//! Running one claimed attempt: call the agent under its timeout, then write the outcome.

use std::collections::HashMap;
use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apalis_core::task::data::Data;
use futures::FutureExt;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::store::{ClaimedRun, Fence, Outcome, Store};
use crate::telemetry::{AttemptOutcome, Metrics};

use super::outcome::{Failure, decide};
use super::{AgentError, AgentRegistry, RunContext};

/// How long an agent whose token fired (timeout, shutdown) gets to stop before it is dropped
/// or its run handed back.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(1);

/// The attempts this process is executing, with their cancellation tokens and whether
/// their agent has returned (the outcome is being written).
#[derive(Clone, Default)]
pub(crate) struct InFlight(Arc<InFlightInner>);

#[derive(Default)]
struct InFlightInner {
    tokens: Mutex<HashMap<Fence, Attempt>>,
    /// How many of them are `writing` (changed under the `tokens` lock), so a finishing
    /// attempt counts the others executing without walking every attempt.
    writing: AtomicUsize,
    shutting_down: AtomicBool,
    emptied: Notify,
}

/// One executing attempt.
struct Attempt {
    token: CancellationToken,
    /// The agent returned and the outcome is being written: the lease is still renewed, but
    /// a renewal that no longer finds the run (the outcome committed first) is no loss.
    writing: bool,
}

impl InFlight {
    fn start(&self, fence: Fence) -> CancellationToken {
        let token = CancellationToken::new();
        let attempt = Attempt {
            token: token.clone(),
            writing: false,
        };
        self.lock().insert(fence, attempt);
        token
    }

    /// The attempt's agent returned; its outcome is written next.
    fn writing(&self, fence: &Fence) {
        if let Some(attempt) = self.lock().get_mut(fence)
            && !attempt.writing
        {
            attempt.writing = true;
            self.0.writing.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn end(&self, fence: &Fence) {
        let mut tokens = self.lock();
        if tokens.remove(fence).is_some_and(|a| a.writing) {
            self.0.writing.fetch_sub(1, Ordering::SeqCst);
        }
        if tokens.is_empty() {
            self.0.emptied.notify_waiters();
        }
    }

    /// How many attempts are executing.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// How many attempts are executing whose agent has not returned yet.
    pub(crate) fn executing(&self) -> usize {
        let tokens = self.lock();
        tokens.len() - self.0.writing.load(Ordering::SeqCst)
    }

    /// The attempts whose leases must be renewed.
    pub(crate) fn fences(&self) -> Vec<Fence> {
        self.lock().keys().cloned().collect()
    }

    /// Tells one attempt to stop (it lost its run). False when it had already ended or
    /// its agent has returned: its outcome write is fenced, and says so if the run is lost.
    pub(crate) fn cancel(&self, fence: &Fence) -> bool {
        match self.lock().get(fence) {
            Some(attempt) if !attempt.writing => {
                attempt.token.cancel();
                true
            }
            _ => false,
        }
    }

    /// Tells every attempt to stop because the worker is shutting down; returns how many.
    pub(crate) fn shut_down(&self) -> usize {
        self.0.shutting_down.store(true, Ordering::SeqCst);
        let tokens = self.lock();
        tokens.values().for_each(|attempt| attempt.token.cancel());
        tokens.len()
    }

    fn is_shutting_down(&self) -> bool {
        self.0.shutting_down.load(Ordering::SeqCst)
    }

    /// Waits until no attempt is executing, at most `within`; true if none is.
    pub(crate) async fn wait_empty(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let emptied = self.0.emptied.notified();
            if self.lock().is_empty() {
                return true;
            }
            if tokio::time::timeout_at(deadline, emptied).await.is_err() {
                return self.lock().is_empty();
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Fence, Attempt>> {
        // a panic while holding this lock cannot leave the map inconsistent
        self.0.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Shared by every attempt a worker runs.
pub(crate) struct Executor {
    pub(crate) store: Store,
    pub(crate) registry: Arc<AgentRegistry>,
    pub(crate) inflight: InFlight,
    pub(crate) status: Arc<super::WorkerStatus>,
    pub(crate) max_result_bytes: usize,
    /// `--agent-limit`: the Redis feeder keeps each limited agent within it.
    pub(crate) agent_limits: crate::store::AgentLimits,
    /// Handed to every attempt as `ctx.http()`: one connection pool per worker process.
    pub(crate) http: super::EgressClient,
    pub(crate) metrics: Metrics,
    /// Handed to every attempt (`ctx.secret(name)`).
    pub(crate) secrets: crate::domain::NamedSecrets,
    /// Claims a finishing attempt's next run with its outcome (the runs-table backend).
    pub(crate) claims_ahead: Option<super::backend::ClaimsAhead>,
}

/// The apalis handler. Retries are decided here and written to the run, so apalis is
/// always told the task is done.
pub(crate) async fn execute(run: ClaimedRun, exec: Data<Arc<Executor>>) -> Result<(), Infallible> {
    run_attempt(&exec, run).await;
    Ok(())
}

/// A result over `max_bytes` (as JSON) fails the attempt for good: the run table is no
/// place for bulk data, and the agent would produce it again on a retry.
pub(crate) fn within(
    result: serde_json::Value,
    max_bytes: usize,
) -> Result<serde_json::Value, Failure> {
    let json = serde_json::to_vec(&result).expect("a JSON value serialises");
    // a NUL character is refused too, and looked for only where the text shows its escape
    if let Some(at) = crate::domain::may_hold_nul(&json)
        .then(|| crate::domain::nul_in(&result))
        .flatten()
    {
        let at = if at.is_empty() {
            "the result".to_owned()
        } else {
            format!("`{at}`")
        };
        return Err(Failure::Agent(AgentError::permanent(format!(
            "the result holds a NUL character (U+0000) at {at}, which the database cannot store"
        ))));
    }
    let size = json.len();
    if size <= max_bytes {
        return Ok(result);
    }
    Err(Failure::Agent(AgentError::permanent(format!(
        "the result is {size} bytes of JSON, over the {max_bytes}-byte limit (--max-result-bytes); store bulk data elsewhere and return a reference"
    ))))
}

/// Runs one claimed attempt and records its outcome (or hands the run back at shutdown).
/// Shared by both backends: the runs-table fetcher and Redis delivery. With tracing on,
/// it runs in an `attempt` span in the trace of the request that created the run (every
/// attempt, retries too, continues the same stored parent).
pub(crate) async fn run_attempt(exec: &Executor, run: ClaimedRun) {
    let span = crate::telemetry::attempt_span(
        &run.id,
        run.attempt,
        &run.agent,
        run.trace_parent.as_deref(),
    );
    run_attempt_in_span(exec, run).instrument(span).await
}

async fn run_attempt_in_span(exec: &Executor, run: ClaimedRun) {
    let fence = run.fence();
    let cancel = exec.inflight.start(fence.clone());
    if let Some(ahead) = &exec.claims_ahead {
        ahead.started();
    }
    let waited = Duration::from_millis(run.queue_wait_ms);
    exec.metrics.attempt_started(&run.agent, waited);
    let started = std::time::Instant::now();
    let ended = attempt(exec, &run, cancel).await;
    let took = started.elapsed();
    if ended.is_err() && exec.inflight.is_shutting_down() {
        // stopped by shutdown: the run goes back to the queue, the attempt is not counted
        if let Err(e) = exec.store.hand_back(vec![fence.clone()]).await {
            tracing::warn!(run.id = %run.id, error = %e, "could not hand the run back; it returns when its lease expires");
        }
        let handed_back = AttemptOutcome::HandedBack;
        exec.metrics.attempt_finished(&run.agent, handed_back, took);
        exec.inflight.end(&fence);
        return;
    }
    exec.inflight.writing(&fence);
    let ended = ended.and_then(|result| within(result, exec.max_result_bytes));
    let outcome = decide(&(&run).into(), ended, chrono::Utc::now(), &mut rand::rng());
    let (status, ended_as) = match &outcome {
        Outcome::Succeeded(_) => ("succeeded", AttemptOutcome::Succeeded),
        Outcome::Retry { .. } => ("retrying", AttemptOutcome::Retry),
        Outcome::Failed(_) => ("failed", AttemptOutcome::Failed),
        Outcome::Wait { .. } => ("waiting", AttemptOutcome::Waiting),
    };
    if let Some(ahead) = &exec.claims_ahead {
        // sent right before the outcome, so both land in the writer's next batch
        ahead.claim_for_freed_slot();
    }
    let recorded = match write_outcome(&exec.store, fence.clone(), outcome).await {
        Ok(true) => {
            tracing::debug!(run.id = %run.id, run.attempt = run.attempt, run.status = status, "attempt finished");
            ended_as
        }
        Ok(false) => {
            // a run cancelled by request is no surprise: its attempt's end is not news
            let cancelled = exec
                .store
                .get_run(run.id)
                .await
                .is_ok_and(|r| r.status == crate::domain::RunStatus::Cancelled);
            if cancelled {
                tracing::info!(run.id = %run.id, run.attempt = run.attempt, "the attempt of a cancelled run stopped");
            } else {
                tracing::warn!(
                    run.id = %run.id, run.attempt = run.attempt,
                    "attempt finished after losing its run (lease expired or handed back); outcome dropped"
                );
            }
            AttemptOutcome::Lost
        }
        Err(e) => {
            tracing::error!(
                run.id = %run.id, run.attempt = run.attempt, error = %e,
                "could not record the attempt's outcome; the run will be retried when its lease expires"
            );
            AttemptOutcome::Unrecorded
        }
    };
    exec.metrics.attempt_finished(&run.agent, recorded, took);
    exec.status.processed_one();
    exec.inflight.end(&fence);
}

async fn attempt(
    exec: &Executor,
    run: &ClaimedRun,
    cancel: CancellationToken,
) -> Result<Value, Failure> {
    let Some(agent) = exec.registry.get(&run.agent) else {
        // claims name only the agents this worker serves; a registry that shrank is a bug
        return Err(Failure::Agent(AgentError::permanent(format!(
            "agent `{}` is not registered in this worker",
            run.agent
        ))));
    };
    let ctx = RunContext::new(
        run,
        exec.store.clone(),
        cancel.clone(),
        exec.http.clone(),
        exec.secrets.clone(),
    );
    let timeout = Duration::from_millis(run.timeout_ms);
    // the run's deadline can cut the attempt shorter than its own timeout
    let to_deadline = run
        .deadline
        .map(|d| (d - chrono::Utc::now()).to_std().unwrap_or_default());
    let limit = to_deadline.map_or(timeout, |d| d.min(timeout));
    let cut_by_deadline = to_deadline.is_some_and(|d| d < timeout);
    let work = AssertUnwindSafe(agent.run(ctx, run.input.clone())).catch_unwind();
    let mut work = std::pin::pin!(work);
    tokio::select! {
        ended = &mut work => match ended {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(e)) => Err(Failure::Agent(e)),
            Err(panic) => Err(Failure::Panicked(panic_message(&panic))),
        },
        _ = tokio::time::sleep(limit) => {
            // let the agent see its token fire and clean up, briefly, then drop it
            cancel.cancel();
            let _ = tokio::time::timeout(STOP_GRACE, &mut work).await;
            Err(if cut_by_deadline { Failure::DeadlineExceeded } else { Failure::Timeout(limit) })
        }
    }
}

/// Retries a failed write a few times: the outcome is the one thing an attempt must keep.
async fn write_outcome(
    store: &Store,
    fence: crate::store::Fence,
    outcome: Outcome,
) -> Result<bool, crate::store::StoreError> {
    let mut delay = Duration::from_millis(50);
    for _ in 0..5 {
        match store.finish(fence.clone(), outcome.clone()).await {
            // a full storage may free up: the attempt's outcome is worth the wait
            Err(e)
                if e.is_unavailable() || matches!(e, crate::store::StoreError::StorageFull(_)) =>
            {
                tracing::warn!(run.id = %fence.run_id, error = %e, "database unavailable; retrying the outcome write");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            other => return other,
        }
    }
    store.finish(fence, outcome).await
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RunId;

    fn fence() -> Fence {
        Fence {
            run_id: RunId::new(),
            claim: 1,
            attempt: 1,
            worker_id: Arc::from("w"),
        }
    }

    #[test]
    fn a_lost_run_stops_its_agent_but_not_an_attempt_whose_outcome_is_being_written() {
        let inflight = InFlight::default();
        let (executing, returned) = (fence(), fence());
        let executing_token = inflight.start(executing.clone());
        let returned_token = inflight.start(returned.clone());
        inflight.writing(&returned);
        assert!(inflight.cancel(&executing));
        assert!(executing_token.is_cancelled());
        // its outcome may have committed before the renewal looked: no loss to report
        assert!(!inflight.cancel(&returned));
        assert!(!returned_token.is_cancelled());
        // both are still renewed until they end
        assert_eq!(inflight.fences().len(), 2);
        assert_eq!(inflight.executing(), 1, "the returned one frees its slot");
        inflight.end(&returned);
        assert!(!inflight.cancel(&returned));
        assert_eq!(inflight.fences(), vec![executing]);
        assert_eq!(inflight.executing(), 1);
    }
}
