//! `AttemptRenew`: extends a worker's lease, which covers the runs it executes; replies
//! the attempts it still holds (the others were lost: cancelled, swept, handed back, or
//! finished).

use std::collections::HashSet;
use std::time::Duration;

use serde::Serialize;
use sqlx::Row;

use super::super::super::rows::parse_id;
use super::super::sql;
use super::{Apply, Batch, Command};
use crate::domain::RunId;
use crate::store::{Fence, StoreError};

pub(in crate::store) struct AttemptRenew {
    /// The worker whose attempts these are.
    pub(in crate::store) worker: std::sync::Arc<str>,
    /// Every attempt it executes.
    pub(in crate::store) fences: Vec<Fence>,
    /// Those this process has not yet seen covered by the worker's lease: each is checked
    /// (and covered) one by one; the others are held unless a notice says otherwise.
    pub(in crate::store) fresh: Vec<Fence>,
    pub(in crate::store) lease: Duration,
}

impl Command for AttemptRenew {
    type Reply = Vec<Fence>;
}

impl Apply for AttemptRenew {
    async fn apply(b: &mut Batch<'_>, commands: &[&Self]) -> Result<Vec<Vec<Fence>>, StoreError> {
        let mut replies = Vec::with_capacity(commands.len());
        for c in commands {
            replies.push(renew(b, c).await?);
        }
        Ok(replies)
    }
}

/// Extends the worker's lease, which covers its runs: one write however many runs it
/// executes. Returns the attempts it still holds; the others were lost (cancelled, swept,
/// handed back, or finished).
///
/// A run just claimed keeps a lease of its own until it is covered here. When the worker's
/// lease lapsed or a sweep revoked it, some of its runs may have been taken back: then every
/// attempt is checked, and those still held are covered by a lease held again.
async fn renew(b: &mut Batch<'_>, c: &AttemptRenew) -> Result<Vec<Fence>, StoreError> {
    let until = b.now + c.lease.as_millis() as i64;
    let live = sqlx::query(sql::EXTEND_WORKER_LEASE)
        .bind(until)
        .bind(&*c.worker)
        .bind(b.now)
        .execute(&mut *b.conn)
        .await?
        .rows_affected()
        > 0;
    let checked = if live { &c.fresh } else { &c.fences };
    let covered = cover(b, checked).await?;
    if !live {
        sqlx::query(sql::HOLD_WORKER_LEASE)
            .bind(&*c.worker)
            .bind(until)
            .execute(&mut *b.conn)
            .await?;
    }
    let noticed: HashSet<(String, i64)> = sqlx::query(sql::TAKE_NOTICES)
        .bind(&*c.worker)
        .fetch_all(&mut *b.conn)
        .await?
        .iter()
        .map(|row| Ok((row.try_get("run_id")?, row.try_get("claims")?)))
        .collect::<Result<_, sqlx::Error>>()?;
    let checked: HashSet<(RunId, u32)> = checked.iter().map(|f| (f.run_id, f.claim)).collect();
    Ok(c.fences
        .iter()
        .filter(|f| {
            let key = (f.run_id, f.claim);
            (!checked.contains(&key) || covered.contains(&key))
                && !noticed.contains(&(f.run_id.to_string(), i64::from(f.claim)))
        })
        .cloned()
        .collect())
}

/// Covers the runs of these attempts by their worker's lease (their own lease cleared);
/// returns those whose fence still holds.
async fn cover(b: &mut Batch<'_>, fences: &[Fence]) -> Result<HashSet<(RunId, u32)>, StoreError> {
    if fences.is_empty() {
        return Ok(HashSet::new());
    }
    let rows = sqlx::query(sql::COVER_LEASES)
        .bind(fences_json(fences))
        .fetch_all(&mut *b.conn)
        .await?;
    let mut held = HashSet::with_capacity(rows.len());
    for row in rows {
        let id = parse_id(&row.try_get::<String, _>("id")?)?;
        held.insert((id, row.try_get::<i64, _>("claims")? as u32));
    }
    Ok(held)
}

/// A row of `COVER_LEASES`'s JSON array.
#[derive(Serialize)]
struct FenceRow<'a> {
    id: String,
    claim: u32,
    worker: &'a str,
}

fn fences_json(fences: &[Fence]) -> String {
    let rows: Vec<FenceRow> = fences
        .iter()
        .map(|f| FenceRow {
            id: f.run_id.to_string(),
            claim: f.claim,
            worker: &f.worker_id,
        })
        .collect();
    serde_json::to_string(&rows).expect("rows serialise")
}
