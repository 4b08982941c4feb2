//! Writes of a running attempt, all fenced: lease renewals, progress and logs, finishes.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Row;

use super::super::super::rows::parse_id;
use super::super::sql;
use super::super::{Answer, Op};
use super::Batch;
use crate::domain::{EventKind, Progress};
use crate::store::{Fence, Outcome, StoreError, to_ms};

/// Splits finishes into rounds in which no run appears twice: the batched statement
/// reports applied rows by run id, so two finishes of one run (a stale attempt's and the
/// current one's) must not share a statement.
pub(super) fn distinct_runs<'a>(
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

/// Extends the leases of the given attempts; returns those still held (the others were
/// lost: swept, handed back, or finished).
pub(super) async fn renew(
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

/// Progress reports of one attempt within a batch are coalesced to the last one.
pub(super) async fn apply_progress_and_logs(
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
            Op::Checkpoint(fence, state) => {
                let seq: Option<i64> = sqlx::query_scalar(sql::CHECKPOINT)
                    .bind(state.to_string())
                    .bind(b.now)
                    .bind(fence.run_id.to_string())
                    .bind(i64::from(fence.claim))
                    .bind(&*fence.worker_id)
                    .fetch_optional(&mut *b.conn)
                    .await?;
                if let Some(seq) = seq {
                    let data = json!({ "bytes": state.to_string().len() });
                    b.event(
                        fence.run_id.to_string(),
                        seq,
                        EventKind::Checkpoint,
                        fence.attempt,
                        data,
                    );
                }
                answers[i] = Some(Answer::Applied(seq.is_some()));
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

pub(super) async fn finish(
    b: &mut Batch<'_>,
    finishes: &[(usize, &Fence, &Outcome)],
) -> Result<Vec<(usize, bool)>, StoreError> {
    let mut out = Vec::with_capacity(finishes.len());
    let mut batched = Vec::with_capacity(finishes.len());
    for &(i, fence, outcome) in finishes {
        match outcome {
            Outcome::Wait {
                signals,
                until,
                resume_on_timeout,
            } => {
                let applied =
                    super::signals::wait(b, fence, signals, to_ms(*until), *resume_on_timeout)
                        .await?;
                out.push((i, applied));
            }
            _ => batched.push((i, fence, outcome)),
        }
    }
    if batched.is_empty() {
        return Ok(out);
    }
    let finishes = &batched[..];
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
                Outcome::Wait { .. } => unreachable!("waits are applied above"),
            }
            row
        })
        .collect();
    let returned = sqlx::query(sql::FINISH)
        .bind(Value::Array(rows).to_string())
        .bind(b.now)
        .fetch_all(&mut *b.conn)
        .await?;
    let mut seqs: HashMap<String, (i64, i64)> = HashMap::with_capacity(returned.len());
    for row in returned {
        let applied = (row.try_get("event_seq")?, row.try_get("dependents")?);
        let id: String = row.try_get("id")?;
        b.agents.insert(id.clone(), row.try_get("agent")?);
        if row.try_get::<bool, _>("has_callback")? {
            b.callbacks.push(id.clone());
        }
        seqs.insert(id, applied);
    }
    for (i, fence, outcome) in finishes {
        let id = fence.run_id.to_string();
        let Some((seq, dependents)) = seqs.remove(&id) else {
            out.push((*i, false));
            continue;
        };
        let (kind, data) = match outcome {
            Outcome::Succeeded(_) => {
                if dependents > 0 {
                    b.settled.push((id.clone(), EventKind::Succeeded));
                }
                (EventKind::Succeeded, json!({}))
            }
            Outcome::Retry { error, retry_at } => {
                b.made_ready(to_ms(*retry_at));
                let data = json!({ "error": error, "next_attempt_at": retry_at });
                (EventKind::RetryScheduled, data)
            }
            Outcome::Failed(error) => (EventKind::Failed, json!({ "error": error })),
            Outcome::Wait { .. } => unreachable!("waits are applied above"),
        };
        b.event(id, seq, kind, fence.attempt, data);
        out.push((*i, true));
    }
    Ok(out)
}
