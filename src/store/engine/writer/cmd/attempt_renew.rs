//! `AttemptRenew`: extends the leases of a worker's attempts; replies those still held
//! (the others were lost: swept, handed back, or finished).

use std::time::Duration;

use serde::Serialize;
use sqlx::Row;

use super::super::super::rows::parse_id;
use super::super::sql;
use super::{Apply, Batch, Command};
use crate::store::{Fence, StoreError};

pub(in crate::store) struct AttemptRenew {
    pub(in crate::store) fences: Vec<Fence>,
    pub(in crate::store) lease: Duration,
}

impl Command for AttemptRenew {
    type Reply = Vec<Fence>;
}

impl Apply for AttemptRenew {
    async fn apply(b: &mut Batch<'_>, commands: &[&Self]) -> Result<Vec<Vec<Fence>>, StoreError> {
        let mut replies = Vec::with_capacity(commands.len());
        for c in commands {
            replies.push(renew(b, &c.fences, c.lease).await?);
        }
        Ok(replies)
    }
}

/// Extends the leases of the given attempts; returns those still held (the others were
/// lost: swept, handed back, or finished).
async fn renew(
    b: &mut Batch<'_>,
    fences: &[Fence],
    lease: Duration,
) -> Result<Vec<Fence>, StoreError> {
    if fences.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(sql::RENEW_LEASES)
        .bind(b.now + lease.as_millis() as i64)
        .bind(fences_json(fences))
        .fetch_all(&mut *b.conn)
        .await?;
    let by_claim: std::collections::HashMap<_, &Fence> =
        fences.iter().map(|f| ((f.run_id, f.claim), f)).collect();
    let mut held = Vec::with_capacity(rows.len());
    for row in rows {
        let id = parse_id(&row.try_get::<String, _>("id")?)?;
        let claim = row.try_get::<i64, _>("claims")? as u32;
        if let Some(fence) = by_claim.get(&(id, claim)) {
            held.push((*fence).clone());
        }
    }
    Ok(held)
}

/// A row of `RENEW_LEASES`'s JSON array.
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
