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
mod sql;

use std::sync::Arc;
use std::time::Duration;

use sqlx::SqliteConnection;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::domain::{Inserted, NewRun, Progress, RunId, Signal};
use crate::store::hub::EventHub;
use crate::store::{
    ClaimedRun, Fence, Outcome, RequeueFilter, StoreError, Sweep, WebhookDelivery, WebhookResult,
    to_ms,
};

use apply::{InsertAnswer, apply_in_tx};

const MAX_BATCH: usize = 1024;
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
    },
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
    Close,
}

enum Answer {
    Inserted(InsertAnswer),
    Claimed(Vec<ClaimedRun>),
    Applied(bool),
    Count(u64),
    Renewed(Vec<Fence>),
    Signal(Option<Signal>),
    Webhooks(Vec<WebhookDelivery>),
    /// A requested change: done, or refused.
    Changed(Result<u64, Refusal>),
    Swept(Sweep),
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

/// Which failed runs to put back in the queue.
pub(crate) enum RequeueTarget {
    One(RunId),
    /// Up to `limit` failed runs matching the filter, oldest first.
    Failed(RequeueFilter),
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
    pub(super) fn spawn(conn: SqliteConnection, hub: Arc<EventHub>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let task = tokio::spawn(Writer::new(conn, hub).run(rx));
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
    ) -> Result<Vec<ClaimedRun>, StoreError> {
        let op = Op::Claim {
            worker_id,
            agents,
            limit,
            lease,
            wait_until: wait.map(|w| now_ms() + w.as_millis() as i64),
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

    pub(in crate::store) async fn close(&self) {
        let _ = self.call(Op::Close).await;
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

fn now_ms() -> i64 {
    to_ms(chrono::Utc::now())
}

struct Writer {
    conn: SqliteConnection,
    hub: Arc<EventHub>,
    /// Idle claims waiting for runs, in arrival order.
    parked: Vec<Request>,
    /// The earliest future due time of a run this writer stored (a delayed run or a retry).
    next_due: Option<i64>,
}

impl Writer {
    fn new(conn: SqliteConnection, hub: Arc<EventHub>) -> Self {
        Self {
            conn,
            hub,
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
            // a claim whose worker stopped waiting must not take runs nobody will start
            self.parked.retain(|r| !r.reply.is_closed());
            // parked claims found nothing; only a wake-up or a batch that may make runs
            // claimable can change that (a success or a progress report cannot)
            let include_parked = woken || requests.iter().any(|r| may_ready_runs(&r.op));
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
        match apply_in_tx(&mut self.conn, &ops, track).await {
            Ok(applied) => {
                self.note_due(applied.ready_at);
                if !parked_included && applied.ready_at.is_some_and(|t| t <= now_ms()) {
                    self.next_due = Some(now_ms());
                }
                self.hub.committed(&applied.heads);
                applied.answers.into_iter().map(Ok).collect()
            }
            // a busy or unreachable database fails every op alike: no point retrying each
            Err(batch_error)
                if ops.len() > 1 && !matches!(batch_error, StoreError::Unavailable(_)) =>
            {
                tracing::warn!(error = %batch_error, batch = ops.len(), "batch failed; applying its writes one by one");
                let mut answers = Vec::with_capacity(ops.len());
                for op in &ops {
                    answers.push(match apply_in_tx(&mut self.conn, &[op], track).await {
                        Ok(mut applied) => {
                            self.note_due(applied.ready_at);
                            self.hub.committed(&applied.heads);
                            Ok(applied.answers.remove(0))
                        }
                        Err(e) => Err(e),
                    });
                }
                answers
            }
            Err(e) => vec![Err(e)],
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
        match apply_in_tx(&mut self.conn, &[&op], self.hub.is_followed()).await {
            Ok(applied) => {
                self.hub.committed(&applied.heads);
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
        | Op::Close => true,
        Op::Cancel(_) => false,
        // a retry comes due; a failure may create a compensation run
        Op::Finish(_, outcome) => !matches!(outcome, Outcome::Succeeded(_)),
        // a new claim is applied anyway; parked ones would find what it finds
        Op::Claim { .. }
        | Op::Progress(..)
        | Op::Log(..)
        | Op::Checkpoint(..)
        | Op::TakeSignal(..)
        | Op::ClaimWebhooks { .. }
        | Op::WebhookDone(..)
        | Op::Renew(..) => false,
    }
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
