//! New runs in, due runs out: inserts and claims.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Row;

use super::super::super::Db;
use super::super::super::rows::{KeyRow, parse_id};
use super::super::sql;
use super::Batch;
use crate::domain::{DEFAULT_TENANT, EventKind, NewRun, Run, RunId, RunStatus};
use crate::store::{ClaimedRun, StoreError, from_ms, to_ms, to_ms_ceil};

/// What an insert answers: a new run, the run its Idempotency-Key already names, or a
/// refusal because the key was used with another request.
pub(crate) enum InsertAnswer {
    New(Box<Run>),
    Existing(RunId),
    KeyReused,
    /// Some of `depends_on` name no run, or runs that failed or were cancelled.
    BadDependencies(Vec<super::DependencyProblem>),
}

pub(super) async fn insert_runs(
    b: &mut Batch<'_>,
    inserts: &[(usize, &NewRun)],
) -> Result<Vec<(usize, InsertAnswer)>, StoreError> {
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
            match super::dependencies::check(b, &run.depends_on, &run.tenant).await? {
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
        return Ok(out);
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
    super::dependencies::link(b, &links).await?;
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
    Ok(out)
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

pub(super) async fn claim(
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
    claimed_rows(b, worker_id, rows).await
}

/// Maps the rows a claim statement returned (`CLAIM`, `CLAIM_DISPATCHED`) to claimed runs,
/// with a `started` event each and the results of the runs they depend on.
pub(super) async fn claimed_rows(
    b: &mut Batch<'_>,
    worker_id: &Arc<str>,
    rows: Vec<<Db as sqlx::Database>::Row>,
) -> Result<Vec<ClaimedRun>, StoreError> {
    let mut claimed = Vec::with_capacity(rows.len());
    let mut with_dependencies = Vec::new();
    for row in rows {
        let id: String = row.try_get("id")?;
        let input: String = row.try_get("input")?;
        let checkpoint: Option<String> = row.try_get("checkpoint")?;
        let deadline: Option<i64> = row.try_get("deadline")?;
        if row.try_get::<i64, _>("depends_count")? > 0 {
            with_dependencies.push(id.clone());
        }
        let run = ClaimedRun {
            id: parse_id(&id)?,
            agent: row.try_get("agent")?,
            input: serde_json::from_str(&input)?,
            checkpoint: checkpoint
                .as_deref()
                .map(serde_json::from_str)
                .transpose()?,
            deadline: deadline.map(from_ms),
            dependencies: Default::default(),
            attempt: row.try_get::<i64, _>("attempt")? as u32,
            claim: row.try_get::<i64, _>("claims")? as u32,
            max_attempts: row.try_get::<i64, _>("max_attempts")? as u32,
            timeout_ms: row.try_get::<i64, _>("timeout_ms")? as u64,
            backoff_base_ms: row.try_get::<i64, _>("backoff_base_ms")? as u64,
            backoff_cap_ms: row.try_get::<i64, _>("backoff_cap_ms")? as u64,
            priority: row.try_get::<i64, _>("priority")? as i32,
            worker_id: worker_id.clone(),
            queue_wait_ms: (b.now - ready_since(&row)?).max(0) as u64,
            trace_parent: row.try_get("trace_parent")?,
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
    if !with_dependencies.is_empty() {
        let mut results = super::dependencies::results(b, &with_dependencies).await?;
        for run in &mut claimed {
            if let Some(found) = results.remove(&run.id.to_string()) {
                run.dependencies = found;
            }
        }
    }
    // RETURNING gives no order; hand the runs out in the order they were chosen.
    claimed.sort_by_key(|r| std::cmp::Reverse(r.priority));
    Ok(claimed)
}

/// When a claimed run became ready: its `run_at`, or, if later, when it last went back to
/// the queue mid-attempt (it kept its `run_at`, and its place in line).
fn ready_since(row: &<Db as sqlx::Database>::Row) -> Result<i64, sqlx::Error> {
    let run_at: i64 = row.try_get("run_at")?;
    let requeued_at: Option<i64> = row.try_get("requeued_at")?;
    Ok(requeued_at.map_or(run_at, |at| at.max(run_at)))
}
