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
use crate::store::attempts::Renewed;
use crate::store::{Fence, StoreError};

pub(in crate::store) struct AttemptRenew {
    /// The worker whose attempts these are.
    pub(in crate::store) worker: std::sync::Arc<str>,
    /// Every attempt it executes.
    pub(in crate::store) fences: Vec<Fence>,
    /// Those this process has not seen covered by the worker's lease under `epoch`: each is
    /// checked (and covered) one by one; the others are held unless a notice says otherwise.
    pub(in crate::store) fresh: Vec<Fence>,
    /// The lease's epoch when this process last renewed it (none: never).
    pub(in crate::store) epoch: Option<i64>,
    /// Also give the worker's covered runs it no longer sends a lease of their own.
    pub(in crate::store) reconcile: bool,
    pub(in crate::store) lease: Duration,
}

impl Command for AttemptRenew {
    type Reply = Renewed;
}

impl Apply for AttemptRenew {
    async fn apply(b: &mut Batch<'_>, commands: &[&Self]) -> Result<Vec<Renewed>, StoreError> {
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
/// lease lapsed or was revoked, some of its runs may have been taken back; when it was taken
/// again since this process last renewed it (another epoch), this process's view is stale:
/// either way every attempt is checked, and those still held are covered by the lease.
async fn renew(b: &mut Batch<'_>, c: &AttemptRenew) -> Result<Renewed, StoreError> {
    let until = b.now + c.lease.as_millis() as i64;
    let extended: Option<i64> = sqlx::query_scalar(sql::EXTEND_WORKER_LEASE)
        .bind(until)
        .bind(&*c.worker)
        .bind(b.now)
        .fetch_optional(&mut *b.conn)
        .await?;
    let known = extended.is_some() && extended == c.epoch;
    let checked = if known { &c.fresh } else { &c.fences };
    let covered = cover(b, checked).await?;
    let mut epoch = match extended {
        Some(epoch) => epoch,
        None => {
            sqlx::query_scalar(sql::HOLD_WORKER_LEASE)
                .bind(&*c.worker)
                .bind(until)
                .bind(new_epoch())
                .fetch_one(&mut *b.conn)
                .await?
        }
    };
    // what other processes saw covered no longer is: they must check each attempt again
    let mut changed = false;
    let sent = || {
        let ids: Vec<String> = c.fences.iter().map(|f| f.run_id.to_string()).collect();
        serde_json::to_string(&ids).expect("run ids serialise")
    };
    let reconciled = !known || c.reconcile;
    if reconciled {
        changed |= sqlx::query(sql::UNCOVER_OTHERS)
            .bind(until)
            .bind(&*c.worker)
            .bind(sent())
            .execute(&mut *b.conn)
            .await?
            .rows_affected()
            > 0;
    }
    let mut noticed = HashSet::new();
    for row in sqlx::query(sql::READ_NOTICES)
        .bind(&*c.worker)
        .fetch_all(&mut *b.conn)
        .await?
    {
        let id = parse_id(&row.try_get::<String, _>("run_id")?)?;
        noticed.insert((id, row.try_get::<i64, _>("claims")? as u32));
    }
    if !noticed.is_empty() {
        let sending: HashSet<RunId> = c.fences.iter().map(|f| f.run_id).collect();
        if noticed.iter().any(|(id, _)| !sending.contains(id)) {
            // the worker stopped those attempts: their notices have done their work
            changed |= sqlx::query(sql::DROP_NOTICES)
                .bind(&*c.worker)
                .bind(sent())
                .execute(&mut *b.conn)
                .await?
                .rows_affected()
                > 0;
        }
    }
    if changed {
        epoch = sqlx::query_scalar(sql::NEW_EPOCH)
            .bind(&*c.worker)
            .bind(new_epoch())
            .fetch_one(&mut *b.conn)
            .await?;
    }
    let checked: HashSet<(RunId, u32)> = checked.iter().map(|f| (f.run_id, f.claim)).collect();
    let held = c
        .fences
        .iter()
        .filter(|f| {
            let key = (f.run_id, f.claim);
            (!checked.contains(&key) || covered.contains(&key)) && !noticed.contains(&key)
        })
        .cloned()
        .collect();
    Ok(Renewed {
        held,
        epoch,
        reconciled,
    })
}

/// A lease epoch no process has seen: 63 bits of a UUIDv7 (random in its low bits).
fn new_epoch() -> i64 {
    (uuid::Uuid::now_v7().as_u128() as u64 & i64::MAX as u64) as i64
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
