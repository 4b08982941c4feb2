//! `AttemptStream`: parts appended to a running attempt's output stream, each a `stream`
//! event of its run. Fenced, and bounded per run (`runs.stream_bytes`). The adjacent
//! appends of one attempt in one batch are written together, their texts joined, so a
//! model's many small deltas cost one update and a few event rows per batch (see
//! `batch::attempt_reports`).

use super::super::sql;
use super::{Batch, Command};
use crate::domain::{EventKind, StreamPart, coalesce};
use crate::store::{Fence, StoreError, Streamed};

pub(in crate::store) struct AttemptStream {
    pub(in crate::store) fence: Fence,
    pub(in crate::store) parts: Vec<StreamPart>,
    /// The most bytes the run's stream may hold.
    pub(in crate::store) limit: u64,
}

impl Command for AttemptStream {
    type Reply = Streamed;
}

impl AttemptStream {
    /// Writes the parts of `appends`, adjacent appends of one attempt in arrival order,
    /// all or none: one answer for them all.
    pub(in crate::store) async fn apply_together(
        b: &mut Batch<'_>,
        appends: &[&AttemptStream],
    ) -> Result<Streamed, StoreError> {
        let Some(first) = appends.first() else {
            return Ok(Streamed::Written);
        };
        let fence = &first.fence;
        let parts = coalesce(appends.iter().flat_map(|a| a.parts.iter().cloned()));
        let bytes: u64 = parts.iter().map(StreamPart::size).sum();
        let limit = appends.iter().map(|a| a.limit).min().unwrap_or(first.limit);
        let head: Option<i64> = sqlx::query_scalar(sql::STREAM_APPEND)
            .bind(parts.len() as i64)
            .bind(bytes as i64)
            .bind(b.now)
            .bind(fence.run_id.to_string())
            .bind(i64::from(fence.claim))
            .bind(&*fence.worker_id)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_optional(&mut *b.conn)
            .await?;
        let Some(head) = head else {
            let holds: Option<i32> = sqlx::query_scalar(sql::FENCE_HOLDS)
                .bind(fence.run_id.to_string())
                .bind(i64::from(fence.claim))
                .bind(&*fence.worker_id)
                .fetch_optional(&mut *b.conn)
                .await?;
            return Ok(match holds {
                Some(_) => Streamed::Full { limit },
                None => Streamed::Lost,
            });
        };
        let first_seq = head - parts.len() as i64 + 1;
        for (seq, part) in (first_seq..).zip(parts) {
            let data = serde_json::to_value(part).expect("a stream part serialises");
            b.event(
                fence.run_id.to_string(),
                seq,
                EventKind::Stream,
                fence.attempt,
                data,
            );
        }
        Ok(Streamed::Written)
    }
}
