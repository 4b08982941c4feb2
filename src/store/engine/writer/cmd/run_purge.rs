//! `RunPurge`: retention, deleting finished runs past their retention, with their events, signals,
//! dependencies and webhook deliveries, one small batch per request.
//!
//! A run is kept, whatever its age, while something still needs it: a run that depends on
//! it (its result is handed to that run, and a failed dependent may be retried), a
//! compensation partner that has not finished, or a completion webhook still to be
//! delivered. The checks and the delete are one statement, after the candidates are
//! locked where the dialect has row locks (see `sql::PURGE_CANDIDATES`).

use sqlx::Row;

use super::super::sql;
use super::{Apply, Batch, Command};
use crate::domain::RunStatus;
use crate::store::{FinishedKey, Purged, StoreError};

/// Deletes up to `limit` finished runs of `status` between the keys.
pub(in crate::store) struct RunPurge {
    pub(in crate::store) status: RunStatus,
    pub(in crate::store) after: FinishedKey,
    pub(in crate::store) before: FinishedKey,
    pub(in crate::store) limit: usize,
}

impl Command for RunPurge {
    type Reply = Purged;
}

impl Apply for RunPurge {
    async fn apply(b: &mut Batch<'_>, commands: &[&Self]) -> Result<Vec<Purged>, StoreError> {
        let mut replies = Vec::with_capacity(commands.len());
        for p in commands {
            replies.push(purge(b, p.status, &p.after, &p.before, p.limit).await?);
        }
        Ok(replies)
    }
}

async fn purge(
    b: &mut Batch<'_>,
    status: RunStatus,
    after: &FinishedKey,
    before: &FinishedKey,
    limit: usize,
) -> Result<Purged, StoreError> {
    let rows = sqlx::query(sql::PURGE_CANDIDATES)
        .bind(status.as_str())
        .bind(after.finished_at)
        .bind(&after.id)
        .bind(before.finished_at)
        .bind(&before.id)
        .bind(limit as i64)
        .fetch_all(&mut *b.conn)
        .await?;
    let mut candidates = Vec::with_capacity(rows.len());
    let mut last = None;
    for row in &rows {
        let id: String = row.try_get("id")?;
        last = Some(FinishedKey {
            finished_at: row.try_get("finished_at")?,
            id: id.clone(),
        });
        candidates.push(id);
    }
    // fewer than asked for: nothing is left in the range (rows another process holds on
    // PostgreSQL are left to it, or to the next round)
    let next = if rows.len() < limit { None } else { last };
    if candidates.is_empty() {
        return Ok(Purged { deleted: 0, next });
    }
    let candidates = serde_json::to_string(&candidates).expect("ids serialise");
    let deleted: Vec<String> = sqlx::query_scalar(sql::PURGE_RUNS)
        .bind(candidates)
        .fetch_all(&mut *b.conn)
        .await?;
    if !deleted.is_empty() {
        let ids = serde_json::to_string(&deleted).expect("ids serialise");
        for statement in sql::PURGE_CHILDREN {
            sqlx::query(statement)
                .bind(&ids)
                .execute(&mut *b.conn)
                .await?;
        }
    }
    Ok(Purged {
        deleted: deleted.len() as u64,
        next,
    })
}
