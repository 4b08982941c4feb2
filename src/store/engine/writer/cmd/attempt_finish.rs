//! `AttemptFinish`: records an attempt's outcome (succeeded, retry later, failed, or
//! waiting for signals). Fenced: `false` when the attempt no longer owns its run.

use std::collections::HashMap;

use serde_json::{Value, json};
use sqlx::Row;

use super::super::batch::wait;
use super::super::sql;
use super::{Apply, Batch, Command};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::{EventKind, RunError, RunErrorKind, RunStatus};
use crate::store::{Fence, Outcome, StoreError, to_ms};

/// Replies whether the fence held.
pub(in crate::store) struct AttemptFinish {
    pub(in crate::store) fence: Fence,
    pub(in crate::store) outcome: Outcome,
}

impl Command for AttemptFinish {
    type Reply = bool;

    /// A retry comes due; a failure may create a compensation run.
    fn may_ready_runs(&self) -> bool {
        !matches!(self.outcome, Outcome::Succeeded(_))
    }

    fn frees_a_slot(&self) -> bool {
        true
    }
}

impl Apply for AttemptFinish {
    async fn apply(b: &mut Batch<'_>, commands: &[&Self]) -> Result<Vec<bool>, StoreError> {
        let finishes: Vec<(usize, &Fence, &Outcome)> = commands
            .iter()
            .enumerate()
            .map(|(i, c)| (i, &c.fence, &c.outcome))
            .collect();
        let mut replies = vec![false; commands.len()];
        for round in distinct_runs(finishes) {
            for (i, applied) in finish(b, &round).await? {
                replies[i] = applied;
            }
        }
        Ok(replies)
    }
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

/// What a finish other than a wait settles: one row of the batched `FINISH` statement.
enum Settles<'a> {
    Succeeded(&'a Value),
    Retry {
        error: &'a RunError,
        retry_at: &'a DateTime<Utc>,
    },
    Failed(&'a RunError),
}

/// A row of `FINISH`'s JSON array (its keys are the statement's `value->>'…'`).
#[derive(Serialize)]
struct FinishRow<'a> {
    id: String,
    claim: u32,
    worker: &'a str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_kind: Option<&'a RunErrorKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_at: Option<i64>,
}

impl<'a> FinishRow<'a> {
    fn new(fence: &'a Fence, settles: &Settles<'a>) -> Self {
        let (status, result, error, run_at) = match *settles {
            Settles::Succeeded(result) => (RunStatus::Succeeded, Some(result), None, None),
            Settles::Retry { error, retry_at } => (
                RunStatus::Retrying,
                None,
                Some(error),
                Some(to_ms(*retry_at)),
            ),
            Settles::Failed(error) => (RunStatus::Failed, None, Some(error), None),
        };
        Self {
            id: fence.run_id.to_string(),
            claim: fence.claim,
            worker: &fence.worker_id,
            status: status.as_str(),
            result,
            error_kind: error.map(|e| &e.kind),
            error_message: error.map(|e| e.message.as_str()),
            run_at,
        }
    }
}

async fn finish(
    b: &mut Batch<'_>,
    finishes: &[(usize, &Fence, &Outcome)],
) -> Result<Vec<(usize, bool)>, StoreError> {
    let mut out = Vec::with_capacity(finishes.len());
    let mut batched = Vec::with_capacity(finishes.len());
    for &(i, fence, outcome) in finishes {
        let settles = match outcome {
            Outcome::Wait {
                signals,
                until,
                resume_on_timeout,
            } => {
                let applied = wait(b, fence, signals, to_ms(*until), *resume_on_timeout).await?;
                out.push((i, applied));
                continue;
            }
            Outcome::Succeeded(result) => Settles::Succeeded(result),
            Outcome::Retry { error, retry_at } => Settles::Retry { error, retry_at },
            Outcome::Failed(error) => Settles::Failed(error),
        };
        batched.push((i, fence, settles));
    }
    if batched.is_empty() {
        return Ok(out);
    }
    let rows: Vec<FinishRow> = batched
        .iter()
        .map(|(_, fence, settles)| FinishRow::new(fence, settles))
        .collect();
    let returned = sqlx::query(sql::FINISH)
        .bind(serde_json::to_string(&rows).expect("rows serialise"))
        .bind(b.now)
        .fetch_all(&mut *b.conn)
        .await?;
    let mut seqs: HashMap<String, (i64, i64, bool)> = HashMap::with_capacity(returned.len());
    for row in returned {
        let applied = (
            row.try_get("event_seq")?,
            row.try_get("dependents")?,
            row.try_get("keyed")?,
        );
        let id: String = row.try_get("id")?;
        b.agents.insert(id.clone(), row.try_get("agent")?);
        if row.try_get::<bool, _>("has_callback")? {
            b.callbacks.push(id.clone());
        }
        seqs.insert(id, applied);
    }
    for (i, fence, settles) in batched {
        let id = fence.run_id.to_string();
        let Some((seq, dependents, keyed)) = seqs.remove(&id) else {
            out.push((i, false));
            continue;
        };
        let (kind, data) = match settles {
            Settles::Succeeded(_) => {
                if dependents > 0 {
                    b.settled.push((id.clone(), EventKind::Succeeded));
                }
                // its key has room now (a failure's is looked up: see `Batch::event_by`)
                if keyed {
                    b.ended.push(id.clone());
                }
                (EventKind::Succeeded, json!({}))
            }
            Settles::Retry { error, retry_at } => {
                b.made_ready(to_ms(*retry_at));
                let data = json!({ "error": error, "next_attempt_at": crate::domain::time::rfc3339(retry_at) });
                (EventKind::RetryScheduled, data)
            }
            Settles::Failed(error) => (EventKind::Failed, json!({ "error": error })),
        };
        b.event(id, seq, kind, fence.attempt, data);
        out.push((i, true));
    }
    Ok(out)
}
