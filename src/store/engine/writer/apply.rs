//! Applying one batch of requests in one transaction.
//!
//! Ops are applied by kind in a fixed order: inserts; lease renewals; progress, logs and
//! checkpoints; signals taken; finishes; then releases, hand-backs, sweeps, cancels,
//! webhook claims and results, signals sent, requeues and heartbeats; the dependents and
//! compensations those settled; claims, then claims of Redis messages, then the Redis
//! feeder's marks, so claims see every run the batch made claimable; last the webhook
//! deliveries it scheduled, every event row it produced (one statement), retention's
//! deletes (after the events, so none is written for a run just deleted), and on
//! PostgreSQL the `NOTIFY` of runs made ready. Within one attempt that order is the order a worker
//! sends them in (progress before its finish).

mod actions;
mod attempts;
mod compensate;
mod dependencies;
mod dispatch;
mod intake;
mod limits;
mod recovery;
mod retention;
mod signals;
mod webhooks;
mod workers;

use std::collections::HashMap;

use serde_json::{Value, json};

use super::{Answer, Op, now_ms};
use super::{Conn, sql};
use crate::domain::{EventKind, NewRun};
use crate::store::{Fence, Outcome, StoreError, Transition};

use attempts::{apply_progress_and_logs, distinct_runs, finish, renew};
pub(super) use dependencies::DependencyProblem;
pub(super) use intake::InsertAnswer;
use intake::{claim, insert_runs};
use recovery::{hand_back, release, sweep};

pub(super) struct Applied {
    pub(super) answers: Vec<Answer>,
    /// The earliest due time of runs made ready or scheduled by this batch.
    pub(super) ready_at: Option<i64>,
    /// Each written run's newest event seq, when asked for (someone follows events).
    pub(super) heads: Vec<(String, i64)>,
    /// The runs' transitions, by agent, for the process's counts.
    pub(super) transitions: Vec<(String, Transition)>,
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
    conn: &'c mut Conn,
    now: i64,
    events: Vec<EventRow>,
    ready_at: Option<i64>,
    heads: Option<Vec<(String, i64)>>,
    /// Runs that failed for good in this batch: candidates for compensation.
    failed: Vec<String>,
    /// Runs that reached a terminal state in this batch, for their dependents.
    settled: Vec<(String, EventKind)>,
    /// Runs that reached a terminal state and may have a callback_url.
    callbacks: Vec<String>,
    /// Transitions of runs (by id) to count once the batch commits.
    transitions: Vec<(String, Transition)>,
    /// Agents of runs, where a statement returned them anyway (saves looking them up).
    agents: HashMap<String, String>,
    /// `transitions` with each run's agent, once looked up.
    counted: Vec<(String, Transition)>,
}

impl Batch<'_> {
    fn event(&mut self, run_id: String, seq: i64, kind: EventKind, attempt: u32, data: Value) {
        if kind == EventKind::Failed {
            self.failed.push(run_id.clone());
        }
        // a success settles dependents only when the run has some (see `finish`);
        // failures and cancels are rare enough to always look
        if matches!(kind, EventKind::Failed | EventKind::Cancelled) {
            self.settled.push((run_id.clone(), kind));
            self.callbacks.push(run_id.clone());
        }
        let transition = match kind {
            EventKind::Succeeded => Some(Transition::Succeeded),
            EventKind::Failed => Some(Transition::Failed),
            EventKind::Cancelled => Some(Transition::Cancelled),
            EventKind::RetryScheduled => Some(Transition::Retried),
            _ => None,
        };
        if let Some(transition) = transition {
            self.transitions.push((run_id.clone(), transition));
        }
        self.events.push(EventRow {
            run_id,
            seq,
            kind,
            attempt,
            data,
        });
    }

    /// Takes the run's row lock where the dialect needs it (see `sql::LOCK_RUN`), so a
    /// decision that reads other rows sees every write that committed before it.
    async fn lock_run(&mut self, run_id: &str) -> Result<(), StoreError> {
        if let Some(lock) = sql::LOCK_RUN {
            sqlx::query(lock)
                .bind(run_id)
                .execute(&mut *self.conn)
                .await?;
        }
        Ok(())
    }

    fn made_ready(&mut self, at: i64) {
        self.ready_at = Some(self.ready_at.map_or(at, |r| r.min(at)));
    }
}

pub(super) async fn apply_in_tx(
    conn: &mut Conn,
    ops: &[&Op],
    track_heads: bool,
) -> Result<Applied, StoreError> {
    sqlx::query(sql::BEGIN).execute(&mut *conn).await?;
    let mut batch = Batch {
        conn,
        now: now_ms(),
        events: Vec::new(),
        ready_at: None,
        heads: track_heads.then(Vec::new),
        failed: Vec::new(),
        settled: Vec::new(),
        callbacks: Vec::new(),
        transitions: Vec::new(),
        agents: HashMap::new(),
        counted: Vec::new(),
    };
    let applied = match apply(&mut batch, ops).await {
        Ok(answers) => match sqlx::query("COMMIT").execute(&mut *batch.conn).await {
            Ok(_) => {
                return Ok(Applied {
                    answers,
                    ready_at: batch.ready_at,
                    heads: batch.heads.unwrap_or_default(),
                    transitions: batch.counted,
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

/// Applies the ops in the order of kinds the module documents.
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
            answers[i] = Some(Answer::Inserted(run));
        }
    }
    for (i, op) in ops.iter().enumerate() {
        if let Op::Renew(fences, lease) = op {
            answers[i] = Some(Answer::Renewed(renew(b, fences, *lease).await?));
        }
    }
    apply_progress_and_logs(b, ops, &mut answers).await?;
    for (i, op) in ops.iter().enumerate() {
        if let Op::TakeSignal(fence, names) = op {
            answers[i] = Some(Answer::Signal(signals::take(b, fence, names).await?));
        }
    }
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
            Op::Cancel(id) => {
                let refused = actions::cancel(b, *id).await?;
                answers[i] = Some(Answer::Changed(refused.map_or(Ok(1), Err)));
            }
            Op::ClaimWebhooks { limit, lease } => {
                let claimed = webhooks::claim(b, *limit, lease.as_millis() as i64).await?;
                answers[i] = Some(Answer::Webhooks(claimed));
            }
            Op::WebhookDone(delivery, result) => {
                webhooks::done(b, delivery, result).await?;
                answers[i] = Some(Answer::Applied(true));
            }
            Op::Signal(id, name, payload) => {
                answers[i] = Some(Answer::Changed(
                    signals::deliver(b, *id, name, payload).await?,
                ))
            }
            Op::Requeue(target) => {
                answers[i] = Some(Answer::Changed(actions::requeue(b, target).await?))
            }
            Op::Heartbeat(beat) => {
                workers::heartbeat(b, beat).await?;
                answers[i] = Some(Answer::Applied(true));
            }
            Op::Undispatch(messages) => {
                answers[i] = Some(Answer::Count(dispatch::undispatch(b, messages).await?))
            }
            Op::Close => answers[i] = Some(Answer::Closed),
            Op::Wake => answers[i] = Some(Answer::Applied(true)),
            _ => {}
        }
    }
    dependencies::resolve(b).await?;
    compensate::compensate(b).await?;
    for (i, op) in ops.iter().enumerate() {
        if let Op::Claim {
            worker_id,
            agents,
            limit,
            lease,
            agent_limits,
            ..
        } = op
        {
            let claimed = match agent_limits {
                Some(limits) => {
                    limits::claim_within(b, worker_id, agents.as_deref(), *limit, *lease, limits)
                        .await?
                }
                None => claim(b, worker_id, agents.as_deref(), *limit, *lease).await?,
            };
            answers[i] = Some(Answer::Claimed(claimed));
        }
    }
    // Redis delivery: claims from messages, then the feeder's marks, last like claims so
    // they see every run this batch made ready (and the marks see the claims' room)
    // one statement for every message claim of the batch with the same worker and lease
    // (each handler claims its own message, so a busy worker sends many at once)
    let mut groups: Vec<(&std::sync::Arc<str>, std::time::Duration, Vec<usize>)> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        if let Op::ClaimDispatched {
            worker_id, lease, ..
        } = op
        {
            answers[i] = Some(Answer::Claimed(Vec::new()));
            match groups
                .iter_mut()
                .find(|(w, l, _)| *w == worker_id && l == lease)
            {
                Some((_, _, members)) => members.push(i),
                None => groups.push((worker_id, *lease, vec![i])),
            }
        }
    }
    for (worker_id, lease, members) in groups {
        let mut asked = Vec::new();
        let mut asker = std::collections::HashMap::new();
        for &i in &members {
            if let Op::ClaimDispatched { messages, .. } = ops[i] {
                for message in messages {
                    asker.insert(message.0, i);
                    asked.push(*message);
                }
            }
        }
        for run in dispatch::claim_dispatched(b, worker_id, &asked, lease).await? {
            if let Some(Some(Answer::Claimed(runs))) = asker.get(&run.id).map(|&i| &mut answers[i])
            {
                runs.push(run);
            }
        }
    }
    for (i, op) in ops.iter().enumerate() {
        if let Op::Dispatch { agent, window, cap } = op {
            let most = match cap {
                Some(cap) => Some(limits::room_to_send(b, agent, *cap).await?),
                None => None,
            };
            answers[i] = Some(Answer::Dispatched(
                dispatch::dispatch(b, agent, *window, most).await?,
            ));
        }
    }
    webhooks::schedule(b).await?;
    insert_events(b).await?;
    name_agents(b).await?;
    for (i, op) in ops.iter().enumerate() {
        if let Op::Purge {
            status,
            after,
            before,
            limit,
        } = op
        {
            let purged = retention::purge(b, *status, after, before, *limit).await?;
            answers[i] = Some(Answer::Purged(purged));
        }
    }
    if let (Some(notify), Some(ready_at)) = (sql::NOTIFY_READY, b.ready_at) {
        // other processes' idle workers wake at the commit (PostgreSQL LISTEN/NOTIFY)
        if ready_at <= b.now {
            sqlx::query(notify).execute(&mut *b.conn).await?;
        }
    }
    Ok(answers
        .into_iter()
        .map(|a| a.expect("every op kind is applied above"))
        .collect())
}

/// Gives each counted transition its run's agent: most finishes returned it already; the
/// rest (cancels, sweeps, settled dependents) are looked up in one statement.
async fn name_agents(b: &mut Batch<'_>) -> Result<(), StoreError> {
    if b.transitions.is_empty() {
        return Ok(());
    }
    let unknown: Vec<&String> = b
        .transitions
        .iter()
        .map(|(id, _)| id)
        .filter(|id| !b.agents.contains_key(*id))
        .collect();
    if !unknown.is_empty() {
        let ids = serde_json::to_string(&unknown).expect("ids serialise");
        let rows: Vec<(String, String)> = sqlx::query_as(sql::AGENTS_OF)
            .bind(ids)
            .fetch_all(&mut *b.conn)
            .await?;
        b.agents.extend(rows);
    }
    for (id, transition) in std::mem::take(&mut b.transitions) {
        if let Some(agent) = b.agents.get(&id) {
            b.counted.push((agent.clone(), transition));
        }
    }
    Ok(())
}

async fn insert_events(b: &mut Batch<'_>) -> Result<(), StoreError> {
    if b.events.is_empty() {
        return Ok(());
    }
    if let Some(heads) = &mut b.heads {
        heads.extend(b.events.iter().map(|e| (e.run_id.clone(), e.seq)));
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
