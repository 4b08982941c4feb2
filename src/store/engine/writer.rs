//! The single writer: one task owns the only writing connection and group-commits.
//!
//! Callers send a command (one file each in `cmd/`) and await its typed reply. The task
//! takes every request waiting (up to `MAX_BATCH`), applies them all in one
//! `BEGIN IMMEDIATE` transaction with as few statements as it can, kind by kind in the
//! order `batch.rs` declares, commits, and only then answers. One commit is
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

mod batch;
pub(in crate::store) mod cmd;
mod command;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;

use crate::store::hub::EventHub;
use crate::store::tally::Tally;
use crate::store::{Clock, Fence, StoreError, to_ms};

use super::{Conn, ConnectOpts, sql};
use batch::{Applied, apply_in_tx};
use cmd::{AttemptHandBack, WriterClose, WriterWake};
pub(in crate::store) use command::Command;
use command::{Queued, Request, Settled};
use sqlx::{ConnectOptions, Connection};

const MAX_BATCH: usize = 1024;

/// The longest one batch may take before its connection is given up.
const BATCH_TIMEOUT: Duration = Duration::from_secs(30);
const QUEUE_DEPTH: usize = 16 * 1024;

pub(in crate::store) struct WriterHandle {
    tx: mpsc::Sender<Box<dyn Queued>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl WriterHandle {
    pub(super) fn spawn(
        conn: Conn,
        options: ConnectOpts,
        hub: Arc<EventHub>,
        tally: Arc<Tally>,
        clock: Clock,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let task = tokio::spawn(Writer::new(conn, options, hub, tally, clock).run(rx));
        Self {
            tx,
            task: Mutex::new(Some(task)),
        }
    }

    /// Sends `command` to the writer and waits for its reply, which comes once the batch
    /// holding it has committed.
    pub(in crate::store) async fn call<C: Command>(
        &self,
        command: C,
    ) -> Result<C::Reply, StoreError> {
        let (request, reply) = Request::new(command);
        self.tx
            .send(Box::new(request))
            .await
            .map_err(|_| StoreError::Closed)?;
        reply.await.map_err(|_| StoreError::Closed)?
    }

    /// Queues `command` without waiting for room in the queue or for the reply, so it
    /// rides in the batch the writer takes next together with what the caller sends right
    /// after it. `None` when the queue is full or the writer stopped.
    pub(in crate::store) fn send_now<C: Command>(
        &self,
        command: C,
    ) -> Option<tokio::sync::oneshot::Receiver<Result<C::Reply, StoreError>>> {
        let (request, reply) = Request::new(command);
        self.tx.try_send(Box::new(request)).ok()?;
        Some(reply)
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
        let _ = self.call(WriterClose).await;
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
    tx: mpsc::Sender<Box<dyn Queued>>,
}

#[allow(
    dead_code,
    reason = "only PostgreSQL hears of other processes' runs (LISTEN)"
)]
impl Waker {
    /// `Closed` once the writer stopped.
    pub(in crate::store) async fn wake(&self) -> Result<(), StoreError> {
        let (request, _reply) = Request::new(WriterWake);
        self.tx
            .send(Box::new(request))
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
    parked: Vec<Box<dyn Queued>>,
    /// The earliest future due time of a run this writer stored (a delayed run or a retry).
    next_due: Option<i64>,
    /// What times the batches' records (real time paces the loop itself).
    clock: Clock,
    /// A commit succeeded after the storage was full: its space is reclaimed next.
    space_returned: bool,
}

impl Writer {
    fn new(
        conn: Conn,
        options: ConnectOpts,
        hub: Arc<EventHub>,
        tally: Arc<Tally>,
        clock: Clock,
    ) -> Self {
        Self {
            conn: Some(conn),
            options,
            hub,
            tally,
            parked: Vec::new(),
            next_due: None,
            clock,
            space_returned: false,
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Box<dyn Queued>>) {
        let mut requests = Vec::with_capacity(MAX_BATCH);
        loop {
            let wake = self.wake_at();
            let mut woken = tokio::select! {
                received = rx.recv_many(&mut requests, MAX_BATCH) => {
                    if received == 0 {
                        return;
                    }
                    false
                }
                _ = sleep_until_ms(wake), if wake.is_some() => true,
            };
            // a wake-up from another process: parked claims look again; nothing to write
            // (its sender does not wait for a reply)
            requests.retain(|r| {
                let wake = r.is::<WriterWake>();
                woken |= wake;
                !wake
            });
            if woken {
                // another process made runs ready (PostgreSQL NOTIFY), or one came due: the
                // Redis feeder tops up at once instead of at its next poll
                self.hub.runs_ready();
            }
            // a claim whose worker stopped waiting must not take runs nobody will start
            self.parked.retain(|r| !r.abandoned());
            // parked claims found nothing; only a wake-up or a batch that may make runs
            // claimable can change that (a success or a progress report cannot); with
            // agent limits, a finish frees room for an agent that was at its limit
            let limited_parked = self.parked.iter().any(|r| r.waits_for_room());
            let include_parked = woken
                || requests.iter().any(|r| r.may_ready_runs())
                || (limited_parked && requests.iter().any(|r| r.frees_a_slot()));
            if include_parked {
                requests.append(&mut self.parked);
            }
            if requests.is_empty() {
                continue;
            }
            let closing = requests.iter().any(|r| r.is::<WriterClose>());
            self.apply(&mut requests, include_parked).await;
            let now = now_ms();
            let mut undelivered = Vec::new();
            for request in requests.drain(..) {
                match request.settle(closing, now) {
                    Settled::Sent => {}
                    Settled::Parked(request) => self.parked.push(request),
                    Settled::Undelivered(fences) => undelivered.extend(fences),
                }
            }
            if !undelivered.is_empty() {
                self.unclaim(undelivered).await;
            }
            if closing {
                rx.close();
                while let Some(mut late) = rx.recv().await {
                    late.fail(StoreError::Closed);
                    late.settle(true, now);
                }
                return;
            }
        }
    }

    /// When the loop must wake with no new request: a parked claim's deadline, or a delayed
    /// run coming due while claims are parked.
    fn wake_at(&self) -> Option<i64> {
        let deadline = self.parked.iter().filter_map(|r| r.waits_until()).min()?;
        Some(self.next_due.map_or(deadline, |due| due.min(deadline)))
    }

    /// Applies a batch, leaving each request its reply (or error). When the parked claims
    /// were not part of it but it made runs ready anyway (a success that unblocked its
    /// dependents), they are woken at once.
    async fn apply(&mut self, requests: &mut [Box<dyn Queued>], parked_included: bool) {
        let track = self.hub.is_followed();
        let mut result = self.run_batch(requests, track).await;
        // a race lost to another process's writer is retried as a whole a few times
        for _ in 0..3 {
            match &result {
                Err(e) if e.lost_a_race() => {}
                _ => break,
            }
            result = self.run_batch(requests, track).await;
        }
        if let Err(StoreError::StorageFull(reason)) = &result {
            if self.tally.full_reason().is_none() {
                tracing::warn!(%reason, "the database's storage is full: writes are refused (503 storage_full) until space returns");
            }
            self.tally.storage_full(reason);
        }
        match result {
            Ok(applied) => self.after_commit(&applied, parked_included),
            // a lone write keeps its own error: one refused for what it is must not become
            // "unavailable", which its caller (an HTTP client on 503, the outcome write)
            // would retry to no end
            Err(e) if requests.len() == 1 => requests[0].fail(e),
            // a busy or unreachable database fails every request alike: each gets the
            // error, so each caller can retry (a missing answer would reach it as
            // `Closed`, which callers rightly do not retry)
            // and so do a full disk and a commit that may have been applied (never applied
            // again one by one: each caller hears that its write may have been stored)
            Err(e) if e.alike().is_some() => {
                for request in requests.iter_mut() {
                    request.fail(e.alike().expect("checked above"));
                }
            }
            // one write may spoil the batch: each is applied on its own
            Err(batch_error) => {
                tracing::warn!(error = %batch_error, batch = requests.len(), "batch failed; applying its writes one by one");
                for i in 0..requests.len() {
                    match self.run_batch(&mut requests[i..=i], track).await {
                        Ok(applied) => self.after_commit(&applied, parked_included),
                        Err(e) => requests[i].fail(e),
                    }
                }
            }
        }
        if std::mem::take(&mut self.space_returned) {
            self.reclaim_space().await;
        }
    }

    /// What follows every commit: followers hear of new events, the Redis feeder of runs
    /// made ready, and parked claims that were not part of the batch are woken when it made
    /// runs ready now (a success that unblocked its dependents, say).
    fn after_commit(&mut self, applied: &Applied, parked_included: bool) {
        let now = now_ms();
        let ready_now = applied.ready_in.is_some_and(|due| due <= 0);
        if ready_now {
            self.hub.runs_ready();
        }
        self.note_due(applied.ready_in.map(|due| now + due));
        if ready_now && !parked_included {
            self.next_due = Some(now);
        }
        self.hub.committed(&applied.events);
        self.tally.add(&applied.transitions);
        self.space_returned |= self.tally.storage_ok();
    }

    /// After the first commit that follows a full storage: gives the space the log took
    /// while it was full back to the disk (SQLite checkpoints its WAL and truncates it).
    async fn reclaim_space(&mut self) {
        tracing::info!("the database's storage took writes again");
        let Ok(conn) = self.connection().await else {
            return;
        };
        if let Err(e) = sqlx::query(sql::RECLAIM_SPACE).execute(&mut *conn).await {
            tracing::warn!(error = %e, "could not checkpoint the write-ahead log after the storage was full");
        }
    }

    /// Applies `requests` in one transaction on the writing connection (connecting first
    /// if it broke), after dropping the replies of an earlier try. A batch the database
    /// does not answer within [`BATCH_TIMEOUT`] (a network that dropped without a word, a
    /// server that hangs) fails, and its connection is dropped rather than reused
    /// mid-transaction.
    async fn run_batch(
        &mut self,
        requests: &mut [Box<dyn Queued>],
        track: bool,
    ) -> Result<Applied, StoreError> {
        for request in requests.iter_mut() {
            request.forget();
        }
        let clock = self.clock.clone();
        let conn = self.connection().await?;
        let batch = apply_in_tx(conn, requests, track, clock);
        match tokio::time::timeout(BATCH_TIMEOUT, batch).await {
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
                // the wait may have ended during the COMMIT: the batch may be stored
                Err(StoreError::Uncertain(format!(
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
        let (request, _nobody) = Request::new(AttemptHandBack(fences));
        let mut requests: [Box<dyn Queued>; 1] = [Box::new(request)];
        let track = self.hub.is_followed();
        match self.run_batch(&mut requests, track).await {
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

async fn sleep_until_ms(at: Option<i64>) {
    let wait = at.map_or(0, |at| (at - now_ms()).max(0)) as u64;
    tokio::time::sleep(Duration::from_millis(wait)).await;
}
