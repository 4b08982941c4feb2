//! `RunInsert`: a new run (queued, or blocked on its dependencies) with its `created`
//! event; or, when its Idempotency-Key already names a run created by the same request,
//! that run's id.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::super::super::rows::KeyRow;
use super::super::batch::{DependencyProblem, check_dependencies, link_dependencies};
use super::super::sql;
use super::{Apply, Batch, Command};
use crate::domain::{DEFAULT_TENANT, EventKind, Inserted, NewRun, Run, RunId, RunStatus};
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
        let answers = insert_runs(b, &runs).await?;
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
}

impl InsertAnswer {
    fn into_reply(self) -> Result<Inserted, StoreError> {
        match self {
            InsertAnswer::New(run) => Ok(Inserted::New(run)),
            InsertAnswer::Existing(id) => Ok(Inserted::Existing(id)),
            InsertAnswer::KeyReused => Err(StoreError::Conflict(
                "this Idempotency-Key was already used with a different request".into(),
            )),
            InsertAnswer::BadDependencies(problems) => Err(StoreError::BadDependencies(problems)),
        }
    }
}

/// Inserts runs; answers each in the order given.
pub(in crate::store) async fn insert_runs(
    b: &mut Batch<'_>,
    runs: &[&NewRun],
) -> Result<Vec<InsertAnswer>, StoreError> {
    let inserts: Vec<(usize, &NewRun)> = runs.iter().copied().enumerate().collect();
    let inserts = &inserts[..];
    let now = b.now;
    let mut out = Vec::with_capacity(inserts.len());
    let mut fresh: Vec<(usize, &NewRun)> = Vec::with_capacity(inserts.len());
    // keys taken earlier in this batch, which the database cannot show yet
    let mut batch_keys: HashMap<&str, (&str, RunId)> = HashMap::new();
    let mut blocked: HashMap<RunId, bool> = HashMap::new();
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
            match check_dependencies(b, &run.depends_on, &run.tenant).await? {
                Ok(is_blocked) => {
                    blocked.insert(run.id, is_blocked);
                }
                Err(problems) => {
                    out.push((i, InsertAnswer::BadDependencies(problems)));
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
        if blocked.get(&r.id).copied().unwrap_or(false) {
            RunStatus::Blocked
        } else {
            RunStatus::Queued
        }
    };
    let rows: Vec<Value> = fresh
        .iter()
        .map(|(_, r)| {
            let mut row = json!({
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
            });
            // the rest only when set: most runs have none, and every field costs a parse
            let mut set = |key: &str, value: Value| row[key] = value;
            if status(r) != RunStatus::Queued {
                set("status", json!(status(r).as_str()));
            }
            if !r.depends_on.is_empty() {
                set("depends_count", json!(r.depends_on.len()));
            }
            if let Some(k) = &r.idempotency {
                set("key", json!(k.key));
                set("fingerprint", json!(k.fingerprint));
                set("key_expires_at", json!(to_ms(k.expires_at)));
            }
            if let Some(deadline) = r.deadline {
                set("deadline", json!(to_ms(deadline)));
            }
            if let Some(expires_at) = r.expires_at {
                set("expires_at", json!(to_ms(expires_at)));
            }
            if let Some(on_failure) = &r.on_failure {
                set("on_failure", json!(on_failure));
            }
            if let Some(url) = &r.callback_url {
                set("callback_url", json!(url));
            }
            if let Some(compensates) = r.compensates {
                set("compensates", json!(compensates.to_string()));
            }
            if r.tenant.as_str() != DEFAULT_TENANT {
                set("tenant", json!(r.tenant.as_str()));
            }
            if let Some(trace_parent) = &r.trace_parent {
                set("trace_parent", json!(trace_parent));
            }
            row
        })
        .collect();
    sqlx::query(sql::INSERT_RUNS)
        .bind(Value::Array(rows).to_string())
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
        b.event(r.id.to_string(), 1, EventKind::Created, 0, json!({}));
        let mut record = new_run_record(r, now, run_at);
        record.status = status;
        out.push((i, InsertAnswer::New(Box::new(record))));
    }
    Ok(in_order(out))
}

fn in_order(mut answers: Vec<(usize, InsertAnswer)>) -> Vec<InsertAnswer> {
    answers.sort_by_key(|(i, _)| *i);
    answers.into_iter().map(|(_, answer)| answer).collect()
}

/// The run holding `key` and its request fingerprint; an expired key is freed instead.
async fn key_holder(b: &mut Batch<'_>, key: &str) -> Result<Option<(String, RunId)>, StoreError> {
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
