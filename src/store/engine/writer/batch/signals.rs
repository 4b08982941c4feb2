//! Signals and waits: an agent suspends its run until a named signal arrives; signals are
//! kept until a wait consumes them, so one sent before the wait starts is not missed.

use serde_json::{Value, json};
use sqlx::Row;

use super::super::sql;
use super::Batch;
use super::Refusal;
use crate::domain::{EventKind, RunErrorKind, RunStatus};
use crate::store::{Fence, StoreError};

/// Suspends a running attempt until one of `names` arrives (or queues it again at once when
/// one is already pending). Returns false when the fence no longer holds.
pub(in crate::store) async fn wait(
    b: &mut Batch<'_>,
    fence: &Fence,
    names: &[String],
    until: i64,
    resume_on_timeout: bool,
) -> Result<bool, StoreError> {
    let names_json = serde_json::to_string(names).expect("names serialise");
    // a signal committed meanwhile is seen by the statement after the lock
    b.lock_run(&fence.run_id.to_string()).await?;
    let row = sqlx::query(sql::WAIT)
        .bind(&names_json)
        .bind(until)
        .bind(resume_on_timeout)
        .bind(b.now)
        .bind(fence.run_id.to_string())
        .bind(i64::from(fence.claim))
        .bind(&*fence.worker_id)
        .fetch_optional(&mut *b.conn)
        .await?;
    let Some(row) = row else { return Ok(false) };
    let status: String = row.try_get("status")?;
    let seq: i64 = row.try_get("event_seq")?;
    let id = fence.run_id.to_string();
    if status == RunStatus::Queued.as_str() {
        let data = json!({ "signals": names, "already_received": true });
        b.event(id, seq, EventKind::Resumed, fence.attempt, data);
        b.made_ready(b.now);
    } else {
        let data = json!({ "signals": names, "until": crate::domain::time::rfc3339(&crate::store::from_ms(until)) });
        b.event(id, seq, EventKind::Waiting, fence.attempt, data);
    }
    Ok(true)
}

/// Stores a signal for the run; `false` when a signal with the same `signature` was
/// stored before (a replayed signed request), which stores nothing.
pub(in crate::store) async fn insert_signal(
    b: &mut Batch<'_>,
    run_id: &str,
    name: &str,
    payload: &Value,
    timed_out: bool,
    signature: Option<&str>,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query(sql::INSERT_SIGNAL)
        .bind(run_id)
        .bind(name)
        .bind(payload.to_string())
        .bind(b.now)
        .bind(timed_out)
        .bind(signature)
        .execute(&mut *b.conn)
        .await?;
    Ok(inserted.rows_affected() > 0)
}

pub(in crate::store) async fn resume(
    b: &mut Batch<'_>,
    run_id: String,
    name: &str,
    timed_out: bool,
) -> Result<Result<u64, Refusal>, StoreError> {
    let row = sqlx::query(sql::RESUME)
        .bind(b.now)
        .bind(&run_id)
        .bind(name)
        .fetch_optional(&mut *b.conn)
        .await?;
    let Some(row) = row else { return Ok(Ok(0)) };
    let attempt = row.try_get::<i64, _>("attempt")? as u32;
    let data = json!({ "signal": name, "timed_out": timed_out });
    b.event(
        run_id,
        row.try_get("event_seq")?,
        EventKind::Resumed,
        attempt,
        data,
    );
    b.made_ready(b.now);
    Ok(Ok(1))
}

/// Ends the waits that ran out: resumed with a timed-out signal when the agent asked for
/// that, failed as `wait_timeout` otherwise. Returns how many.
pub(in crate::store) async fn end_waits(b: &mut Batch<'_>) -> Result<u64, StoreError> {
    let rows = sqlx::query(sql::WAITS_ENDED)
        .bind(b.now)
        .fetch_all(&mut *b.conn)
        .await?;
    for row in &rows {
        let id: String = row.try_get("id")?;
        let names: Vec<String> = serde_json::from_str(&row.try_get::<String, _>("waiting_for")?)?;
        if row.try_get::<i64, _>("wait_resume")? != 0 {
            let name = names.first().cloned().unwrap_or_default();
            insert_signal(b, &id, &name, &Value::Null, true, None).await?;
            let _ = resume(b, id, &name, true).await?;
        } else if let Some(done) = sqlx::query(sql::FAIL_WAIT)
            .bind(b.now)
            .bind(&id)
            .fetch_optional(&mut *b.conn)
            .await?
        {
            let error = json!({ "kind": RunErrorKind::WaitTimeout,
                                "message": "no signal it waited for arrived in time" });
            let attempt = done.try_get::<i64, _>("attempt")? as u32;
            b.event(
                id,
                done.try_get("event_seq")?,
                EventKind::Failed,
                attempt,
                json!({ "error": error }),
            );
        }
    }
    Ok(rows.len() as u64)
}
