//! The apalis backend over the runs table: a fetcher stream that claims due runs.
//!
//! apalis polls the stream only when the worker has a free slot. Each poll claims at most
//! as many runs as there are free slots (claiming more would start their leases while
//! they wait) and keeps any surplus in a small buffer. When nothing is due the claim waits
//! in the store's writer, which answers it in the same transaction that makes a run
//! claimable, or empty after the poll interval (runs inserted by other processes). The
//! stream never ends; a store error is logged and retried with backoff (1 s, 2 s), and
//! only a claim failing [`CLAIM_FAILURES_TO_STOP`] times in a row fails the stream, which
//! stops the apalis worker for its supervisor to restart (see `supervise`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use apalis_core::backend::custom::{BackendBuilder, CustomBackend};
use apalis_core::task::Task;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::context::WorkerContext;
use futures::stream::BoxStream;
use futures::{Sink, StreamExt};

use crate::store::{AgentLimits, ClaimedRun, Store};

use super::QueueError;

/// What a fetcher needs to claim runs for one worker process.
#[derive(Clone)]
pub struct FetchConfig {
    pub store: Store,
    pub worker_id: Arc<str>,
    /// The agents this worker serves.
    pub agents: Arc<[String]>,
    pub concurrency: usize,
    pub lease: Duration,
    pub poll_interval: Duration,
    /// Where a failing claim is reported (registry, `/readyz`).
    pub status: Arc<super::WorkerStatus>,
    pub agent_limits: Option<AgentLimits>,
}

/// Claims failing this many times in a row (a few seconds of a database that does not
/// answer: they wait 1 s, then 2 s, between) stop the worker loop.
pub(crate) const CLAIM_FAILURES_TO_STOP: u32 = 3;

type Fetch = BoxStream<'static, Result<Option<Task<ClaimedRun>>, QueueError>>;
type Push = std::pin::Pin<Box<dyn Sink<Task<ClaimedRun>, Error = QueueError> + Send>>;

/// The runs-table backend type the worker is built with.
pub type RunsBackend = CustomBackend<ClaimedRun, FetchConfig, Fetch, Push, ()>;

pub fn runs_backend(config: FetchConfig) -> RunsBackend {
    BackendBuilder::new()
        .database(config)
        .fetcher(|config: &mut FetchConfig, _: &(), worker: &WorkerContext| {
            fetch_stream(config.clone(), worker.clone())
        })
        .sink(|_: &mut FetchConfig, _: &()| {
            // Runs enter through `Store::insert_run` (the API), never through apalis.
            let refuse = futures::sink::unfold((), |(), _task: Task<ClaimedRun>| {
                futures::future::ready(Err::<(), _>(QueueError::PushUnsupported))
            });
            Box::pin(refuse) as Push
        })
        .build()
        .expect("database, fetcher and sink are all set")
}

struct Fetcher {
    config: FetchConfig,
    worker: WorkerContext,
    buffer: VecDeque<ClaimedRun>,
    error_backoff: Duration,
    /// Claims that failed since the last that worked.
    failures: u32,
    /// Whether a claim has succeeded since this fetcher started.
    claimed_once: bool,
}

fn fetch_stream(config: FetchConfig, worker: WorkerContext) -> Fetch {
    let fetcher = Fetcher {
        config,
        worker,
        buffer: VecDeque::new(),
        error_backoff: Duration::ZERO,
        failures: 0,
        claimed_once: false,
    };
    futures::stream::unfold(fetcher, |mut f| async move {
        let next = f.next_run().await.map(|run| Some(into_task(run)));
        Some((next, f))
    })
    .boxed()
}

/// The task id includes the claim counter, so a re-claimed run never collides with a stale
/// task of the same run (the attempt number alone can repeat after a hand-back).
fn into_task(run: ClaimedRun) -> Task<ClaimedRun> {
    let id = TaskId::String(format!("{}:{}", run.id, run.claim));
    // apalis counts the attempt up by one when the task starts.
    let attempt = run.attempt.saturating_sub(1) as usize;
    TaskBuilder::new(run).task_id(id).attempt(attempt).build()
}

impl Fetcher {
    async fn next_run(&mut self) -> Result<ClaimedRun, QueueError> {
        loop {
            if let Some(run) = self.buffer.pop_front() {
                return Ok(run);
            }
            let free = self
                .config
                .concurrency
                .saturating_sub(self.worker.task_count())
                .max(1);
            let claimed = self
                .config
                .store
                .claim(
                    self.config.worker_id.clone(),
                    Some(self.config.agents.clone()),
                    free,
                    self.config.lease,
                    Some(self.config.poll_interval),
                    self.config.agent_limits.clone(),
                )
                .await;
            match claimed {
                Ok(runs) => {
                    self.config.status.worked();
                    if !self.error_backoff.is_zero() {
                        tracing::info!("claiming runs works again");
                    }
                    // also clears the reason a restarted worker loop left
                    if !self.claimed_once || !self.error_backoff.is_zero() {
                        self.claimed_once = true;
                        self.config.status.claim_failed(None);
                    }
                    self.error_backoff = Duration::ZERO;
                    self.failures = 0;
                    self.buffer.extend(runs);
                }
                Err(e) => {
                    self.failures += 1;
                    if self.failures >= CLAIM_FAILURES_TO_STOP {
                        self.failures = 0;
                        return Err(QueueError::ClaimsFailing(
                            CLAIM_FAILURES_TO_STOP,
                            e.to_string(),
                        ));
                    }
                    // 1 s doubling: a database that is down is not hammered
                    self.error_backoff = (self.error_backoff * 2)
                        .clamp(Duration::from_secs(1), Duration::from_secs(60));
                    tracing::warn!(error = %e, retry_in_ms = self.error_backoff.as_millis() as u64, "claiming runs failed");
                    self.config
                        .status
                        .claim_failed(Some(format!("claiming runs failed: {e}")));
                    tokio::time::sleep(self.error_backoff).await;
                }
            }
        }
    }
}
