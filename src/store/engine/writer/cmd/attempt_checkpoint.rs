//! `AttemptCheckpoint`: saves a running attempt's checkpoint; the next attempt starts
//! from it. Fenced; applied in the order it came among the attempt's progress and logs
//! (see `batch::attempt_reports`).

use serde_json::{Value, json};

use super::super::sql;
use super::{Batch, Command};
use crate::domain::EventKind;
use crate::store::{Fence, StoreError};

/// Replies whether the fence held.
pub(in crate::store) struct AttemptCheckpoint {
    pub(in crate::store) fence: Fence,
    pub(in crate::store) state: Value,
}

impl Command for AttemptCheckpoint {
    type Reply = bool;
}

impl AttemptCheckpoint {
    pub(in crate::store) async fn apply(&self, b: &mut Batch<'_>) -> Result<bool, StoreError> {
        let (fence, state) = (&self.fence, &self.state);
        let seq: Option<i64> = sqlx::query_scalar(sql::CHECKPOINT)
            .bind(state.to_string())
            .bind(b.now)
            .bind(fence.run_id.to_string())
            .bind(i64::from(fence.claim))
            .bind(&*fence.worker_id)
            .fetch_optional(&mut *b.conn)
            .await?;
        if let Some(seq) = seq {
            let data = json!({ "bytes": state.to_string().len() });
            b.event(
                fence.run_id.to_string(),
                seq,
                EventKind::Checkpoint,
                fence.attempt,
                data,
            );
        }
        Ok(seq.is_some())
    }
}
