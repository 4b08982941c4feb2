//! The single writer: one task owns the only writing connection and group-commits.
//!
//! Callers send a request and await its answer. The task takes every request waiting
//! (up to `MAX_BATCH`), applies them all in one `BEGIN IMMEDIATE` transaction with as few
//! statements as it can (see `apply`), commits, and only then answers. One commit is
//! shared by the whole batch, which is what lets SQLite keep up with thousands of runs a
//! second; nothing is acknowledged before it is committed. If a batch fails, each request is
//! retried alone so one bad request cannot fail the others (unless the database is busy
//! or unreachable, which fails them all alike).
//!
//! An idle worker's claim does not come back empty at once: it is parked here and run again
//! with every later batch, so a run inserted by the API is claimed in the same transaction
//! that stores it. A parked claim is answered, empty, at its deadline (the worker's poll
//! interval, or the earliest due time of a delayed run this writer stored), so runs that
//! other processes insert are still found.

mod apply;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::domain::{Inserted, NewRun, Progress, RunId, RunStatus, Signal, WorkerBeat};
use crate::store::hub::EventHub;
use crate::store::tally::Tally;
use crate::store::{
    AgentLimits, ClaimedRun, Fence, FinishedKey, Outcome, Purged, RequeueTarget, StoreError, Sweep,
    WebhookDelivery, WebhookResult, to_ms,
};

use super::{Conn, ConnectOpts, sql};
use apply::{Applied, InsertAnswer, apply_in_tx};
use sqlx::{ConnectOptions, Connection};

const MAX_BATCH: usize = 1024;

/// The longest one batch may take before its connection is given up.
const BATCH_TIMEOUT: Duration = Duration::from_secs(30);
const QUEUE_DEPTH: usize = 16 * 1024;

enum Op {
    Insert(Box<NewRun>),
    Claim {
        worker_id: Arc<str>,
        agents: Option<Arc<[String]>>,
        limit: usize,
        lease: Duration,
        /// Park until runs are claimable or this time (ms) passes; `None` answers at once.
        wait_until: Option<i64>,
        agent_limits: Option<AgentLimits>,
    },
    /// Redis delivery: marks an agent's next ready runs as sent, up to the window (and
    /// with a cap, up to the cap minus its running runs).
    Dispatch {
        agent: String,
        window: usize,
        cap: Option<u32>,
    },
    /// Redis delivery: claims runs from their messages (run id, dispatch seq).
    ClaimDispatched {
        worker_id: Arc<str>,
        messages: Vec<(RunId, i64)>,
        lease: Duration,
    },
    /// Redis delivery: these messages were lost; the runs are to be sent again.
    Undispatch(Vec<(RunId, i64)>),
    Finish(Fence, Outcome),
    Progress(Fence, Progress),
    Log(Fence, String, String),
    Checkpoint(Fence, serde_json::Value),
    /// Extends the leases of these attempts.
    Renew(Vec<Fence>, Duration),
    Sweep,
    Release(Arc<str>),
    /// Hands these attempts' runs back to the queue, giving back the attempt.
    HandBack(Vec<Fence>),
    Cancel(RunId),
    /// Consumes a pending signal for a running attempt.
    TakeSignal(Fence, Vec<String>),
    /// A signal sent to a run.
    Signal(RunId, String, serde_json::Value),
    ClaimWebhooks {
        limit: usize,
        lease: Duration,
    },
    WebhookDone(WebhookDelivery, WebhookResult),
    Requeue(RequeueTarget),
    /// A worker process's heartbeat (registers it the first time).
    Heartbeat(Box<WorkerBeat>),
    /// Retention: deletes up to `limit` finished runs of `status` between the keys.
    Purge {
        status: RunStatus,
        after: FinishedKey,
        before: FinishedKey,
        limit: usize,
    },
    /// Runs may have become claimable elsewhere (another process said so): parked claims
    /// look again.
    #[allow(
        dead_code,
        reason = "only PostgreSQL hears of other processes' runs (LISTEN)"
    )]
    Wake,
    Close,
}

enum Answer {
    Inserted(InsertAnswer),
    Claimed(Vec<ClaimedRun>),
    Applied(bool),
    Count(u64),
    Renewed(Vec<Fence>),
    Dispatched(Vec<(RunId, i64)>),
    Signal(Option<Signal>),
    Webhooks(Vec<WebhookDelivery>),
    /// A requested change: done, or refused.
    Changed(Result<u64, Refusal>),
    Swept(Sweep),
    Purged(Purged),
    Closed,
}

/// Why a requested change was not made.
pub(crate) enum Refusal {
    NotFound,
    /// The run's current status does not allow the change.
    WrongStatus(String),
    /// Something else prevents it; the message says what.
    Blocked(String),
}

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<Answer, StoreError>>,
}

pub(in crate::store) struct WriterHandle {
    tx: mpsc::Sender<Request>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl WriterHandle {
    pub(super) fn spawn(
        conn: Conn,
        options: ConnectOpts,
        hub: Arc<EventHub>,
        tally: Arc<Tally>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let task = tokio::spawn(Writer::new(conn, options, hub, tally).run(rx));
        Self {
            tx,
            task: Mutex::new(Some(task)),
        }
    }

    async fn call(&self, op: Op) -> Result<Answer, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request { op, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    pub(in crate::store) async fn insert(&self, run: NewRun) -> Result<Inserted, StoreError> {
        match self.call(Op::Insert(Box::new(run))).await? {
            Answer::Inserted(InsertAnswer::New(run)) => Ok(Inserted::New(run)),
            Answer::Inserted(InsertAnswer::Existing(id)) => Ok(Inserted::Existing(id)),
            Answer::Inserted(InsertAnswer::KeyReused) => Err(StoreError::Conflict(
                "this Idempotency-Key was already used with a different request".into(),
            )),
            Answer::Inserted(InsertAnswer::BadDependencies(problems)) => {
                Err(StoreError::BadDependencies(problems))
            }
            _ => unreachable!("insert answers with an insert"),
        }
    }

    pub(in crate::store) async fn claim(
        &self,
        worker_id: Arc<str>,
        agents: Option<Arc<[String]>>,
        limit: usize,
        lease: Duration,
        wait: Option<Duration>,
        agent_limits: Option<AgentLimits>,
    ) -> Result<Vec<ClaimedRun>, StoreError> {
        let op = Op::Claim {
            worker_id,
            agents,
            limit,
            lease,
            wait_until: wait.map(|w| now_ms() + w.as_millis() as i64),
            agent_limits: agent_limits.filter(|l| !l.is_empty()),
        };
        match self.call(op).await? {
            Answer::Claimed(runs) => Ok(runs),
            _ => unreachable!("claim answers with runs"),
        }
    }

    pub(in crate::store) async fn finish(
        &self,
        fence: Fence,
        outcome: Outcome,
    ) -> Result<bool, StoreError> {
        self.applied(Op::Finish(fence, outcome)).await
    }

    pub(in crate::store) async fn progress(
        &self,
        fence: Fence,
        progress: Progress,
    ) -> Result<bool, StoreError> {
        self.applied(Op::Progress(fence, progress)).await
    }

    pub(in crate::store) async fn log(
        &self,
        fence: Fence,
        level: &str,
        message: String,
    ) -> Result<bool, StoreError> {
        self.applied(Op::Log(fence, level.to_owned(), message))
            .await
    }

    pub(in crate::store) async fn checkpoint(
        &self,
        fence: Fence,
        state: serde_json::Value,
    ) -> Result<bool, StoreError> {
        self.applied(Op::Checkpoint(fence, state)).await
    }

    async fn applied(&self, op: Op) -> Result<bool, StoreError> {
        match self.call(op).await? {
            Answer::Applied(applied) => Ok(applied),
            _ => unreachable!("fenced writes answer with applied"),
        }
    }

    pub(in crate::store) async fn renew(
        &self,
        fences: Vec<Fence>,
        lease: Duration,
    ) -> Result<Vec<Fence>, StoreError> {
        match self.call(Op::Renew(fences, lease)).await? {
            Answer::Renewed(held) => Ok(held),
            _ => unreachable!("renew answers with the leases still held"),
        }
    }

    pub(in crate::store) async fn dispatch(
        &self,
        agent: String,
        window: usize,
        cap: Option<u32>,
    ) -> Result<Vec<(RunId, i64)>, StoreError> {
        match self.call(Op::Dispatch { agent, window, cap }).await? {
            Answer::Dispatched(sent) => Ok(sent),
            _ => unreachable!("dispatch answers with the runs it marked"),
        }
    }

    pub(in crate::store) async fn claim_dispatched(
        &self,
        worker_id: Arc<str>,
        messages: Vec<(RunId, i64)>,
        lease: Duration,
    ) -> Result<Vec<ClaimedRun>, StoreError> {
        let op = Op::ClaimDispatched {
            worker_id,
            messages,
            lease,
        };
        match self.call(op).await? {
            Answer::Claimed(runs) => Ok(runs),
            _ => unreachable!("claim_dispatched answers with claimed runs"),
        }
    }

    pub(in crate::store) async fn undispatch(
        &self,
        messages: Vec<(RunId, i64)>,
    ) -> Result<u64, StoreError> {
        self.count(Op::Undispatch(messages)).await
    }

    pub(in crate::store) async fn hand_back(&self, fences: Vec<Fence>) -> Result<u64, StoreError> {
        self.count(Op::HandBack(fences)).await
    }

    pub(in crate::store) async fn release(&self, worker_id: Arc<str>) -> Result<u64, StoreError> {
        self.count(Op::Release(worker_id)).await
    }

    async fn count(&self, op: Op) -> Result<u64, StoreError> {
        match self.call(op).await? {
            Answer::Count(n) => Ok(n),
            _ => unreachable!("answers with a count"),
        }
    }

    pub(in crate::store) async fn sweep(&self) -> Result<Sweep, StoreError> {
        match self.call(Op::Sweep).await? {
            Answer::Swept(sweep) => Ok(sweep),
            _ => unreachable!("sweep answers with a sweep"),
        }
    }

    pub(in crate::store) async fn take_signal(
        &self,
        fence: Fence,
        names: Vec<String>,
    ) -> Result<Option<Signal>, StoreError> {
        match self.call(Op::TakeSignal(fence, names)).await? {
            Answer::Signal(signal) => Ok(signal),
            _ => unreachable!("take_signal answers with a signal"),
        }
    }

    /// Returns whether the signal resumed the run.
    pub(in crate::store) async fn signal(
        &self,
        id: RunId,
        name: String,
        payload: serde_json::Value,
    ) -> Result<bool, StoreError> {
        match self.call(Op::Signal(id, name, payload)).await? {
            Answer::Changed(Ok(resumed)) => Ok(resumed > 0),
            Answer::Changed(Err(refusal)) => Err(refusal.into_error("signal")),
            _ => unreachable!("signal answers with a change"),
        }
    }

    pub(in crate::store) async fn claim_webhooks(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        match self.call(Op::ClaimWebhooks { limit, lease }).await? {
            Answer::Webhooks(claimed) => Ok(claimed),
            _ => unreachable!("answers with deliveries"),
        }
    }

    pub(in crate::store) async fn webhook_done(
        &self,
        delivery: WebhookDelivery,
        result: WebhookResult,
    ) -> Result<(), StoreError> {
        self.call(Op::WebhookDone(delivery, result))
            .await
            .map(|_| ())
    }

    pub(in crate::store) async fn heartbeat(&self, beat: WorkerBeat) -> Result<(), StoreError> {
        self.call(Op::Heartbeat(Box::new(beat))).await.map(|_| ())
    }

    pub(in crate::store) async fn purge(
        &self,
        status: RunStatus,
        after: FinishedKey,
        before: FinishedKey,
        limit: usize,
    ) -> Result<Purged, StoreError> {
        let op = Op::Purge {
            status,
            after,
            before,
            limit,
        };
        match self.call(op).await? {
            Answer::Purged(purged) => Ok(purged),
            _ => unreachable!("purge answers with what it deleted"),
        }
    }

    pub(in crate::store) async fn cancel(&self, id: RunId) -> Result<(), StoreError> {
        match self.call(Op::Cancel(id)).await? {
            Answer::Changed(Ok(_)) => Ok(()),
            Answer::Changed(Err(refusal)) => Err(refusal.into_error("cancel")),
            _ => unreachable!("cancel answers with a change"),
        }
    }

    pub(in crate::store) async fn requeue(&self, target: RequeueTarget) -> Result<u64, StoreError> {
        match self.call(Op::Requeue(target)).await? {
            Answer::Changed(Ok(n)) => Ok(n),
            Answer::Changed(Err(refusal)) => Err(refusal.into_error("retry")),
            _ => unreachable!("requeue answers with a change"),
        }
    }

    /// A handle that makes parked claims look for runs again, for a task that hears
    /// another process made some claimable.
    #[allow(
        dead_code,
        reason = "only PostgreSQL hears of other processes' runs (LISTEN)"
    )]
    pub(in crate::store) fn waker(&self) -> Waker {
        Waker {
            tx: self.tx.clone(),
        }
    }

    pub(in crate::store) async fn close(&self) {
        let _ = self.call(Op::Close).await;
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

#[allow(
    dead_code,
    reason = "only PostgreSQL hears of other processes' runs (LISTEN)"
)]
pub(in crate::store) struct Waker {
    tx: mpsc::Sender<Request>,
}

#[allow(
    dead_code,
    reason = "only PostgreSQL hears of other processes' runs (LISTEN)"
)]
impl Waker {
    /// `Closed` once the writer stopped.
    pub(in crate::store) async fn wake(&self) -> Result<(), StoreError> {
        let (reply, _answer) = oneshot::channel();
        self.tx
            .send(Request {
                op: Op::Wake,
                reply,
            })
            .await
            .map_err(|_| StoreError::Closed)
    }
}

fn now_ms() -> i64 {
    to_ms(chrono::Utc::now())
}

struct Writer {
    /// `None` after the connection broke; the next batch connects again.
    conn: Option<Conn>,
    options: ConnectOpts,
    hub: Arc<EventHub>,
    /// Where committed transitions are counted.
    tally: Arc<Tally>,
    /// Idle claims waiting for runs, in arrival order.
    parked: Vec<Request>,
    /// The earliest future due time of a run this writer stored (a delayed run or a retry).
    next_due: Option<i64>,
}

impl Writer {
    fn new(conn: Conn, options: ConnectOpts, hub: Arc<EventHub>, tally: Arc<Tally>) -> Self {
        Self {
            conn: Some(conn),
            options,
            hub,
            tally,
            parked: Vec::new(),
            next_due: None,
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut requests = Vec::with_capacity(MAX_BATCH);
        loop {
            let wake = self.wake_at();
            let woken = tokio::select! {
                received = rx.recv_many(&mut requests, MAX_BATCH) => {
                    if received == 0 {
                        return;
                    }
                    false
                }
                _ = sleep_until_ms(wake), if wake.is_some() => true,
            };
            // a wake-up from another process: parked claims look again; nothing to write
            let mut woken = woken;
            requests.retain_mut(|r| {
                if matches!(r.op, Op::Wake) {
                    woken = true;
                    let reply = std::mem::replace(&mut r.reply, oneshot::channel().0);
                    let _ = reply.send(Ok(Answer::Applied(true)));
                    false
                } else {
                    true
                }
            });
            if woken {
                // another process made runs ready (PostgreSQL NOTIFY), or one came due: the
                // Redis feeder tops up at once instead of at its next poll
                self.hub.runs_ready();
            }
            // a claim whose worker stopped waiting must not take runs nobody will start
            self.parked.retain(|r| !r.reply.is_closed());
            // parked claims found nothing; only a wake-up or a batch that may make runs
            // claimable can change that (a success or a progress report cannot)
            // with agent limits, a finish frees room for an agent that was at its limit
            let limited_parked = self.parked.iter().any(|r| {
                matches!(
                    &r.op,
                    Op::Claim {
                        agent_limits: Some(_),
                        ..
                    }
                )
            });
            let include_parked = woken
                || requests.iter().any(|r| may_ready_runs(&r.op))
                || (limited_parked && requests.iter().any(|r| frees_a_slot(&r.op)));
            if include_parked {
                requests.append(&mut self.parked);
            }
            if requests.is_empty() {
                continue;
            }
            let closing = requests.iter().any(|r| matches!(r.op, Op::Close));
            let answers = self.apply(&requests, include_parked).await;
            let mut undelivered = Vec::new();
            for (request, answer) in requests.drain(..).zip(answers) {
                match answer {
                    Ok(Answer::Claimed(runs)) if runs.is_empty() && !closing => {
                        if parked_until(&request).is_some_and(|until| until > now_ms()) {
                            self.parked.push(request);
                        } else {
                            let _ = request.reply.send(Ok(Answer::Claimed(runs)));
                        }
                    }
                    answer => {
                        if let Err(Ok(Answer::Claimed(runs))) = request.reply.send(answer) {
                            undelivered.extend(runs.iter().map(ClaimedRun::fence));
                        }
                    }
                }
            }
            if !undelivered.is_empty() {
                self.unclaim(undelivered).await;
            }
            if closing {
                rx.close();
                while let Some(late) = rx.recv().await {
                    let _ = late.reply.send(Err(StoreError::Closed));
                }
                return;
            }
        }
    }

    /// When the loop must wake with no new request: a parked claim's deadline, or a delayed
    /// run coming due while claims are parked.
    fn wake_at(&self) -> Option<i64> {
        let deadline = self.parked.iter().filter_map(parked_until).min()?;
        Some(self.next_due.map_or(deadline, |due| due.min(deadline)))
    }

    /// Applies a batch. When the parked claims were not part of it but it made runs ready
    /// anyway (a success that unblocked its dependents), they are woken at once.
    async fn apply(
        &mut self,
        requests: &[Request],
        parked_included: bool,
    ) -> Vec<Result<Answer, StoreError>> {
        let ops: Vec<&Op> = requests.iter().map(|r| &r.op).collect();
        let track = self.hub.is_followed();
        let mut result = self.run_batch(&ops, track).await;
        // a race lost to another process's writer is retried as a whole a few times
        for _ in 0..3 {
            match &result {
                Err(e) if e.lost_a_race() => {}
                _ => break,
            }
            result = self.run_batch(&ops, track).await;
        }
        match result {
            Ok(applied) => {
                self.after_commit(&applied, parked_included);
                applied.answers.into_iter().map(Ok).collect()
            }
            // a lone write keeps its own error: one refused for what it is must not become
            // "unavailable", which its caller (an HTTP client on 503, the outcome write)
            // would retry to no end
            Err(e) if ops.len() == 1 => vec![Err(e)],
            // a busy or unreachable database fails every op alike: each request gets the
            // error, so each caller can retry (a missing answer would reach it as `Closed`,
            // which callers rightly do not retry)
            Err(StoreError::Unavailable(reason)) => ops
                .iter()
                .map(|_| Err(StoreError::Unavailable(reason.clone())))
                .collect(),
            // one write may spoil the batch: each is applied on its own
            Err(batch_error) => {
                tracing::warn!(error = %batch_error, batch = ops.len(), "batch failed; applying its writes one by one");
                let mut answers = Vec::with_capacity(ops.len());
                for op in &ops {
                    let result = self.run_batch(&[op], track).await;
                    answers.push(match result {
                        Ok(mut applied) => {
                            self.after_commit(&applied, parked_included);
                            Ok(applied.answers.remove(0))
                        }
                        Err(e) => Err(e),
                    });
                }
                answers
            }
        }
    }

    /// What follows every commit: followers hear of new events, the Redis feeder of runs
    /// made ready, and parked claims that were not part of the batch are woken when it made
    /// runs ready now (a success that unblocked its dependents, say).
    fn after_commit(&mut self, applied: &Applied, parked_included: bool) {
        let ready_now = applied.ready_at.is_some_and(|t| t <= now_ms());
        if ready_now {
            self.hub.runs_ready();
        }
        self.note_due(applied.ready_at);
        if ready_now && !parked_included {
            self.next_due = Some(now_ms());
        }
        self.hub.committed(&applied.heads);
        self.tally.add(&applied.transitions);
    }

    /// Applies `ops` in one transaction on the writing connection (connecting first if it
    /// broke). A batch the database does not answer within [`BATCH_TIMEOUT`] (a network
    /// that dropped without a word, a server that hangs) fails, and its connection is
    /// dropped rather than reused mid-transaction.
    async fn run_batch(&mut self, ops: &[&Op], track: bool) -> Result<Applied, StoreError> {
        let conn = self.connection().await?;
        match tokio::time::timeout(BATCH_TIMEOUT, apply_in_tx(conn, ops, track)).await {
            Ok(Ok(applied)) => Ok(applied),
            Ok(Err(e)) => {
                self.check_connection().await;
                Err(e)
            }
            Err(_) => {
                tracing::warn!(
                    timeout_s = BATCH_TIMEOUT.as_secs(),
                    "the database did not answer a batch in time; reconnecting with the next one"
                );
                self.conn = None;
                Err(StoreError::Unavailable(format!(
                    "the database did not answer within {} s",
                    BATCH_TIMEOUT.as_secs()
                )))
            }
        }
    }

    /// The writing connection, connecting again if it broke.
    async fn connection(&mut self) -> Result<&mut Conn, StoreError> {
        if self.conn.is_none() {
            let conn = tokio::time::timeout(Duration::from_secs(10), self.options.connect())
                .await
                .map_err(|_| {
                    StoreError::Unavailable("connecting to the database timed out".into())
                })??;
            tracing::info!("the writer reconnected to the database");
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    /// After a failed batch: drops the connection if it no longer answers, so the next
    /// batch connects again (a restarted database server, a dropped network link).
    async fn check_connection(&mut self) {
        let alive = match self.conn.as_mut() {
            Some(conn) => tokio::time::timeout(Duration::from_secs(2), conn.ping())
                .await
                .is_ok_and(|r| r.is_ok()),
            None => false,
        };
        if !alive && let Some(conn) = self.conn.take() {
            tracing::warn!(
                "the writer's database connection broke; reconnecting with the next batch"
            );
            drop(conn);
        }
    }

    /// Remembers the earliest future due time. Runs due now were already seen by the
    /// batch's claims, which run last.
    fn note_due(&mut self, due: Option<i64>) {
        let now = now_ms();
        self.next_due = [self.next_due, due]
            .into_iter()
            .flatten()
            .filter(|&t| t > now)
            .min();
    }

    /// Hands back runs claimed for a worker that stopped waiting for them; parked claims
    /// get a chance at them at once.
    async fn unclaim(&mut self, fences: Vec<Fence>) {
        let op = Op::HandBack(fences);
        let track = self.hub.is_followed();
        match self.run_batch(&[&op], track).await {
            Ok(applied) => {
                self.after_commit(&applied, false);
                // parked claims get a chance at the runs at once
                self.next_due = Some(now_ms());
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not hand back undelivered claims; they return when their lease expires")
            }
        }
    }
}

/// Whether applying `op` can make a run claimable now.
fn may_ready_runs(op: &Op) -> bool {
    match op {
        Op::Insert(_)
        | Op::HandBack(_)
        | Op::Release(_)
        | Op::Sweep
        | Op::Requeue(_)
        | Op::Signal(..)
        | Op::Wake
        | Op::Close => true,
        Op::Cancel(_) => false,
        // a retry comes due; a failure may create a compensation run
        Op::Finish(_, outcome) => !matches!(outcome, Outcome::Succeeded(_)),
        // a new claim is applied anyway; parked ones would find what it finds
        Op::Claim { .. }
        | Op::Dispatch { .. }
        | Op::ClaimDispatched { .. }
        | Op::Undispatch(_)
        | Op::Progress(..)
        | Op::Log(..)
        | Op::Checkpoint(..)
        | Op::TakeSignal(..)
        | Op::ClaimWebhooks { .. }
        | Op::WebhookDone(..)
        | Op::Renew(..)
        | Op::Heartbeat(_)
        | Op::Purge { .. } => false,
    }
}

/// Whether applying `op` may end a running attempt (room under an agent's limit).
fn frees_a_slot(op: &Op) -> bool {
    matches!(
        op,
        Op::Finish(..) | Op::Cancel(_) | Op::HandBack(_) | Op::Release(_) | Op::Sweep
    )
}

fn parked_until(request: &Request) -> Option<i64> {
    match request.op {
        Op::Claim { wait_until, .. } => wait_until,
        _ => None,
    }
}

async fn sleep_until_ms(at: Option<i64>) {
    let wait = at.map_or(0, |at| (at - now_ms()).max(0)) as u64;
    tokio::time::sleep(Duration::from_millis(wait)).await;
}
