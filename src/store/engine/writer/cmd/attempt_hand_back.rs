//! `AttemptHandBack`: hands attempts' runs back to the queue, giving back the attempt
//! (a worker shutting down, or claims whose caller stopped waiting).

use serde_json::json;

use super::super::sql;
use super::{Apply, Batch, Command};
use crate::domain::EventKind;
use crate::store::{Fence, StoreError};

/// The attempts to hand back; replies how many still held their run.
pub(in crate::store) struct AttemptHandBack(pub(in crate::store) Vec<Fence>);

impl Command for AttemptHandBack {
    type Reply = u64;

    fn may_ready_runs(&self) -> bool {
        true
    }

    fn frees_a_slot(&self) -> bool {
        true
    }
}

impl Apply for AttemptHandBack {
    async fn apply(b: &mut Batch<'_>, commands: &[&Self]) -> Result<Vec<u64>, StoreError> {
        let mut replies = Vec::with_capacity(commands.len());
        for AttemptHandBack(fences) in commands {
            replies.push(hand_back(b, fences).await?);
        }
        Ok(replies)
    }
}

async fn hand_back(b: &mut Batch<'_>, fences: &[Fence]) -> Result<u64, StoreError> {
    let mut released = 0;
    for fence in fences {
        let seq: Option<i64> = sqlx::query_scalar(sql::HAND_BACK)
            .bind(b.now)
            .bind(fence.run_id.to_string())
            .bind(i64::from(fence.claim))
            .bind(&*fence.worker_id)
            .fetch_optional(&mut *b.conn)
            .await?;
        if let Some(seq) = seq {
            released += 1;
            let data = json!({ "worker_id": &*fence.worker_id });
            b.event(
                fence.run_id.to_string(),
                seq,
                EventKind::Released,
                fence.attempt,
                data,
            );
        }
    }
    if released > 0 {
        b.made_ready(b.now);
    }
    Ok(released)
}
