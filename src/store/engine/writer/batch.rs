//! One batch of requests, applied in one transaction: the [`Batch`] every step writes
//! through, and [`ORDER`], the order in which the kinds of writes are applied.
//!
//! Within one attempt that order is the order a worker sends its writes in (progress
//! before its finish). Claims come after every write that can make runs claimable, so
//! they see them; the events every step produced are inserted in one statement near the
//! end, and retention's deletes after that, so no event is written for a run just
//! deleted. On PostgreSQL the batch ends with the `NOTIFY` of runs made ready.

mod compensate;
mod concurrency;
mod dependencies;
mod limits;
mod refusal;
mod signals;
mod webhooks;

use std::collections::{HashMap, HashSet};

use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;

use super::cmd::*;
use super::command::{Apply, Queued, Step, step};
use super::{Conn, sql};
use crate::domain::{EventKind, RunErrorKind, RunEvent};
use crate::store::{Clock, Fence, StoreError, Streamed, Transition};

pub(super) use concurrency::{KeyDecision, KeyGate, displaced_by, wait_again};
pub(super) use dependencies::{DependencyProblem, check as check_dependencies};
pub(super) use dependencies::{link as link_dependencies, results as dependency_results};
pub(super) use limits::{claim_within, room_to_send};
pub(super) use refusal::{Refusal, refusal};
pub(super) use signals::{end_waits, insert_signal, resume, wait};

/// The order in which a batch applies the kinds of writes, and its own steps between
/// them. A new kind of write is one line here, or in `changes_in_arrival_order` when it
/// must land in the order it was asked among the changes applied there.
const ORDER: &[Step] = &[
    step::<RunInsert>,
    step::<RunInsertBatch>,
    step::<AttemptRenew>,
    attempt_reports,
    step::<AttemptTakeSignal>,
    step::<AttemptFinish>,
    changes_in_arrival_order,
    step::<AgentDeclare>,
    step::<ScheduleCreate>,
    step::<ScheduleFire>,
    // what the writes above settled: dependents unblocked or failed, compensations, and
    // the runs waiting for a concurrency key the finished runs held
    resolve_dependencies,
    compensate,
    admit_keys,
    // claims last, so they see every run this batch made claimable; then the claims of
    // Redis messages, and the feeder's marks, which see the claims' room
    step::<RunClaim>,
    step::<RunClaimDispatched>,
    step::<RunDispatch>,
    schedule_webhooks,
    insert_events,
    name_agents,
    step::<RunPurge>,
    notify_ready,
];

pub(super) struct Applied {
    /// How long after the batch's time (ms, on the store's clock; 0 or less: now) the
    /// earliest run it made ready or scheduled comes due. A span, not a time: the writer
    /// paces its waiting by real time, whatever clock the store keeps records by.
    pub(super) ready_in: Option<i64>,
    /// The events written, by run, when asked for (someone follows events).
    pub(super) events: Vec<(String, RunEvent)>,
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
    actor: Option<String>,
}

/// A row of `INSERT_EVENTS`'s JSON array, with one-letter keys: a batch may hold
/// thousands.
#[derive(Serialize)]
struct EventInsert<'a> {
    r: &'a str,
    s: i64,
    k: &'static str,
    a: u32,
    d: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    w: Option<&'a str>,
}

pub(in crate::store) struct Batch<'c> {
    pub(super) conn: &'c mut Conn,
    /// The batch's time, from the store's clock: every record it writes has it.
    pub(super) now: i64,
    pub(super) clock: Clock,
    events: Vec<EventRow>,
    ready_at: Option<i64>,
    /// The events inserted, kept for the hub when someone follows events.
    followed: Option<Vec<(String, RunEvent)>>,
    /// Runs that failed for good in this batch: candidates for compensation.
    failed: Vec<String>,
    /// Runs that reached a terminal state in this batch, for their dependents.
    pub(super) settled: Vec<(String, EventKind)>,
    /// Runs that reached a terminal state and may have a callback_url.
    pub(super) callbacks: Vec<String>,
    /// Runs that reached a terminal state: the concurrency keys they held have room. A
    /// success is here only when its run has a key (its finish says), so a batch of runs
    /// without keys looks up none.
    pub(super) ended: Vec<String>,
    /// Concurrency keys (tenant, agent, key) whose waiting runs may be let in.
    pub(super) keys_to_admit: std::collections::BTreeSet<(String, String, String)>,
    /// Whether this batch holds `sql::KEY_LOCK` already.
    keys_locked: bool,
    /// Transitions of runs (by id) to count once the batch commits.
    pub(super) transitions: Vec<(String, Transition)>,
    /// Agents of runs, where a statement returned them anyway (saves looking them up).
    pub(super) agents: HashMap<String, String>,
    /// `transitions` with each run's agent, once looked up.
    counted: Vec<(String, Transition)>,
}

impl Batch<'_> {
    pub(super) fn event(
        &mut self,
        run_id: String,
        seq: i64,
        kind: EventKind,
        attempt: u32,
        data: Value,
    ) {
        self.event_by(run_id, seq, kind, attempt, data, None)
    }

    /// [`Batch::event`] made by an API caller, recorded as its `actor`.
    pub(super) fn event_by(
        &mut self,
        run_id: String,
        seq: i64,
        kind: EventKind,
        attempt: u32,
        data: Value,
        actor: Option<String>,
    ) {
        if kind == EventKind::Failed {
            self.failed.push(run_id.clone());
        }
        // a success settles dependents only when the run has some (see `finish`);
        // failures and cancels are rare enough to always look
        if matches!(kind, EventKind::Failed | EventKind::Cancelled) {
            self.settled.push((run_id.clone(), kind));
            self.callbacks.push(run_id.clone());
        }
        if matches!(kind, EventKind::Failed | EventKind::Cancelled) {
            self.ended.push(run_id.clone());
        }
        let transition = match kind {
            EventKind::Succeeded => Some(Transition::Succeeded),
            // every failure event says why (`error.kind`); one that did not would be
            // counted as the agent's
            EventKind::Failed => Some(Transition::Failed(
                serde_json::from_value(data["error"]["kind"].clone())
                    .unwrap_or(RunErrorKind::AgentError),
            )),
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
            actor,
        });
    }

    /// Takes the run's row lock where the dialect needs it (see `sql::LOCK_RUN`), so a
    /// decision that reads other rows sees every write that committed before it.
    pub(super) async fn lock_run(&mut self, run_id: &str) -> Result<(), StoreError> {
        if let Some(lock) = sql::LOCK_RUN {
            sqlx::query(lock)
                .bind(run_id)
                .execute(&mut *self.conn)
                .await?;
        }
        Ok(())
    }

    pub(super) fn made_ready(&mut self, at: i64) {
        self.ready_at = Some(self.ready_at.map_or(at, |r| r.min(at)));
    }
}

/// Applies `requests` in one transaction, step by step in [`ORDER`], keeping each
/// request's reply; commits, or rolls back and fails.
pub(super) async fn apply_in_tx(
    conn: &mut Conn,
    requests: &mut [Box<dyn Queued>],
    track_heads: bool,
    clock: Clock,
) -> Result<Applied, StoreError> {
    sqlx::query(sql::BEGIN).execute(&mut *conn).await?;
    let mut batch = Batch {
        conn,
        now: clock.now_ms(),
        clock,
        events: Vec::new(),
        ready_at: None,
        followed: track_heads.then(Vec::new),
        failed: Vec::new(),
        settled: Vec::new(),
        callbacks: Vec::new(),
        ended: Vec::new(),
        keys_to_admit: Default::default(),
        keys_locked: false,
        transitions: Vec::new(),
        agents: HashMap::new(),
        counted: Vec::new(),
    };
    let mut applied = Ok(());
    for step in ORDER {
        applied = step(&mut batch, requests).await;
        if applied.is_err() {
            break;
        }
    }
    let committed = match applied {
        // a COMMIT whose answer never came may have been applied: say so, so that no
        // caller takes it for a write that certainly failed
        Ok(()) => sqlx::query("COMMIT")
            .execute(&mut *batch.conn)
            .await
            .map_err(StoreError::from_commit),
        Err(e) => Err(e),
    };
    match committed {
        Ok(_) => {
            debug_assert!(
                requests.iter().all(|r| r.answered()),
                "a kind of write missing from ORDER"
            );
            Ok(Applied {
                ready_in: batch.ready_at.map(|at| at - batch.now),
                events: batch.followed.unwrap_or_default(),
                transitions: batch.counted,
            })
        }
        Err(e) => {
            // a failed statement or COMMIT must not leave the connection inside a transaction
            let _ = sqlx::query("ROLLBACK").execute(&mut *batch.conn).await;
            Err(e)
        }
    }
}

/// Progress reports, logs, checkpoints and stream parts of attempts, in the order they
/// came: within one attempt, the order its worker sent them in. An attempt's progress
/// reports in one batch are coalesced to its last, whose answer they all get; its adjacent
/// stream appends (no other report of it between them) are written together, with one
/// answer.
fn attempt_reports<'a, 'c>(
    b: &'a mut Batch<'c>,
    requests: &'a mut [Box<dyn Queued>],
) -> BoxFuture<'a, Result<(), StoreError>> {
    Box::pin(async move {
        let mut last_progress = HashMap::new();
        // the groups of adjacent stream appends: at its first request's index, its requests
        let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut open_group: HashMap<Fence, usize> = HashMap::new();
        // attempts with progress, logs or checkpoints here: their appends keep their place
        let mut mixed: HashSet<Fence> = HashSet::new();
        // an append sent after its attempt's outcome (which this batch applies later) comes
        // from an attempt that has ended: it is refused as one that lost its run
        let mut ended: HashSet<Fence> = HashSet::new();
        let mut streamed: HashMap<usize, Streamed> = HashMap::new();
        for (i, request) in requests.iter().enumerate() {
            if let Some(finish) = request.command::<AttemptFinish>() {
                ended.insert(finish.fence.clone());
            } else if let Some(append) = request.command::<AttemptStream>() {
                if ended.contains(&append.fence) {
                    streamed.insert(i, Streamed::Lost);
                } else {
                    let first = *open_group.entry(append.fence.clone()).or_insert(i);
                    groups.entry(first).or_default().push(i);
                }
            } else if let Some(fence) = report_fence(request.as_ref(), i, &mut last_progress) {
                open_group.remove(fence);
                mixed.insert(fence.clone());
            }
        }
        // the attempts that only stream in this batch (one group each) are written in one
        // statement, one group per claim (two tokens of one claim that differ in their
        // attempt number go one after the other); the others in their order below
        let mut claims = HashSet::new();
        let mut firsts: Vec<usize> = groups.keys().copied().collect();
        firsts.sort_unstable();
        let alone: Vec<Vec<usize>> = firsts
            .into_iter()
            .filter(|first| {
                let fence = &requests[*first]
                    .command::<AttemptStream>()
                    .expect("a group starts with an append")
                    .fence;
                !mixed.contains(fence) && claims.insert((fence.run_id, fence.claim))
            })
            .filter_map(|first| groups.remove(&first))
            .collect();
        if !alone.is_empty() {
            let appends: Vec<Vec<&AttemptStream>> = alone
                .iter()
                .map(|members| appends_of(requests, members))
                .collect();
            let outcomes = AttemptStream::apply_many(b, &appends).await?;
            for ((members, appends), outcome) in alone.iter().zip(&appends).zip(outcomes) {
                let outcomes = AttemptStream::one_by_one_if_full(b, appends, outcome).await?;
                streamed.extend(members.iter().copied().zip(outcomes));
            }
        }
        let mut progress_landed = HashMap::new();
        for i in 0..requests.len() {
            let request = &mut requests[i];
            if let Some(progress) = request.command::<AttemptProgress>() {
                if last_progress.get(&progress.fence) == Some(&i) {
                    let landed = progress.apply(b).await?;
                    progress_landed.insert(progress.fence.clone(), landed);
                }
            } else if let Some(log) = request.command::<AttemptLog>() {
                let landed = log.apply(b).await?;
                request.answer::<AttemptLog>(landed);
            } else if let Some(checkpoint) = request.command::<AttemptCheckpoint>() {
                let landed = checkpoint.apply(b).await?;
                request.answer::<AttemptCheckpoint>(landed);
            } else if let Some(members) = groups.get(&i) {
                let appends = appends_of(requests, members);
                let outcome = AttemptStream::apply_together(b, &appends).await?;
                let outcomes = AttemptStream::one_by_one_if_full(b, &appends, outcome).await?;
                streamed.extend(members.iter().copied().zip(outcomes));
            }
        }
        for (i, request) in requests.iter_mut().enumerate() {
            if let Some(outcome) = streamed.get(&i) {
                request.answer::<AttemptStream>(*outcome);
                continue;
            }
            let landed = match request.command::<AttemptProgress>() {
                Some(progress) => progress_landed[&progress.fence],
                None => continue,
            };
            request.answer::<AttemptProgress>(landed);
        }
        Ok(())
    })
}

/// The fence of a progress report, log or checkpoint (noting the last progress of each
/// attempt), or `None` for any other request.
fn report_fence<'r>(
    request: &'r (dyn Queued + 'static),
    i: usize,
    last_progress: &mut HashMap<Fence, usize>,
) -> Option<&'r Fence> {
    if let Some(progress) = request.command::<AttemptProgress>() {
        last_progress.insert(progress.fence.clone(), i);
        return Some(&progress.fence);
    }
    (request.command::<AttemptLog>().map(|c| &c.fence))
        .or_else(|| request.command::<AttemptCheckpoint>().map(|c| &c.fence))
}

/// The appends at these indices.
fn appends_of<'r>(requests: &'r [Box<dyn Queued>], members: &[usize]) -> Vec<&'r AttemptStream> {
    members
        .iter()
        .filter_map(|&m| requests[m].command::<AttemptStream>())
        .collect()
}

/// Releases, hand-backs, sweeps, cancels, webhook claims and results, signals sent,
/// requeues, heartbeats, lost Redis messages and the writer's close, one at a time in the
/// order they came: two changes asked of one run (a retry, then a cancel) must land in
/// the order they were asked. A new kind of this group is one line here.
fn changes_in_arrival_order<'a, 'c>(
    b: &'a mut Batch<'c>,
    requests: &'a mut [Box<dyn Queued>],
) -> BoxFuture<'a, Result<(), StoreError>> {
    Box::pin(async move {
        for request in requests.iter_mut() {
            let _applied = alone::<WorkerRelease>(b, request).await?
                || alone::<AttemptHandBack>(b, request).await?
                || alone::<RunSweep>(b, request).await?
                || alone::<RunCancel>(b, request).await?
                || alone::<RunChange>(b, request).await?
                || alone::<WebhookClaim>(b, request).await?
                || alone::<WebhookDone>(b, request).await?
                || alone::<RunSignal>(b, request).await?
                || alone::<RunRequeue>(b, request).await?
                || alone::<WorkerHeartbeat>(b, request).await?
                || alone::<RunUndispatch>(b, request).await?
                || alone::<AgentPause>(b, request).await?
                || alone::<ScheduleChange>(b, request).await?
                || alone::<WriterClose>(b, request).await?;
        }
        Ok(())
    })
}

/// Applies `request` on its own when it is of kind `C`; `false` when it is not.
async fn alone<C: Apply>(
    b: &mut Batch<'_>,
    request: &mut Box<dyn Queued>,
) -> Result<bool, StoreError> {
    let reply = match request.command::<C>() {
        Some(command) => C::apply(b, &[command]).await?.pop(),
        None => return Ok(false),
    };
    request.answer::<C>(reply.expect("a reply for the command"));
    Ok(true)
}

/// Dependents of the runs this batch settled: unblocked, or failed with them.
fn resolve_dependencies<'a, 'c>(
    b: &'a mut Batch<'c>,
    _: &'a mut [Box<dyn Queued>],
) -> BoxFuture<'a, Result<(), StoreError>> {
    Box::pin(dependencies::resolve(b))
}

/// Compensation runs of the runs that failed for good in this batch.
fn compensate<'a, 'c>(
    b: &'a mut Batch<'c>,
    _: &'a mut [Box<dyn Queued>],
) -> BoxFuture<'a, Result<(), StoreError>> {
    Box::pin(compensate::compensate(b))
}

/// Runs waiting for a concurrency key that a run this batch finished held, let in.
fn admit_keys<'a, 'c>(
    b: &'a mut Batch<'c>,
    _: &'a mut [Box<dyn Queued>],
) -> BoxFuture<'a, Result<(), StoreError>> {
    Box::pin(concurrency::admit(b))
}

/// Completion webhooks of the runs this batch settled.
fn schedule_webhooks<'a, 'c>(
    b: &'a mut Batch<'c>,
    _: &'a mut [Box<dyn Queued>],
) -> BoxFuture<'a, Result<(), StoreError>> {
    Box::pin(webhooks::schedule(b))
}

fn insert_events<'a, 'c>(
    b: &'a mut Batch<'c>,
    _: &'a mut [Box<dyn Queued>],
) -> BoxFuture<'a, Result<(), StoreError>> {
    Box::pin(insert_event_rows(b))
}

fn name_agents<'a, 'c>(
    b: &'a mut Batch<'c>,
    _: &'a mut [Box<dyn Queued>],
) -> BoxFuture<'a, Result<(), StoreError>> {
    Box::pin(name_transitions(b))
}

/// On PostgreSQL, other processes' idle workers wake at the commit (LISTEN/NOTIFY) when
/// the batch made runs ready now.
fn notify_ready<'a, 'c>(
    b: &'a mut Batch<'c>,
    _: &'a mut [Box<dyn Queued>],
) -> BoxFuture<'a, Result<(), StoreError>> {
    Box::pin(async move {
        if let (Some(notify), Some(ready_at)) = (sql::NOTIFY_READY, b.ready_at)
            && ready_at <= b.now
        {
            sqlx::query(notify).execute(&mut *b.conn).await?;
        }
        Ok(())
    })
}

/// Gives each counted transition its run's agent: most finishes returned it already; the
/// rest (cancels, sweeps, settled dependents) are looked up in one statement.
async fn name_transitions(b: &mut Batch<'_>) -> Result<(), StoreError> {
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

async fn insert_event_rows(b: &mut Batch<'_>) -> Result<(), StoreError> {
    if b.events.is_empty() {
        return Ok(());
    }
    // a `created` event is not a row of its own: its every field is on the run's row
    // (`created_at`, `created_by`), and reading the events puts it back (`LIST_EVENTS`)
    let rows: Vec<EventInsert> = b
        .events
        .iter()
        .filter(|e| e.kind != EventKind::Created)
        .map(|e| EventInsert {
            r: &e.run_id,
            s: e.seq,
            k: e.kind.as_str(),
            a: e.attempt,
            d: &e.data,
            w: e.actor.as_deref(),
        })
        .collect();
    let stored = !rows.is_empty();
    let rows = serde_json::to_string(&rows).expect("rows serialise");
    let at = crate::store::from_ms(b.now);
    match &mut b.followed {
        Some(followed) => followed.extend(b.events.drain(..).map(|e| {
            let event = RunEvent {
                seq: e.seq,
                at,
                kind: e.kind.as_str().to_owned(),
                attempt: e.attempt,
                data: e.data,
                actor: e.actor,
            };
            (e.run_id, event)
        })),
        None => b.events.clear(),
    }
    if !stored {
        return Ok(());
    }
    sqlx::query(sql::INSERT_EVENTS)
        .bind(rows)
        .bind(b.now)
        .execute(&mut *b.conn)
        .await?;
    Ok(())
}
