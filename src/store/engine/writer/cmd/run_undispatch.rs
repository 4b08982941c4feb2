//! `RunUndispatch`: Redis lost these messages (restarted or flushed); their runs are
//! sent again by the next top-up. A message no longer current changes nothing.

use super::super::sql;
use super::run_claim_dispatched::messages;
use super::{Apply, Batch, Command};
use crate::domain::RunId;
use crate::store::StoreError;

/// The lost messages, (id, seq); replies how many runs were unmarked.
pub(in crate::store) struct RunUndispatch(pub(in crate::store) Vec<(RunId, i64)>);

impl Command for RunUndispatch {
    type Reply = u64;
}

impl Apply for RunUndispatch {
    async fn apply(b: &mut Batch<'_>, commands: &[&Self]) -> Result<Vec<u64>, StoreError> {
        let mut replies = Vec::with_capacity(commands.len());
        for RunUndispatch(list) in commands {
            replies.push(undispatch(b, list).await?);
        }
        Ok(replies)
    }
}

/// Clears the mark of runs whose message (same seq) Redis no longer holds.
async fn undispatch(b: &mut Batch<'_>, list: &[(RunId, i64)]) -> Result<u64, StoreError> {
    let done = sqlx::query(sql::UNDISPATCH)
        .bind(messages(list))
        .execute(&mut *b.conn)
        .await?;
    Ok(done.rows_affected())
}
