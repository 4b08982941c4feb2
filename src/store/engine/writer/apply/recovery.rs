//! Taking runs back: hand-backs (shutdown, undelivered claims) and the sweep of expired
//! leases.

use serde_json::json;
use sqlx::Row;

use super::super::sql;
use super::Batch;
use crate::domain::{EventKind, RunErrorKind, RunStatus};
use crate::store::{Fence, StoreError, Sweep, Transition};

pub(super) async fn release(b: &mut Batch<'_>, worker_id: &str) -> Result<u64, StoreError> {
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

pub(super) async fn hand_back(b: &mut Batch<'_>, fences: &[Fence]) -> Result<u64, StoreError> {
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

pub(super) async fn sweep(b: &mut Batch<'_>) -> Result<Sweep, StoreError> {
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
            b.transitions.push((id.clone(), Transition::Retried));
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
    sweep.timed_out = fail_timed_out(b, sql::FAIL_PAST_DEADLINE).await?
        + fail_timed_out(b, sql::FAIL_EXPIRED).await?
        + super::signals::end_waits(b).await?;
    Ok(sweep)
}

/// Fails the due runs a time limit selects, with one `failed` event each.
async fn fail_timed_out(b: &mut Batch<'_>, statement: &'static str) -> Result<u64, StoreError> {
    let rows = sqlx::query(statement)
        .bind(b.now)
        .fetch_all(&mut *b.conn)
        .await?;
    for row in &rows {
        let error = json!({
            "kind": row.try_get::<String, _>("error_kind")?,
            "message": row.try_get::<String, _>("error_message")?,
        });
        b.event(
            row.try_get("id")?,
            row.try_get("event_seq")?,
            EventKind::Failed,
            row.try_get::<i64, _>("attempt")? as u32,
            json!({ "error": error }),
        );
    }
    Ok(rows.len() as u64)
}
