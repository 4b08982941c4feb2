//! `RunSweep`: takes back runs whose lease expired (retried, or failed when out of
//! attempts), and fails the runs past their deadline, expiry or wait.

use serde_json::json;
use sqlx::Row;

use super::super::batch::end_waits;
use super::super::sql;
use super::{Apply, Batch, Command};
use crate::domain::{EventKind, RunErrorKind, RunStatus};
use crate::store::{StoreError, Sweep, Transition};

pub(in crate::store) struct RunSweep;

impl Command for RunSweep {
    type Reply = Sweep;

    /// Parked claims are not woken for every sweep (once a second per process, an empty
    /// claim each time an idle worker waits): a sweep that takes runs back or resumes a wait
    /// marks them ready (`made_ready`), and the writer wakes the parked claims after that
    /// commit.
    fn may_ready_runs(&self) -> bool {
        false
    }

    fn frees_a_slot(&self) -> bool {
        true
    }
}

impl Apply for RunSweep {
    async fn apply(b: &mut Batch<'_>, commands: &[&Self]) -> Result<Vec<Sweep>, StoreError> {
        let mut replies = Vec::with_capacity(commands.len());
        for _ in commands {
            replies.push(sweep(b).await?);
        }
        Ok(replies)
    }
}

async fn sweep(b: &mut Batch<'_>) -> Result<Sweep, StoreError> {
    // worker leases first, as a renewal locks its lease row before any of its runs
    let mut rows = sweep_revoked(b).await?;
    rows.extend(
        sqlx::query(sql::SWEEP_EXPIRED)
            .bind(b.now)
            .fetch_all(&mut *b.conn)
            .await?,
    );
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
        + end_waits(b).await?;
    Ok(sweep)
}

/// Revokes the worker leases that ran out and takes back the runs revoked leases covered
/// (rows shaped as `SWEEP_EXPIRED`'s); revoked leases covering nothing any more go.
async fn sweep_revoked(
    b: &mut Batch<'_>,
) -> Result<Vec<<super::super::super::Db as sqlx::Database>::Row>, StoreError> {
    sqlx::query(sql::REVOKE_WORKER_LEASES)
        .bind(b.now)
        .execute(&mut *b.conn)
        .await?;
    let revoked: Vec<String> = sqlx::query_scalar(sql::REVOKED_WORKERS)
        .fetch_all(&mut *b.conn)
        .await?;
    if revoked.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(sql::SWEEP_REVOKED)
        .bind(b.now)
        .bind(serde_json::to_string(&revoked).expect("worker ids serialise"))
        .fetch_all(&mut *b.conn)
        .await?;
    for statement in sql::FORGET_REVOKED {
        sqlx::query(statement).execute(&mut *b.conn).await?;
    }
    Ok(rows)
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
