//! `ScheduleChange`: pauses, resumes or deletes a schedule. A resumed schedule goes on from
//! its next tick after now: the ticks it was paused for make no run.

use super::super::sql;
use super::{Apply, Batch, Command};
use crate::store::StoreError;

pub(in crate::store) enum ScheduleOp {
    Pause,
    /// With its next tick (ms), `None` when it has none.
    Resume(Option<i64>),
    Delete,
}

/// Replies whether it changed anything (pausing a paused schedule does not).
pub(in crate::store) struct ScheduleChange {
    pub(in crate::store) id: String,
    pub(in crate::store) op: ScheduleOp,
}

impl Command for ScheduleChange {
    type Reply = bool;
}

impl Apply for ScheduleChange {
    async fn apply(b: &mut Batch<'_>, commands: &[&Self]) -> Result<Vec<bool>, StoreError> {
        let mut replies = Vec::with_capacity(commands.len());
        for c in commands {
            let changed: Option<String> = match c.op {
                ScheduleOp::Pause => {
                    sqlx::query_scalar(sql::PAUSE_SCHEDULE)
                        .bind(b.now)
                        .bind(&c.id)
                        .fetch_optional(&mut *b.conn)
                        .await?
                }
                ScheduleOp::Resume(next) => {
                    sqlx::query_scalar(sql::RESUME_SCHEDULE)
                        .bind(next)
                        .bind(b.now)
                        .bind(&c.id)
                        .fetch_optional(&mut *b.conn)
                        .await?
                }
                ScheduleOp::Delete => {
                    sqlx::query_scalar(sql::DELETE_SCHEDULE)
                        .bind(&c.id)
                        .fetch_optional(&mut *b.conn)
                        .await?
                }
            };
            replies.push(changed.is_some());
        }
        Ok(replies)
    }
}
