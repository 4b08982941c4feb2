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
//!
//! A slot freed by a finishing attempt would otherwise wait for two commits: its outcome's,
//! then the next claim's, which apalis asks for only once the slot is free. So an attempt
//! claims its slot's next run itself ([`ClaimsAhead`]) just before it writes its outcome:
//! both ride in one batch, and the fetcher hands the run out when apalis asks. At most one
//! claim of this process waits in the writer at a time (the fetcher's or one sent ahead);
//! the others answer at once, so a run inserted wakes one claim, not one per slot. While
//! the fetcher's own claim waits, nothing is claimable and slots are free: an attempt
//! finishing then claims nothing ahead (an idle worker's runs cost no extra claim).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apalis_core::backend::custom::{BackendBuilder, CustomBackend};
use apalis_core::task::Task;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::context::WorkerContext;
use futures::future::BoxFuture;
use futures::stream::{BoxStream, FuturesUnordered};
use futures::{FutureExt, Sink, StreamExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::{AgentLimits, ClaimedRun, Store, StoreError};

use super::execute::InFlight;

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
    /// The claims finishing attempts sent ahead, for the fetcher to hand out.
    pub ahead: Arc<Ahead>,
}

/// Claims sent ahead by finishing attempts, shared by them and the current fetcher.
#[derive(Default)]
pub struct Ahead {
    state: Mutex<AheadState>,
    /// A claim was queued for the fetcher.
    sent: Notify,
}

#[derive(Default)]
struct AheadState {
    /// The fetcher taking the claims (each new one takes a new number); none while the
    /// worker loop restarts.
    fetcher: Option<u64>,
    fetchers: u64,
    /// Claims sent and not yet taken by the fetcher.
    queued: Vec<Claiming>,
    /// Runs claimed whose attempt has not started yet (buffered, or handed to apalis).
    unstarted: usize,
    /// Runs the claims sent ahead may still bring (their limits), until the fetcher reads
    /// their answers.
    promised: usize,
    /// Who sent the claim out that may wait in the writer, if one is.
    waiting: Option<Waiter>,
}

#[derive(Clone, Copy, PartialEq)]
enum Waiter {
    /// The fetcher, for the slots free when it claimed.
    Fetcher,
    /// A finishing attempt.
    Ahead,
}

/// A claim on its way: whether it may wait in the writer, and who sent it (a failing
/// claim of the fetcher's own counts towards stopping the worker loop).
struct Claiming {
    reply: BoxFuture<'static, Result<Vec<ClaimedRun>, StoreError>>,
    may_wait: bool,
    /// Sent ahead by a finishing attempt, for this many runs (counted in `promised`).
    ahead: Option<usize>,
}

/// A claim's answer, with what was said of it when it was sent.
struct Answered {
    may_wait: bool,
    ahead: Option<usize>,
    claimed: Result<Vec<ClaimedRun>, StoreError>,
}

impl Claiming {
    async fn answer(self) -> Answered {
        Answered {
            may_wait: self.may_wait,
            ahead: self.ahead,
            claimed: self.reply.await,
        }
    }
}

impl Ahead {
    fn lock(&self) -> std::sync::MutexGuard<'_, AheadState> {
        // every change under this lock leaves the state whole
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What an attempt needs to claim its slot's next run as it finishes.
pub(crate) struct ClaimsAhead {
    pub(crate) config: FetchConfig,
    pub(crate) inflight: InFlight,
    /// Fires at shutdown: no claims then.
    pub(crate) stop: CancellationToken,
}

impl ClaimsAhead {
    /// Called by an attempt whose agent returned, right before its outcome is written:
    /// claims a run for the slot it frees, queued for the fetcher, so that the claim and the
    /// outcome commit in one batch.
    pub(crate) fn claim_for_freed_slot(&self) {
        if self.stop.is_cancelled() {
            return;
        }
        let config = &self.config;
        let mut state = config.ahead.lock();
        if state.fetcher.is_none() {
            return;
        }
        // A claim of the fetcher's out means free slots and, once it waits, nothing to
        // claim (whatever makes runs claimable answers it): this slot's next run comes
        // from the fetcher. With none out, this claim may wait, and also claims for any
        // slot free (none usually); after it, each finishing attempt claims for its own.
        // (A claim sent ahead that waits means nothing was claimable when it looked, but
        // an attempt finishing meanwhile still claims for the slot it frees: an empty claim,
        // in a batch that writes outcomes anyway.)
        let may_wait = match state.waiting {
            Some(Waiter::Fetcher) => return,
            Some(Waiter::Ahead) => false,
            None => true,
        };
        // slots whose agent has not returned stay busy; runs claimed and not started, or on
        // their way, fill the others first: never more runs than slots, so none waits for
        // one long (its lease is renewed only once it executes)
        let busy = self.inflight.executing() + state.unstarted + state.promised;
        let limit = config.concurrency.saturating_sub(busy);
        if limit == 0 {
            return;
        }
        let Some(reply) = config.store.claim_soon(
            config.worker_id.clone(),
            Some(config.agents.clone()),
            limit,
            config.lease,
            may_wait.then_some(config.poll_interval),
            config.agent_limits.clone(),
        ) else {
            return;
        };
        if may_wait {
            state.waiting = Some(Waiter::Ahead);
        }
        state.promised += limit;
        state.queued.push(Claiming {
            reply: reply.boxed(),
            may_wait,
            ahead: Some(limit),
        });
        drop(state);
        config.ahead.sent.notify_one();
    }

    /// Called by an attempt as it starts: its run is no longer waiting for a slot.
    pub(crate) fn started(&self) {
        let mut state = self.config.ahead.lock();
        state.unstarted = state.unstarted.saturating_sub(1);
    }
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
    /// Its number among this process's fetchers (see `AheadState::fetcher`).
    number: u64,
    buffer: VecDeque<ClaimedRun>,
    /// Claims sent and not answered yet: its own, and those sent ahead.
    claims: FuturesUnordered<BoxFuture<'static, Answered>>,
    error_backoff: Duration,
    /// Claims that failed since the last that worked.
    failures: u32,
    /// Whether a claim has succeeded since this fetcher started.
    claimed_once: bool,
}

fn fetch_stream(config: FetchConfig, worker: WorkerContext) -> Fetch {
    let number = {
        let mut ahead = config.ahead.lock();
        ahead.fetchers += 1;
        // claims sent for an earlier fetcher are dropped with it
        *ahead = AheadState {
            fetcher: Some(ahead.fetchers),
            fetchers: ahead.fetchers,
            ..AheadState::default()
        };
        ahead.fetchers
    };
    let fetcher = Fetcher {
        config,
        worker,
        number,
        buffer: VecDeque::new(),
        claims: FuturesUnordered::new(),
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

impl Drop for Fetcher {
    /// The worker loop stopped (shutdown, or claims failing): the runs it holds and never
    /// handed to apalis go back to the queue. A claim not answered yet is dropped, and the
    /// writer gives back what it takes; one answered already is read here.
    fn drop(&mut self) {
        let mut held: Vec<ClaimedRun> = self.buffer.drain(..).collect();
        let mut answered = |claimed: Option<Answered>| {
            if let Some(Answered {
                claimed: Ok(runs), ..
            }) = claimed
            {
                held.extend(runs);
            }
        };
        // unconstrained: a task out of its budget would see an answer in as not yet in
        while let Some(Some(answer)) = tokio::task::unconstrained(self.claims.next()).now_or_never()
        {
            answered(Some(answer));
        }
        {
            let mut ahead = self.config.ahead.lock();
            if ahead.fetcher == Some(self.number) {
                for claim in ahead.queued.drain(..) {
                    answered(tokio::task::unconstrained(claim.answer()).now_or_never());
                }
                let fetchers = ahead.fetchers;
                *ahead = AheadState {
                    fetchers,
                    ..AheadState::default()
                };
            }
        }
        if held.is_empty() {
            return;
        }
        let fences: Vec<_> = held.iter().map(ClaimedRun::fence).collect();
        let store = self.config.store.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = store.hand_back(fences).await {
                        tracing::warn!(error = %e, "could not hand back runs claimed and never started; they return when their lease expires");
                    }
                });
            }
            Err(_) => tracing::warn!(
                runs = held.len(),
                "runs claimed and never started return when their lease expires"
            ),
        }
    }
}

impl Fetcher {
    /// Takes the claims sent ahead; with none out at all, sends one of its own that waits
    /// for runs, for every free slot.
    fn send_claims(&mut self) {
        let mut ahead = self.config.ahead.lock();
        for claim in ahead.queued.drain(..) {
            self.claims.push(claim.answer().boxed());
        }
        if !self.claims.is_empty() {
            return;
        }
        let free = self
            .config
            .concurrency
            .saturating_sub(self.worker.task_count())
            .max(1);
        let config = self.config.clone();
        let reply = async move {
            config
                .store
                .claim(
                    config.worker_id.clone(),
                    Some(config.agents.clone()),
                    free,
                    config.lease,
                    Some(config.poll_interval),
                    config.agent_limits.clone(),
                )
                .await
        };
        ahead.waiting = Some(Waiter::Fetcher);
        let claim = Claiming {
            reply: reply.boxed(),
            may_wait: true,
            ahead: None,
        };
        self.claims.push(claim.answer().boxed());
    }

    async fn next_run(&mut self) -> Result<ClaimedRun, QueueError> {
        loop {
            if let Some(run) = self.buffer.pop_front() {
                return Ok(run);
            }
            self.send_claims();
            let Answered {
                may_wait,
                ahead,
                claimed,
            } = tokio::select! {
                Some(answer) = self.claims.next() => answer,
                // a claim sent ahead joins those awaited
                _ = self.config.ahead.sent.notified() => continue,
            };
            {
                let mut state = self.config.ahead.lock();
                if may_wait {
                    state.waiting = None;
                }
                if let Some(limit) = ahead {
                    state.promised = state.promised.saturating_sub(limit);
                }
                if let Ok(runs) = &claimed {
                    state.unstarted += runs.len();
                }
            }
            let claimed = match claimed {
                // a claim sent ahead that failed is as good as empty: the fetcher's own
                // claim, sent next if no other is out, meets the same error and backs off
                Err(e) if ahead.is_some() => {
                    tracing::debug!(error = %e, "a claim sent ahead failed");
                    continue;
                }
                claimed => claimed,
            };
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
