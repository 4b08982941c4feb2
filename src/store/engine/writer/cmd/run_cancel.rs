//! `RunCancel`: cancels a run that has not finished. A running attempt is fenced out at
//! once; its worker stops it at its next lease renewal.

use serde_json::json;
use sqlx::Row;

use super::super::batch::{Refusal, refusal};
use super::super::sql;
use super::{Apply, Batch, Command};
use crate::domain::{EventKind, RunId};
use crate::store::StoreError;

/// Replies `NotFound`, or `Conflict` when the run already finished.
pub(in crate::store) struct RunCancel {
    pub(in crate::store) id: RunId,
    /// Who asked (see `RunEvent::actor`).
    pub(in crate::store) actor: Option<String>,
}

impl Command for RunCancel {
    type Reply = Result<(), StoreError>;

    fn frees_a_slot(&self) -> bool {
        true
    }
}

impl Apply for RunCancel {
    async fn apply(
        b: &mut Batch<'_>,
        commands: &[&Self],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut replies = Vec::with_capacity(commands.len());
        for RunCancel { id, actor } in commands {
            let refused = cancel(b, *id, actor.clone()).await?;
            replies.push(refused.map_or(Ok(()), |r| Err(r.into_error("cancel"))));
        }
        Ok(replies)
    }
}

async fn cancel(
    b: &mut Batch<'_>,
    id: RunId,
    actor: Option<String>,
) -> Result<Option<Refusal>, StoreError> {
    let row = sqlx::query(sql::CANCEL)
        .bind(b.now)
        .bind(id.to_string())
        .fetch_optional(&mut *b.conn)
        .await?;
    let Some(row) = row else {
        return refusal(b, id).await.map(Some);
    };
    let seq: i64 = row.try_get("event_seq")?;
    let attempt = row.try_get::<i64, _>("attempt")? as u32;
    b.event_by(
        id.to_string(),
        seq,
        EventKind::Cancelled,
        attempt,
        json!({}),
        actor,
    );
    Ok(None)
}
