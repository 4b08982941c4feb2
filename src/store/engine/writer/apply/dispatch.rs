//! Redis delivery: marking ready runs as sent to Redis (the feeder's window), claiming a
//! run from its message, and forgetting messages Redis lost.
//!
//! A message carries `(run id, dispatch seq)`. Marking a run bumps its seq; a claim must
//! match the seq and find the run still marked and ready, and it clears the mark. Every
//! status change away from queued/retrying clears the mark too, so a stale, duplicated or
//! superseded message finds nothing to claim.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Row;

use super::super::super::rows::parse_id;
use super::super::sql;
use super::Batch;
use super::intake::claimed_rows;
use crate::domain::RunId;
use crate::store::{ClaimedRun, StoreError};

/// Marks up to `window` minus the already marked ready runs of `agent`, in claim order.
/// Returns them (id, seq) in that order; empty when another feeder holds the agent.
pub(super) async fn dispatch(
    b: &mut Batch<'_>,
    agent: &str,
    window: usize,
    most: Option<usize>,
) -> Result<Vec<(RunId, i64)>, StoreError> {
    if let Some(lock) = sql::DISPATCH_LOCK {
        let taken: bool = sqlx::query_scalar(lock)
            .bind(agent)
            .fetch_one(&mut *b.conn)
            .await?;
        if !taken {
            return Ok(Vec::new());
        }
    }
    let marked: i64 = sqlx::query_scalar(sql::COUNT_DISPATCHED)
        .bind(agent)
        .fetch_one(&mut *b.conn)
        .await?;
    let room = (window as i64)
        .saturating_sub(marked)
        .min(most.map_or(i64::MAX, |m| m as i64));
    if room <= 0 {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(sql::DISPATCH)
        .bind(b.now)
        .bind(agent)
        .bind(room)
        .fetch_all(&mut *b.conn)
        .await?;
    let mut sent = Vec::with_capacity(rows.len());
    for row in rows {
        let id: String = row.try_get("id")?;
        let order = (
            std::cmp::Reverse(row.try_get::<i64, _>("priority")?),
            row.try_get::<i64, _>("run_at")?,
        );
        sent.push((
            order,
            parse_id(&id)?,
            row.try_get::<i64, _>("dispatch_seq")?,
        ));
    }
    // RETURNING gives no order; Redis gets them in the order they were chosen
    sent.sort_by_key(|a| (a.0, a.1));
    Ok(sent.into_iter().map(|(_, id, seq)| (id, seq)).collect())
}

fn messages(list: &[(RunId, i64)]) -> String {
    let rows: Vec<Value> = list
        .iter()
        .map(|(id, seq)| json!({ "id": id.to_string(), "seq": seq }))
        .collect();
    Value::Array(rows).to_string()
}

/// Claims the runs whose messages are current, like a claim of ready runs does.
pub(super) async fn claim_dispatched(
    b: &mut Batch<'_>,
    worker_id: &Arc<str>,
    list: &[(RunId, i64)],
    lease: Duration,
) -> Result<Vec<ClaimedRun>, StoreError> {
    let rows = sqlx::query(sql::CLAIM_DISPATCHED)
        .bind(&**worker_id)
        .bind(b.now + lease.as_millis() as i64)
        .bind(b.now)
        .bind(messages(list))
        .fetch_all(&mut *b.conn)
        .await?;
    claimed_rows(b, worker_id, rows).await
}

/// Clears the mark of runs whose message (same seq) Redis no longer holds.
pub(super) async fn undispatch(
    b: &mut Batch<'_>,
    list: &[(RunId, i64)],
) -> Result<u64, StoreError> {
    let done = sqlx::query(sql::UNDISPATCH)
        .bind(messages(list))
        .execute(&mut *b.conn)
        .await?;
    Ok(done.rows_affected())
}
