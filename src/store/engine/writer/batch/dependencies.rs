//! Dependencies between runs: a run with `depends_on` is `blocked` until every run it
//! depends on has succeeded, then `queued`. When a dependency fails, its blocked dependents
//! fail (`dependency_failed`); when one is cancelled, they are cancelled. Resolution runs
//! in the transaction that settles the dependency, and follows chains to their end.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};
use sqlx::Row;

use super::super::super::rows::parse_id;
use super::super::sql;
use super::Batch;
use crate::domain::{EventKind, RunErrorKind, RunId, RunStatus, Tenant};
use crate::store::StoreError;

/// Why a new run's dependencies were refused: (index in `depends_on`, code, message).
pub(in crate::store) type DependencyProblem = (usize, &'static str, String);

/// Whether a new run with these dependencies starts blocked, or why it cannot be created.
pub(in crate::store) async fn check(
    b: &mut Batch<'_>,
    depends_on: &[RunId],
    tenant: &Tenant,
) -> Result<Result<bool, Vec<DependencyProblem>>, StoreError> {
    let ids: Vec<String> = depends_on.iter().map(RunId::to_string).collect();
    let rows = sqlx::query(sql::STATUSES_OF)
        .bind(serde_json::to_string(&ids).expect("ids serialise"))
        .fetch_all(&mut *b.conn)
        .await?;
    // another tenant's run is no run at all to this one
    let statuses: HashMap<String, String> = rows
        .iter()
        .filter(|r| r.try_get::<&str, _>("tenant").ok() == Some(tenant.as_str()))
        .map(|r| Ok((r.try_get("id")?, r.try_get("status")?)))
        .collect::<Result<_, sqlx::Error>>()?;
    let mut problems = Vec::new();
    let mut blocked = false;
    for (index, id) in ids.iter().enumerate() {
        match statuses.get(id).map(String::as_str) {
            None => problems.push((index, "unknown_run", format!("no run {id}"))),
            Some(s) if s == RunStatus::Failed.as_str() || s == RunStatus::Cancelled.as_str() => {
                problems.push((index, "dependency_failed", format!("run {id} is {s}")))
            }
            Some(s) => blocked |= s != RunStatus::Succeeded.as_str(),
        }
    }
    Ok(if problems.is_empty() {
        Ok(blocked)
    } else {
        Err(problems)
    })
}

/// Records the dependencies of newly inserted runs.
pub(in crate::store) async fn link(
    b: &mut Batch<'_>,
    links: &[(RunId, &[RunId])],
) -> Result<(), StoreError> {
    let rows: Vec<Value> = links
        .iter()
        .flat_map(|(run, deps)| {
            deps.iter()
                .map(move |d| json!({"r": run.to_string(), "d": d.to_string()}))
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    let rows = Value::Array(rows).to_string();
    sqlx::query(sql::INSERT_DEPENDENCIES)
        .bind(&rows)
        .execute(&mut *b.conn)
        .await?;
    sqlx::query(sql::COUNT_DEPENDENTS)
        .bind(&rows)
        .execute(&mut *b.conn)
        .await?;
    Ok(())
}

/// Settles the blocked dependents of every run this batch finished, and theirs in turn.
pub(in crate::store) async fn resolve(b: &mut Batch<'_>) -> Result<(), StoreError> {
    loop {
        let settled = std::mem::take(&mut b.settled);
        if settled.is_empty() {
            return Ok(());
        }
        let kinds: HashMap<String, EventKind> = settled.into_iter().collect();
        let ids: Vec<&String> = kinds.keys().collect();
        let rows = sqlx::query(sql::BLOCKED_DEPENDENTS)
            .bind(serde_json::to_string(&ids).expect("ids serialise"))
            .fetch_all(&mut *b.conn)
            .await?;
        for row in rows {
            let dependent: String = row.try_get("run_id")?;
            let dependency: String = row.try_get("depends_on_id")?;
            match kinds[&dependency] {
                EventKind::Succeeded => unblock(b, dependent, json!({})).await?,
                EventKind::Cancelled => {
                    let why = format!("dependency {dependency} was cancelled");
                    settle(b, dependent, RunStatus::Cancelled, why).await?
                }
                _ => {
                    let why = format!("dependency {dependency} failed");
                    settle(b, dependent, RunStatus::Failed, why).await?
                }
            }
        }
    }
}

/// Queues a blocked run whose dependencies all succeeded and which waits for no key,
/// with an `unblocked` event holding `data`.
pub(super) async fn unblock(
    b: &mut Batch<'_>,
    run_id: String,
    data: Value,
) -> Result<(), StoreError> {
    // two dependencies finishing in two processes at once (or a dependency and the key it
    // waits for): the second to take the lock sees the first's change
    b.lock_run(&run_id).await?;
    let seq: Option<i64> = sqlx::query_scalar(sql::UNBLOCK)
        .bind(b.now)
        .bind(&run_id)
        .fetch_optional(&mut *b.conn)
        .await?;
    if let Some(seq) = seq {
        b.event(run_id, seq, EventKind::Unblocked, 0, data);
        b.made_ready(b.now);
    }
    Ok(())
}

async fn settle(
    b: &mut Batch<'_>,
    run_id: String,
    status: RunStatus,
    message: String,
) -> Result<(), StoreError> {
    let kind = if status == RunStatus::Cancelled {
        RunErrorKind::Cancelled
    } else {
        RunErrorKind::DependencyFailed
    };
    let seq: Option<i64> = sqlx::query_scalar(sql::SETTLE_BLOCKED)
        .bind(status.as_str())
        .bind(kind.as_str())
        .bind(&message)
        .bind(b.now)
        .bind(&run_id)
        .fetch_optional(&mut *b.conn)
        .await?;
    if let Some(seq) = seq {
        let event = if status == RunStatus::Cancelled {
            EventKind::Cancelled
        } else {
            EventKind::Failed
        };
        let data = json!({ "error": { "kind": kind, "message": message } });
        b.event(run_id, seq, event, 0, data);
    }
    Ok(())
}

/// The results of the runs each claimed run depends on.
pub(in crate::store) async fn results(
    b: &mut Batch<'_>,
    run_ids: &[String],
) -> Result<HashMap<String, BTreeMap<RunId, Value>>, StoreError> {
    let rows = sqlx::query(sql::DEPENDENCY_RESULTS)
        .bind(serde_json::to_string(run_ids).expect("ids serialise"))
        .fetch_all(&mut *b.conn)
        .await?;
    let mut out: HashMap<String, BTreeMap<RunId, Value>> = HashMap::new();
    for row in rows {
        let result: Option<String> = row.try_get("result")?;
        let result = result.as_deref().map(serde_json::from_str).transpose()?;
        out.entry(row.try_get("run_id")?).or_default().insert(
            parse_id(&row.try_get::<String, _>("depends_on_id")?)?,
            result.unwrap_or(Value::Null),
        );
    }
    Ok(out)
}
