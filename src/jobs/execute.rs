//! Running one claimed attempt: call the agent under its timeout, then write the outcome.

use std::collections::HashMap;
use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apalis_core::task::data::Data;
use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::domain::{RunError, RunErrorKind, RunId};
use crate::store::{ClaimedRun, Outcome, Store};

use super::outcome::{Failure, decide};
use super::{AgentRegistry, RunContext};

/// How long a timed-out agent gets, after its token fired, before it is dropped.
const TIMEOUT_GRACE: Duration = Duration::from_secs(1);

/// The cancellation tokens of the attempts this process is running.
#[derive(Clone, Default)]
pub(crate) struct InFlight(Arc<Mutex<HashMap<RunId, CancellationToken>>>);

impl InFlight {
    fn start(&self, id: RunId) -> CancellationToken {
        let token = CancellationToken::new();
        self.lock().insert(id, token.clone());
        token
    }

    fn end(&self, id: RunId) {
        self.lock().remove(&id);
    }

    /// Fires every running attempt's token (after their runs were handed back).
    pub(crate) fn cancel_all(&self) -> usize {
        let tokens = std::mem::take(&mut *self.lock());
        tokens.values().for_each(CancellationToken::cancel);
        tokens.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RunId, CancellationToken>> {
        // a panic while holding this lock cannot leave the map inconsistent
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Shared by every attempt a worker runs.
pub(crate) struct Executor {
    pub(crate) store: Store,
    pub(crate) registry: Arc<AgentRegistry>,
    pub(crate) inflight: InFlight,
}

/// The apalis handler. Retries are decided here and written to the run, so apalis is
/// always told the task is done.
pub(crate) async fn execute(run: ClaimedRun, exec: Data<Arc<Executor>>) -> Result<(), Infallible> {
    let cancel = exec.inflight.start(run.id);
    let outcome = attempt(&exec, &run, cancel.clone()).await;
    let fence = run.fence();
    let status = match &outcome {
        Outcome::Succeeded(_) => "succeeded",
        Outcome::Retry { .. } => "retrying",
        Outcome::Failed(_) => "failed",
    };
    match write_outcome(&exec.store, fence, outcome).await {
        Ok(true) => {
            tracing::debug!(run.id = %run.id, run.attempt = run.attempt, run.status = status, "attempt finished")
        }
        Ok(false) => tracing::warn!(
            run.id = %run.id, run.attempt = run.attempt,
            "attempt finished after losing its run (lease expired, cancelled or handed back); outcome dropped"
        ),
        Err(e) => tracing::error!(
            run.id = %run.id, run.attempt = run.attempt, error = %e,
            "could not record the attempt's outcome; the run will be retried when its lease expires"
        ),
    }
    exec.inflight.end(run.id);
    Ok(())
}

async fn attempt(exec: &Executor, run: &ClaimedRun, cancel: CancellationToken) -> Outcome {
    let Some(agent) = exec.registry.get(&run.agent) else {
        // claims name only the agents this worker serves; a registry that shrank is a bug
        return Outcome::Failed(RunError {
            kind: RunErrorKind::AgentError,
            message: format!("agent `{}` is not registered in this worker", run.agent),
        });
    };
    let ctx = RunContext::new(
        run.fence(),
        run.max_attempts,
        exec.store.clone(),
        cancel.clone(),
    );
    let limit = Duration::from_millis(run.timeout_ms);
    let work = AssertUnwindSafe(agent.run(ctx, run.input.clone())).catch_unwind();
    let mut work = std::pin::pin!(work);
    let ended = tokio::select! {
        ended = &mut work => match ended {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(e)) => Err(Failure::Agent(e)),
            Err(panic) => Err(Failure::Panicked(panic_message(&panic))),
        },
        _ = tokio::time::sleep(limit) => {
            // let the agent see its token fire and clean up, briefly, then drop it
            cancel.cancel();
            let _ = tokio::time::timeout(TIMEOUT_GRACE, &mut work).await;
            Err(Failure::Timeout(limit))
        }
    };
    decide(run, ended, chrono::Utc::now(), &mut rand::rng())
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
            Err(crate::store::StoreError::Unavailable(e)) => {
                tracing::warn!(run.id = %fence.run_id, error = %e, "database busy; retrying outcome write");
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
