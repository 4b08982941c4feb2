//! Applying one batch of requests in one transaction.
//!
//! Ops are applied by kind in a fixed order: inserts, lease renewals, claims, progress and
//! logs, finishes, hand-backs, sweeps; then every event row the batch produced is inserted
//! with one statement. Within one attempt that order is the order a worker sends them in
//! (progress before its finish), and a claim sees the runs inserted in its own batch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::{Row, SqliteConnection};

use super::super::rows::parse_id;
use super::sql;
use super::{Answer, Op, now_ms};
use crate::domain::{EventKind, NewRun, Progress, Run, RunErrorKind, RunStatus};
use crate::store::{ClaimedRun, Fence, Outcome, StoreError, Sweep, from_ms, to_ms, to_ms_ceil};

pub(super) struct Applied {
    pub(super) answers: Vec<Answer>,
    /// The earliest due time of runs made ready or scheduled by this batch.
    pub(super) ready_at: Option<i64>,
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

pub(super) async fn apply_in_tx(
    conn: &mut SqliteConnection,
    ops: &[&Op],
) -> Result<Applied, StoreError> {
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    let mut batch = Batch {
        conn,
        now: now_ms(),
        events: Vec::new(),
        ready_at: None,
    };
    let applied = match apply(&mut batch, ops).await {
        Ok(answers) => match sqlx::query("COMMIT").execute(&mut *batch.conn).await {
            Ok(_) => {
                return Ok(Applied {
                    answers,
                    ready_at: batch.ready_at,
                });
            }
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e),
    };
    // a failed statement or COMMIT must not leave the connection inside a transaction
    let _ = sqlx::query("ROLLBACK").execute(&mut *batch.conn).await;
    applied
}

/// Applies the ops in a fixed order of kinds: inserts, lease renewals, progress and logs,
/// finishes, hand-backs, sweeps, and claims last, so a claim sees every run the batch made
/// ready. Within one attempt that order matches the order a worker sends them in
/// (progress before its finish).
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
        if let Op::Renew(fences, lease) = op {
            answers[i] = Some(Answer::Renewed(renew(b, fences, *lease).await?));
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
    for round in distinct_runs(finishes) {
        for (i, applied) in finish(b, &round).await? {
            answers[i] = Some(Answer::Applied(applied));
        }
    }
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Release(worker_id) => {
                answers[i] = Some(Answer::Count(release(b, worker_id).await?))
            }
            Op::HandBack(fences) => answers[i] = Some(Answer::Count(hand_back(b, fences).await?)),
            Op::Sweep => answers[i] = Some(Answer::Swept(sweep(b).await?)),
            Op::Close => answers[i] = Some(Answer::Closed),
            _ => {}
        }
    }
    for (i, op) in ops.iter().enumerate() {
        if let Op::Claim {
            worker_id,
            agents,
            limit,
            lease,
            ..
        } = op
        {
            let claimed = claim(b, worker_id, agents.as_deref(), *limit, *lease).await?;
            answers[i] = Some(Answer::Claimed(claimed));
        }
    }
    insert_events(b).await?;
    Ok(answers
        .into_iter()
        .map(|a| a.expect("every op kind is applied above"))
        .collect())
}

/// Splits finishes into rounds in which no run appears twice: the batched statement
/// reports applied rows by run id, so two finishes of one run (a stale attempt's and the
/// current one's) must not share a statement.
fn distinct_runs<'a>(
    finishes: Vec<(usize, &'a Fence, &'a Outcome)>,
) -> Vec<Vec<(usize, &'a Fence, &'a Outcome)>> {
    let mut rounds: Vec<Vec<(usize, &Fence, &Outcome)>> = Vec::new();
    for finish in finishes {
        let free = rounds
            .iter_mut()
            .find(|round| round.iter().all(|(_, f, _)| f.run_id != finish.1.run_id));
        match free {
            Some(round) => round.push(finish),
            None => rounds.push(vec![finish]),
        }
    }
    rounds
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
                "run_at": r.run_at.map_or(now, to_ms_ceil),
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
        let run_at = r.run_at.map_or(now, to_ms_ceil);
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

/// Extends the leases of the given attempts; returns those still held (the others were
/// lost: swept, handed back, or finished).
async fn renew(
    b: &mut Batch<'_>,
    fences: &[Fence],
    lease: Duration,
) -> Result<Vec<Fence>, StoreError> {
    if fences.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(sql::RENEW_LEASES)
        .bind(b.now + lease.as_millis() as i64)
        .bind(fences_json(fences))
        .fetch_all(&mut *b.conn)
        .await?;
    let mut held = Vec::with_capacity(rows.len());
    for row in rows {
        let id = parse_id(&row.try_get::<String, _>("id")?)?;
        let claim = row.try_get::<i64, _>("claims")? as u32;
        if let Some(fence) = fences.iter().find(|f| f.run_id == id && f.claim == claim) {
            held.push(fence.clone());
        }
    }
    Ok(held)
}

fn fences_json(fences: &[Fence]) -> String {
    let rows: Vec<Value> = fences
        .iter()
        .map(|f| json!({ "id": f.run_id.to_string(), "claim": f.claim, "worker": &*f.worker_id }))
        .collect();
    Value::Array(rows).to_string()
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
            claim: row.try_get::<i64, _>("claims")? as u32,
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
        .bind(i64::from(fence.claim))
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
                "claim": fence.claim,
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

async fn hand_back(b: &mut Batch<'_>, fences: &[Fence]) -> Result<u64, StoreError> {
    let mut released = 0;
    for fence in fences {
        let seq: Option<i64> = sqlx::query_scalar(sql::HAND_BACK)
            .bind(b.now)
            .bind(fence.run_id.to_string())
            .bind(i64::from(fence.claim))
            .bind(&*fence.worker_id)
            .fetch_optional(&mut *b.conn)
            .await?;
        if let Some(seq) = seq {
            released += 1;
            let data = json!({ "worker_id": &*fence.worker_id });
            b.event(
                fence.run_id.to_string(),
                seq,
                EventKind::Released,
                fence.attempt,
                data,
            );
        }
    }
    if released > 0 {
        b.made_ready(b.now);
    }
    Ok(released)
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
