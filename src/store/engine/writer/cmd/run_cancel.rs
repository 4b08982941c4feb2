//! `RunCancel`: cancels a run that has not finished. A running attempt is fenced out at
//! once; its worker stops it at its next lease renewal (told by a notice when the run was
//! covered by the worker's lease).

use serde_json::{Value, json};
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
    if cancel_run(b, &id.to_string(), json!({}), actor).await? {
        return Ok(None);
    }
    refusal(b, id).await.map(Some)
}

/// Cancels the run if it has not finished, with a `cancelled` event holding `data`;
/// `false` when there was no such run to cancel.
pub(in crate::store) async fn cancel_run(
    b: &mut Batch<'_>,
    id: &str,
    data: Value,
    actor: Option<String>,
) -> Result<bool, StoreError> {
    // a running attempt covered by its worker's lease is told at the worker's next renewal
    sqlx::query(sql::NOTICE_LOST)
        .bind(id)
        .execute(&mut *b.conn)
        .await?;
    let row = sqlx::query(sql::CANCEL)
        .bind(b.now)
        .bind(id)
        .fetch_optional(&mut *b.conn)
        .await?;
    let Some(row) = row else {
        return Ok(false);
    };
    let seq: i64 = row.try_get("event_seq")?;
    let attempt = row.try_get::<i64, _>("attempt")? as u32;
    b.event_by(
        id.to_owned(),
        seq,
        EventKind::Cancelled,
        attempt,
        data,
        actor,
    );
    Ok(true)
}
