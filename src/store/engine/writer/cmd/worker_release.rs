//! `WorkerRelease`: a stopping worker hands every run it holds back to the queue,
//! without using up their attempts (graceful shutdown).

use std::sync::Arc;

use serde_json::json;
use sqlx::Row;

use super::super::sql;
use super::{Apply, Batch, Command};
use crate::domain::EventKind;
use crate::store::StoreError;

/// The worker whose runs go back; replies how many.
pub(in crate::store) struct WorkerRelease(pub(in crate::store) Arc<str>);

impl Command for WorkerRelease {
    type Reply = u64;

    fn may_ready_runs(&self) -> bool {
        true
    }

    fn frees_a_slot(&self) -> bool {
        true
    }
}

impl Apply for WorkerRelease {
    async fn apply(b: &mut Batch<'_>, commands: &[&Self]) -> Result<Vec<u64>, StoreError> {
        let mut replies = Vec::with_capacity(commands.len());
        for WorkerRelease(worker_id) in commands {
            replies.push(release(b, worker_id).await?);
        }
        Ok(replies)
    }
}

async fn release(b: &mut Batch<'_>, worker_id: &str) -> Result<u64, StoreError> {
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
    for statement in sql::DROP_WORKER_LEASE {
        sqlx::query(statement)
            .bind(worker_id)
            .execute(&mut *b.conn)
            .await?;
    }
    Ok(rows.len() as u64)
}
