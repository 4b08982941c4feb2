//! The single writer: one task owns the only writing connection and group-commits.
//!
//! Callers send a request and await its answer. The task takes every request waiting
//! (up to `MAX_BATCH`), applies them all in one `BEGIN IMMEDIATE` transaction with as few
//! statements as it can (rows travel as one JSON array through `json_each`), commits, and
//! only then answers. One commit (~100 µs) is shared by the whole batch, which is what
//! lets SQLite keep up with thousands of runs a second; nothing is acknowledged before it
//! is durable. If a batch fails, each request is retried alone so one bad request cannot
//! fail the others.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::{Row, SqliteConnection};
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::rows::parse_id;
use crate::domain::{EventKind, NewRun, Progress, Run, RunErrorKind, RunStatus};
use crate::store::{ClaimedRun, Fence, Outcome, StoreError, Sweep, from_ms, to_ms};

mod sql;

const MAX_BATCH: usize = 1024;
const QUEUE_DEPTH: usize = 16 * 1024;

enum Op {
    Insert(Box<NewRun>),
    Claim {
        worker_id: Arc<str>,
        agents: Option<Arc<[String]>>,
        limit: usize,
        lease: Duration,
    },
    Finish(Fence, Outcome),
    Progress(Fence, Progress),
    Log(Fence, String, String),
    Renew(Arc<str>, Duration),
    Sweep,
    Release(Arc<str>),
    Close,
}

enum Answer {
    Run(Box<Run>),
    Claimed(Vec<ClaimedRun>),
    Applied(bool),
    Count(u64),
    Swept(Sweep),
    Closed,
}

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<Answer, StoreError>>,
}

pub(in crate::store) struct WriterHandle {
    tx: mpsc::Sender<Request>,
    ready: watch::Receiver<i64>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl WriterHandle {
    pub(super) fn spawn(conn: SqliteConnection) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let (ready_tx, ready) = watch::channel(0);
        let task = tokio::spawn(run(conn, rx, ready_tx));
        Self {
            tx,
            ready,
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

    pub(in crate::store) async fn insert(&self, run: NewRun) -> Result<Run, StoreError> {
        match self.call(Op::Insert(Box::new(run))).await? {
            Answer::Run(run) => Ok(*run),
            _ => unreachable!("insert answers with a run"),
        }
    }

    pub(in crate::store) async fn claim(
        &self,
        worker_id: Arc<str>,
        agents: Option<Arc<[String]>>,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<ClaimedRun>, StoreError> {
        let op = Op::Claim {
            worker_id,
            agents,
            limit,
            lease,
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

    async fn applied(&self, op: Op) -> Result<bool, StoreError> {
        match self.call(op).await? {
            Answer::Applied(applied) => Ok(applied),
            _ => unreachable!("fenced writes answer with applied"),
        }
    }

    pub(in crate::store) async fn renew(
        &self,
        worker_id: Arc<str>,
        lease: Duration,
    ) -> Result<u64, StoreError> {
        self.count(Op::Renew(worker_id, lease)).await
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

    pub(in crate::store) fn ready_signal(&self) -> watch::Receiver<i64> {
        self.ready.clone()
    }

    pub(in crate::store) async fn close(&self) {
        let _ = self.call(Op::Close).await;
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

async fn run(
    mut conn: SqliteConnection,
    mut rx: mpsc::Receiver<Request>,
    ready: watch::Sender<i64>,
) {
    let mut requests = Vec::with_capacity(MAX_BATCH);
    loop {
        if rx.recv_many(&mut requests, MAX_BATCH).await == 0 {
            return;
        }
        let closing = requests.iter().any(|r| matches!(r.op, Op::Close));
        let ops: Vec<&Op> = requests.iter().map(|r| &r.op).collect();
        let answers = match apply_in_tx(&mut conn, &ops).await {
            Ok(applied) => {
                signal_ready(&ready, applied.ready_at);
                applied.answers.into_iter().map(Ok).collect()
            }
            Err(batch_error) if ops.len() > 1 => {
                tracing::warn!(error = %batch_error, batch = ops.len(), "batch failed; applying its writes one by one");
                let mut answers = Vec::with_capacity(ops.len());
                for op in &ops {
                    answers.push(match apply_in_tx(&mut conn, &[op]).await {
                        Ok(mut applied) => {
                            signal_ready(&ready, applied.ready_at);
                            Ok(applied.answers.remove(0))
                        }
                        Err(e) => Err(e),
                    });
                }
                answers
            }
            Err(e) => vec![Err(e)],
        };
        for (request, answer) in requests.drain(..).zip(answers) {
            let _ = request.reply.send(answer);
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

/// Publishes the earliest due time among runs this batch made ready, keeping an
/// earlier one still pending.
fn signal_ready(ready: &watch::Sender<i64>, at: Option<i64>) {
    let Some(at) = at else { return };
    let now = now_ms();
    ready.send_modify(|current| {
        if *current <= now || at < *current {
            *current = at;
        }
    });
}

fn now_ms() -> i64 {
    to_ms(chrono::Utc::now())
}

struct Applied {
    answers: Vec<Answer>,
    /// The earliest due time of runs made ready or scheduled by this batch.
    ready_at: Option<i64>,
}

/// An event row waiting to be inserted with the rest of its batch.
struct EventRow {
    run_id: String,
    seq: i64,
    kind: EventKind,
    attempt: u32,
    data: Value,
}

struct Batch<'c> {
    conn: &'c mut SqliteConnection,
    now: i64,
    events: Vec<EventRow>,
    ready_at: Option<i64>,
}

impl Batch<'_> {
    fn event(&mut self, run_id: String, seq: i64, kind: EventKind, attempt: u32, data: Value) {
        self.events.push(EventRow {
            run_id,
            seq,
            kind,
            attempt,
            data,
        });
    }

    fn made_ready(&mut self, at: i64) {
        self.ready_at = Some(self.ready_at.map_or(at, |r| r.min(at)));
    }
}

async fn apply_in_tx(conn: &mut SqliteConnection, ops: &[&Op]) -> Result<Applied, StoreError> {
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    let mut batch = Batch {
        conn,
        now: now_ms(),
        events: Vec::new(),
        ready_at: None,
    };
    match apply(&mut batch, ops).await {
        Ok(answers) => {
            let ready_at = batch.ready_at;
            sqlx::query("COMMIT").execute(&mut *batch.conn).await?;
            Ok(Applied { answers, ready_at })
        }
        Err(e) => {
            let _ = sqlx::query("ROLLBACK").execute(&mut *batch.conn).await;
            Err(e)
        }
    }
}

/// Applies the ops in a fixed order of kinds: inserts, lease renewals, claims, progress and
/// logs, finishes, releases, sweeps. Within one attempt that order matches the order a
/// worker sends them in (progress before its finish).
async fn apply(b: &mut Batch<'_>, ops: &[&Op]) -> Result<Vec<Answer>, StoreError> {
    let mut answers: Vec<Option<Answer>> = ops.iter().map(|_| None).collect();

    let inserts: Vec<(usize, &NewRun)> = ops
        .iter()
        .enumerate()
        .filter_map(|(i, op)| match op {
            Op::Insert(run) => Some((i, &**run)),
            _ => None,
        })
        .collect();
    if !inserts.is_empty() {
        for (i, run) in insert_runs(b, &inserts).await? {
            answers[i] = Some(Answer::Run(Box::new(run)));
        }
    }
    for (i, op) in ops.iter().enumerate() {
        if let Op::Renew(worker_id, lease) = op {
            answers[i] = Some(Answer::Count(renew(b, worker_id, *lease).await?));
        }
    }
    for (i, op) in ops.iter().enumerate() {
        if let Op::Claim {
            worker_id,
            agents,
            limit,
            lease,
        } = op
        {
            let claimed = claim(b, worker_id, agents.as_deref(), *limit, *lease).await?;
            answers[i] = Some(Answer::Claimed(claimed));
        }
    }
    apply_progress_and_logs(b, ops, &mut answers).await?;
    let finishes: Vec<(usize, &Fence, &Outcome)> = ops
        .iter()
        .enumerate()
        .filter_map(|(i, op)| match op {
            Op::Finish(fence, outcome) => Some((i, fence, outcome)),
            _ => None,
        })
        .collect();
    if !finishes.is_empty() {
        for (i, applied) in finish(b, &finishes).await? {
            answers[i] = Some(Answer::Applied(applied));
        }
    }
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Release(worker_id) => {
                answers[i] = Some(Answer::Count(release(b, worker_id).await?))
            }
            Op::Sweep => answers[i] = Some(Answer::Swept(sweep(b).await?)),
            Op::Close => answers[i] = Some(Answer::Closed),
            _ => {}
        }
    }
    insert_events(b).await?;
    Ok(answers
        .into_iter()
        .map(|a| a.expect("every op kind is applied above"))
        .collect())
}

async fn insert_runs(
    b: &mut Batch<'_>,
    inserts: &[(usize, &NewRun)],
) -> Result<Vec<(usize, Run)>, StoreError> {
    let now = b.now;
    let rows: Vec<Value> = inserts
        .iter()
        .map(|(_, r)| {
            json!({
                "id": r.id.to_string(),
                "agent": r.agent,
                "input": r.input,
                "priority": r.priority,
                "metadata": r.metadata,
                "max_attempts": r.max_attempts,
                "timeout_ms": r.timeout.as_millis() as u64,
                "backoff_base_ms": r.backoff.base.as_millis() as u64,
                "backoff_cap_ms": r.backoff.cap.as_millis() as u64,
                "run_at": r.run_at.map_or(now, to_ms),
            })
        })
        .collect();
    sqlx::query(sql::INSERT_RUNS)
        .bind(Value::Array(rows).to_string())
        .bind(now)
        .execute(&mut *b.conn)
        .await?;
    let mut out = Vec::with_capacity(inserts.len());
    for (i, r) in inserts {
        let run_at = r.run_at.map_or(now, to_ms);
        b.made_ready(run_at);
        b.event(r.id.to_string(), 1, EventKind::Created, 0, json!({}));
        out.push((*i, new_run_record(r, now, run_at)));
    }
    Ok(out)
}

fn new_run_record(r: &NewRun, now: i64, run_at: i64) -> Run {
    Run {
        id: r.id,
        agent: r.agent.clone(),
        status: RunStatus::Queued,
        input: r.input.clone(),
        priority: r.priority,
        metadata: r.metadata.clone(),
        progress: None,
        attempt: 0,
        max_attempts: r.max_attempts,
        result: None,
        error: None,
        timeout_ms: r.timeout.as_millis() as u64,
        backoff_base_ms: r.backoff.base.as_millis() as u64,
        backoff_cap_ms: r.backoff.cap.as_millis() as u64,
        run_at: from_ms(run_at),
        next_attempt_at: None,
        worker_id: None,
        lease_until: None,
        created_at: from_ms(now),
        started_at: None,
        finished_at: None,
        updated_at: from_ms(now),
    }
}

async fn renew(b: &mut Batch<'_>, worker_id: &str, lease: Duration) -> Result<u64, StoreError> {
    let done = sqlx::query(sql::RENEW_LEASES)
        .bind(b.now + lease.as_millis() as i64)
        .bind(worker_id)
        .execute(&mut *b.conn)
        .await?;
    Ok(done.rows_affected())
}

async fn claim(
    b: &mut Batch<'_>,
    worker_id: &Arc<str>,
    agents: Option<&[String]>,
    limit: usize,
    lease: Duration,
) -> Result<Vec<ClaimedRun>, StoreError> {
    let agents = agents.map(|a| serde_json::to_string(a).expect("names serialise"));
    let rows = sqlx::query(sql::CLAIM)
        .bind(&**worker_id)
        .bind(b.now + lease.as_millis() as i64)
        .bind(b.now)
        .bind(agents)
        .bind(limit as i64)
        .fetch_all(&mut *b.conn)
        .await?;
    let mut claimed = Vec::with_capacity(rows.len());
    for row in rows {
        let id: String = row.try_get("id")?;
        let input: String = row.try_get("input")?;
        let run = ClaimedRun {
            id: parse_id(&id)?,
            agent: row.try_get("agent")?,
            input: serde_json::from_str(&input)?,
            attempt: row.try_get::<i64, _>("attempt")? as u32,
            max_attempts: row.try_get::<i64, _>("max_attempts")? as u32,
            timeout_ms: row.try_get::<i64, _>("timeout_ms")? as u64,
            backoff_base_ms: row.try_get::<i64, _>("backoff_base_ms")? as u64,
            backoff_cap_ms: row.try_get::<i64, _>("backoff_cap_ms")? as u64,
            priority: row.try_get::<i64, _>("priority")? as i32,
            worker_id: worker_id.clone(),
        };
        let seq: i64 = row.try_get("event_seq")?;
        b.event(
            id,
            seq,
            EventKind::Started,
            run.attempt,
            json!({ "worker_id": &*run.worker_id }),
        );
        claimed.push(run);
    }
    // RETURNING gives no order; hand the runs out in the order they were chosen.
    claimed.sort_by_key(|r| std::cmp::Reverse(r.priority));
    Ok(claimed)
}

/// Progress reports of one attempt within a batch are coalesced to the last one.
async fn apply_progress_and_logs(
    b: &mut Batch<'_>,
    ops: &[&Op],
    answers: &mut [Option<Answer>],
) -> Result<(), StoreError> {
    let mut last_progress: HashMap<&Fence, usize> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        if let Op::Progress(fence, _) = op {
            last_progress.insert(fence, i);
        }
    }
    let mut progress_applied: HashMap<&Fence, bool> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Progress(fence, progress) if last_progress.get(fence) == Some(&i) => {
                let data = json!({ "percent": progress.percent, "message": progress.message });
                let seq = fenced_touch(b, fence, Some(progress)).await?;
                if let Some(seq) = seq {
                    b.event(
                        fence.run_id.to_string(),
                        seq,
                        EventKind::Progress,
                        fence.attempt,
                        data,
                    );
                }
                progress_applied.insert(fence, seq.is_some());
            }
            Op::Log(fence, level, message) => {
                let seq = fenced_touch(b, fence, None).await?;
                if let Some(seq) = seq {
                    let data = json!({ "level": level, "message": message });
                    b.event(
                        fence.run_id.to_string(),
                        seq,
                        EventKind::Log,
                        fence.attempt,
                        data,
                    );
                }
                answers[i] = Some(Answer::Applied(seq.is_some()));
            }
            _ => {}
        }
    }
    for (i, op) in ops.iter().enumerate() {
        if let Op::Progress(fence, _) = op {
            answers[i] = Some(Answer::Applied(progress_applied[fence]));
        }
    }
    Ok(())
}

/// Bumps the event counter of a running attempt (setting its progress, if given) and
/// returns the new event's seq, or `None` when the fence no longer holds.
async fn fenced_touch(
    b: &mut Batch<'_>,
    fence: &Fence,
    progress: Option<&Progress>,
) -> Result<Option<i64>, StoreError> {
    let seq: Option<i64> = sqlx::query_scalar(sql::TOUCH_RUNNING)
        .bind(progress.map(|p| i64::from(p.percent)))
        .bind(progress.and_then(|p| p.message.as_deref()))
        .bind(b.now)
        .bind(fence.run_id.to_string())
        .bind(i64::from(fence.attempt))
        .bind(&*fence.worker_id)
        .bind(progress.is_some())
        .fetch_optional(&mut *b.conn)
        .await?;
    Ok(seq)
}

async fn finish(
    b: &mut Batch<'_>,
    finishes: &[(usize, &Fence, &Outcome)],
) -> Result<Vec<(usize, bool)>, StoreError> {
    let rows: Vec<Value> = finishes
        .iter()
        .map(|(_, fence, outcome)| {
            let mut row = json!({
                "id": fence.run_id.to_string(),
                "attempt": fence.attempt,
                "worker": &*fence.worker_id,
            });
            match outcome {
                Outcome::Succeeded(result) => {
                    row["status"] = json!("succeeded");
                    row["result"] = result.clone();
                }
                Outcome::Retry { error, retry_at } => {
                    row["status"] = json!("retrying");
                    row["error_kind"] = json!(error.kind);
                    row["error_message"] = json!(error.message);
                    row["run_at"] = json!(to_ms(*retry_at));
                }
                Outcome::Failed(error) => {
                    row["status"] = json!("failed");
                    row["error_kind"] = json!(error.kind);
                    row["error_message"] = json!(error.message);
                }
            }
            row
        })
        .collect();
    let returned = sqlx::query(sql::FINISH)
        .bind(Value::Array(rows).to_string())
        .bind(b.now)
        .fetch_all(&mut *b.conn)
        .await?;
    let mut seqs: HashMap<String, i64> = HashMap::with_capacity(returned.len());
    for row in returned {
        seqs.insert(row.try_get("id")?, row.try_get("event_seq")?);
    }
    let mut out = Vec::with_capacity(finishes.len());
    for (i, fence, outcome) in finishes {
        let id = fence.run_id.to_string();
        let Some(seq) = seqs.remove(&id) else {
            out.push((*i, false));
            continue;
        };
        let (kind, data) = match outcome {
            Outcome::Succeeded(_) => (EventKind::Succeeded, json!({})),
            Outcome::Retry { error, retry_at } => {
                b.made_ready(to_ms(*retry_at));
                let data = json!({ "error": error, "next_attempt_at": retry_at });
                (EventKind::RetryScheduled, data)
            }
            Outcome::Failed(error) => (EventKind::Failed, json!({ "error": error })),
        };
        b.event(id, seq, kind, fence.attempt, data);
        out.push((*i, true));
    }
    Ok(out)
}

async fn release(b: &mut Batch<'_>, worker_id: &str) -> Result<u64, StoreError> {
    let rows = sqlx::query(sql::RELEASE)
        .bind(b.now)
        .bind(worker_id)
        .fetch_all(&mut *b.conn)
        .await?;
    for row in &rows {
        let id: String = row.try_get("id")?;
        let attempt = row.try_get::<i64, _>("released_attempt")? as u32;
        let seq: i64 = row.try_get("event_seq")?;
        let data = json!({ "worker_id": worker_id });
        b.event(id, seq, EventKind::Released, attempt, data);
    }
    if !rows.is_empty() {
        b.made_ready(b.now);
    }
    Ok(rows.len() as u64)
}

async fn sweep(b: &mut Batch<'_>) -> Result<Sweep, StoreError> {
    let rows = sqlx::query(sql::SWEEP_EXPIRED)
        .bind(b.now)
        .fetch_all(&mut *b.conn)
        .await?;
    let mut sweep = Sweep::default();
    for row in rows {
        let id: String = row.try_get("id")?;
        let attempt = row.try_get::<i64, _>("attempt")? as u32;
        let status: String = row.try_get("status")?;
        let seq: i64 = row.try_get("event_seq")?;
        let message: String = row.try_get("error_message")?;
        let error = json!({ "kind": RunErrorKind::LostWorker, "message": message });
        if status == RunStatus::Failed.as_str() {
            sweep.failed += 1;
            let data = json!({ "error": error });
            b.event(
                id.clone(),
                seq - 1,
                EventKind::AttemptLost,
                attempt,
                data.clone(),
            );
            b.event(id, seq, EventKind::Failed, attempt, data);
        } else {
            sweep.retried += 1;
            b.event(
                id,
                seq,
                EventKind::AttemptLost,
                attempt,
                json!({ "error": error }),
            );
        }
    }
    if sweep.retried > 0 {
        b.made_ready(b.now);
    }
    Ok(sweep)
}

async fn insert_events(b: &mut Batch<'_>) -> Result<(), StoreError> {
    if b.events.is_empty() {
        return Ok(());
    }
    let rows: Vec<Value> = b
        .events
        .drain(..)
        .map(|e| {
            json!({
                "r": e.run_id,
                "s": e.seq,
                "k": e.kind.as_str(),
                "a": e.attempt,
                "d": e.data,
            })
        })
        .collect();
    sqlx::query(sql::INSERT_EVENTS)
        .bind(Value::Array(rows).to_string())
        .bind(b.now)
        .execute(&mut *b.conn)
        .await?;
    Ok(())
}
