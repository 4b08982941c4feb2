//! Completion webhooks: scheduled in the transaction that settles a run with a
//! `callback_url`, then claimed and reported by worker processes (see `jobs::webhooks`).

use super::super::sql;
use super::Batch;
use crate::store::StoreError;

pub(in crate::store) async fn schedule(b: &mut Batch<'_>) -> Result<(), StoreError> {
    if b.callbacks.is_empty() {
        return Ok(());
    }
    let ids = serde_json::to_string(&std::mem::take(&mut b.callbacks)).expect("ids serialise");
    sqlx::query(sql::SCHEDULE_WEBHOOKS)
        .bind(b.now)
        .bind(ids)
        .execute(&mut *b.conn)
        .await?;
    Ok(())
}
