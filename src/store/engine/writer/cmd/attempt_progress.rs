//! `AttemptProgress`: a running attempt's progress (percent and message), with a
//! `progress` event. Fenced; an attempt's reports in one batch are coalesced to the last
//! (see `batch::attempt_reports`, the step that applies them with logs and checkpoints).
//!
//! A run keeps its last [`KEEP_PROGRESS`] progress events: when a progress report or a log
//! line is the run's 50th, 100th, … event ([`PRUNE_EVERY`]), the older progress events are
//! deleted (the run's other events all stay; seqs then have gaps, which readers resuming
//! `after` a seq do not mind). Both step the seq by one, so an agent that reports progress
//! and logs in a tight loop cannot grow its run's events without bound (stream parts,
//! which come many at once, can step over a multiple).

use serde_json::json;

use super::super::sql;
use super::{Batch, Command};
use crate::domain::{EventKind, Progress};
use crate::store::{Fence, StoreError};

/// How many of a run's latest progress events are kept.
pub(in crate::store) const KEEP_PROGRESS: i64 = 100;
/// How often (in event seqs) the older progress events are deleted.
const PRUNE_EVERY: i64 = 50;

/// Replies whether the fence held.
pub(in crate::store) struct AttemptProgress {
    pub(in crate::store) fence: Fence,
    pub(in crate::store) progress: Progress,
}

impl Command for AttemptProgress {
    type Reply = bool;
}

impl AttemptProgress {
    pub(in crate::store) async fn apply(&self, b: &mut Batch<'_>) -> Result<bool, StoreError> {
        let (fence, progress) = (&self.fence, &self.progress);
        let data = json!({ "percent": progress.percent, "message": progress.message });
        let seq = fenced_touch(b, fence, Some(progress)).await?;
        if let Some(seq) = seq {
            b.event(
                fence.run_id.to_string(),
                seq,
                EventKind::Progress,
                fence.attempt,
                data,
            );
        }
        Ok(seq.is_some())
    }
}

/// Bumps the event counter of a running attempt (setting its progress, if given) and
/// returns the new event's seq, or `None` when the fence no longer holds.
pub(super) async fn fenced_touch(
    b: &mut Batch<'_>,
    fence: &Fence,
    progress: Option<&Progress>,
) -> Result<Option<i64>, StoreError> {
    let seq: Option<i64> = sqlx::query_scalar(sql::TOUCH_RUNNING)
        .bind(progress.map(|p| i64::from(p.percent)))
        .bind(progress.and_then(|p| p.message.as_deref()))
        .bind(b.now)
        .bind(fence.run_id.to_string())
        .bind(i64::from(fence.claim))
        .bind(&*fence.worker_id)
        .bind(progress.is_some())
        .fetch_optional(&mut *b.conn)
        .await?;
    if seq.is_some_and(|seq| seq % PRUNE_EVERY == 0) {
        sqlx::query(sql::PRUNE_PROGRESS)
            .bind(fence.run_id.to_string())
            .bind(KEEP_PROGRESS)
            .execute(&mut *b.conn)
            .await?;
    }
    Ok(seq)
}
