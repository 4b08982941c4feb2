//! `RunInsert`: a new run (queued, or blocked on its dependencies) with its `created`
//! event; or, when its Idempotency-Key already names a run created by the same request,
//! that run's id.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use serde_json::{Value, json};

use super::super::super::rows::KeyRow;
use super::super::batch::{
    DependencyProblem, KeyDecision, KeyGate, check_dependencies, link_dependencies,
};
use super::super::sql;
use super::cancel_run;
use super::{Apply, Batch, Command};
use crate::domain::{
    AgentName, Compensation, DEFAULT_TENANT, EventKind, Inserted, NewRun, Run, RunId, RunStatus,
};
use crate::store::{StoreError, from_ms, to_ms, to_ms_ceil};

/// Replies the new run or the one its key names; `Conflict` when the key was used with
/// another request, `BadDependencies` when `depends_on` names no run or a failed one.
pub(in crate::store) struct RunInsert(pub(in crate::store) NewRun);

impl Command for RunInsert {
    type Reply = Result<Inserted, StoreError>;

    fn may_ready_runs(&self) -> bool {
        true
    }
}

impl Apply for RunInsert {
    async fn apply(
        b: &mut Batch<'_>,
        commands: &[&Self],
    ) -> Result<Vec<Result<Inserted, StoreError>>, StoreError> {
        let runs: Vec<&NewRun> = commands.iter().map(|RunInsert(run)| run).collect();
        let answers = insert_runs(b, &runs, &HashSet::new()).await?;
        Ok(answers.into_iter().map(InsertAnswer::into_reply).collect())
    }
}

/// What an insert answers: a new run, the run its Idempotency-Key already names, or a
/// refusal because the key was used with another request.
pub(in crate::store) enum InsertAnswer {
    New(Box<Run>),
    Existing(RunId),
    KeyReused,
    /// Some of `depends_on` name no run, or runs that failed or were cancelled.
    BadDependencies(Vec<DependencyProblem>),
    /// Its concurrency key is full and its policy is `reject`.
    KeyBusy(String),
}

impl InsertAnswer {
    fn into_reply(self) -> Result<Inserted, StoreError> {
        match self {
            InsertAnswer::New(run) => Ok(Inserted::New(run)),
            InsertAnswer::Existing(id) => Ok(Inserted::Existing(id)),
            InsertAnswer::KeyReused => Err(StoreError::Conflict(
                "idempotency_key_reused",
                "this Idempotency-Key was already used with a different request".into(),
            )),
            InsertAnswer::BadDependencies(problems) => Err(StoreError::BadDependencies(problems)),
            InsertAnswer::KeyBusy(message) => Err(StoreError::KeyBusy(message)),
        }
    }
}

/// Inserts runs; answers each in the order given.
///
/// `siblings` are runs inserted together with these (a batch): a dependency on one of them
/// is on a run not stored yet, which leaves the dependent blocked.
pub(in crate::store) async fn insert_runs(
    b: &mut Batch<'_>,
    runs: &[&NewRun],
    siblings: &HashSet<RunId>,
) -> Result<Vec<InsertAnswer>, StoreError> {
    let inserts: Vec<(usize, &NewRun)> = runs.iter().copied().enumerate().collect();
    let inserts = &inserts[..];
    let now = b.now;
    let mut out = Vec::with_capacity(inserts.len());
    let mut fresh: Vec<(usize, &NewRun)> = Vec::with_capacity(inserts.len());
    // keys taken earlier in this batch, which the database cannot show yet
    let mut batch_keys: HashMap<&str, (&str, RunId)> = HashMap::new();
    let mut blocked: HashMap<RunId, bool> = HashMap::new();
    let mut gate = KeyGate::load(b, runs).await?;
    let mut waits_for_key: HashSet<RunId> = HashSet::new();
    for &(i, run) in inserts {
        if let Some(key) = &run.idempotency {
            let holder = match batch_keys.get(key.key.as_str()) {
                Some(&(fingerprint, id)) => Some((fingerprint.to_owned(), id)),
                None => key_holder(b, &key.key).await?,
            };
            match holder {
                Some((fingerprint, id)) if fingerprint == key.fingerprint => {
                    out.push((i, InsertAnswer::Existing(id)));
                    continue;
                }
                Some(_) => {
                    out.push((i, InsertAnswer::KeyReused));
                    continue;
                }
                None => {}
            }
        }
        // dependencies: refuse unknown or already failed ones, block until the others
        // succeed; a refused run reserves no key
        if !run.depends_on.is_empty() {
            let stored: Vec<RunId> = run
                .depends_on
                .iter()
                .filter(|d| !siblings.contains(d))
                .copied()
                .collect();
            let on_siblings = stored.len() < run.depends_on.len();
            let checked = if stored.is_empty() {
                Ok(false)
            } else {
                check_dependencies(b, &stored, &run.tenant).await?
            };
            match checked {
                Ok(is_blocked) => {
                    blocked.insert(run.id, is_blocked || on_siblings);
                }
                Err(problems) => {
                    out.push((i, InsertAnswer::BadDependencies(problems)));
                    continue;
                }
            }
        }
        // its concurrency key: holds it, waits its turn, or is refused
        if run.concurrency.is_some() {
            match gate.decide(b, run).await? {
                KeyDecision::Holds => {}
                KeyDecision::Waits => {
                    waits_for_key.insert(run.id);
                }
                KeyDecision::Busy(message) => {
                    out.push((i, InsertAnswer::KeyBusy(message)));
                    continue;
                }
            }
        }
        if let Some(key) = &run.idempotency {
            batch_keys.insert(&key.key, (&key.fingerprint, run.id));
        }
        fresh.push((i, run));
    }
    if fresh.is_empty() {
        return Ok(in_order(out));
    }
    let status = |r: &NewRun| {
        if waits_for_key.contains(&r.id) || blocked.get(&r.id).copied().unwrap_or(false) {
            RunStatus::Blocked
        } else {
            RunStatus::Queued
        }
    };
    let rows: Vec<InsertRow> = fresh
        .iter()
        .map(|(_, r)| InsertRow::new(r, status(r), waits_for_key.contains(&r.id), now))
        .collect();
    sqlx::query(sql::INSERT_RUNS)
        .bind(serde_json::to_string(&rows).expect("rows serialise"))
        .bind(now)
        .execute(&mut *b.conn)
        .await?;
    let links: Vec<(RunId, &[RunId])> = fresh
        .iter()
        .map(|(_, r)| (r.id, r.depends_on.as_slice()))
        .collect();
    link_dependencies(b, &links).await?;
    for (i, r) in fresh {
        let run_at = r.run_at.map_or(now, to_ms_ceil);
        let status = status(r);
        if status == RunStatus::Queued {
            b.made_ready(run_at);
        }
        b.event_by(
            r.id.to_string(),
            1,
            EventKind::Created,
            0,
            json!({}),
            r.created_by.clone(),
        );
        let mut record = new_run_record(r, now, run_at);
        record.status = status;
        record.waiting_for_key = waits_for_key.contains(&r.id);
        out.push((i, InsertAnswer::New(Box::new(record))));
    }
    // runs of this batch that a later one's key policy cancelled
    for (id, by, policy) in std::mem::take(&mut gate.displaced) {
        let actor = runs
            .iter()
            .find(|r| r.id == by)
            .and_then(|r| r.created_by.clone());
        let data = super::super::batch::displaced_by(by, policy);
        cancel_run(b, &id.to_string(), data, actor).await?;
        for (_, answer) in &mut out {
            if let InsertAnswer::New(record) = answer
                && record.id == id
            {
                record.status = RunStatus::Cancelled;
                record.waiting_for_key = false;
            }
        }
    }
    Ok(in_order(out))
}

/// A row of `INSERT_RUNS`'s JSON array (its keys are the statement's `value->>'…'`). What
/// most runs do not set is left out: every field costs a parse.
#[derive(Serialize)]
struct InsertRow<'a> {
    id: String,
    agent: &'a AgentName,
    input: &'a Value,
    priority: i32,
    metadata: &'a BTreeMap<String, String>,
    max_attempts: u32,
    timeout_ms: u64,
    backoff_base_ms: u64,
    backoff_cap_ms: u64,
    run_at: i64,
    /// Only when not queued (blocked on its dependencies).
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    depends_count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fingerprint: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_expires_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deadline: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    on_failure: Option<&'a Compensation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    callback_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    compensates: Option<String>,
    /// Only for a tenant other than the default.
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_parent: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    concurrency_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    concurrency_limit: Option<u32>,
    /// Only when it waits for its key.
    #[serde(skip_serializing_if = "Option::is_none")]
    key_waiting: Option<u8>,
}

impl<'a> InsertRow<'a> {
    fn new(r: &'a NewRun, status: RunStatus, waits_for_key: bool, now: i64) -> Self {
        let key = r.idempotency.as_ref();
        Self {
            id: r.id.to_string(),
            agent: &r.agent,
            input: &r.input,
            priority: r.priority,
            metadata: &r.metadata,
            max_attempts: r.max_attempts,
            timeout_ms: r.timeout.as_millis() as u64,
            backoff_base_ms: r.backoff.base.as_millis() as u64,
            backoff_cap_ms: r.backoff.cap.as_millis() as u64,
            run_at: r.run_at.map_or(now, to_ms_ceil),
            status: (status != RunStatus::Queued).then(|| status.as_str()),
            depends_count: (!r.depends_on.is_empty()).then_some(r.depends_on.len()),
            key: key.map(|k| k.key.as_str()),
            fingerprint: key.map(|k| k.fingerprint.as_str()),
            key_expires_at: key.map(|k| to_ms(k.expires_at)),
            deadline: r.deadline.map(to_ms),
            expires_at: r.expires_at.map(to_ms),
            on_failure: r.on_failure.as_ref(),
            callback_url: r.callback_url.as_deref(),
            compensates: r.compensates.map(|id| id.to_string()),
            tenant: (r.tenant.as_str() != DEFAULT_TENANT).then(|| r.tenant.as_str()),
            trace_parent: r.trace_parent.as_deref(),
            created_by: r.created_by.as_deref(),
            concurrency_key: r.concurrency.as_ref().map(|c| c.key.as_str()),
            concurrency_limit: r.concurrency.as_ref().map(|c| c.limit),
            key_waiting: waits_for_key.then_some(1),
        }
    }
}

fn in_order(mut answers: Vec<(usize, InsertAnswer)>) -> Vec<InsertAnswer> {
    answers.sort_by_key(|(i, _)| *i);
    answers.into_iter().map(|(_, answer)| answer).collect()
}

/// The run holding `key` and its request fingerprint; an expired key is freed instead.
pub(super) async fn key_holder(
    b: &mut Batch<'_>,
    key: &str,
) -> Result<Option<(String, RunId)>, StoreError> {
    let row: Option<KeyRow> = sqlx::query_as(sql::FIND_KEY)
        .bind(key)
        .fetch_optional(&mut *b.conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let id = row.run_id()?;
    if row.expired(b.now) {
        sqlx::query(sql::FREE_KEY)
            .bind(id.to_string())
            .execute(&mut *b.conn)
            .await?;
        return Ok(None);
    }
    Ok(Some((row.request_hash.unwrap_or_default(), id)))
}

fn new_run_record(r: &NewRun, now: i64, run_at: i64) -> Run {
    Run {
        id: r.id,
        tenant: r.tenant.to_string(),
        created_by: r.created_by.clone(),
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
        checkpoint: None,
        deadline: r.deadline,
        expires_at: r.expires_at,
        on_failure: r.on_failure.clone(),
        depends_on: r.depends_on.clone(),
        waiting_for: None,
        callback_url: r.callback_url.clone(),
        concurrency_key: r.concurrency.as_ref().map(|c| c.key.clone()),
        concurrency_limit: r.concurrency.as_ref().map(|c| c.limit),
        waiting_for_key: false,
        compensation_run_id: None,
        compensates_run_id: r.compensates,
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
