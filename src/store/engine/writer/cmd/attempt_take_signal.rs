//! `AttemptTakeSignal`: a running attempt consumes the oldest pending signal among the
//! names it waits for (signals are kept until a wait consumes them, so one sent before
//! the wait started is not missed).

use sqlx::Row;

use super::super::sql;
use super::{Apply, Batch, Command};
use crate::domain::Signal;
use crate::store::{Fence, StoreError};

pub(in crate::store) struct AttemptTakeSignal {
    pub(in crate::store) fence: Fence,
    pub(in crate::store) names: Vec<String>,
}

impl Command for AttemptTakeSignal {
    type Reply = Option<Signal>;
}

impl Apply for AttemptTakeSignal {
    async fn apply(
        b: &mut Batch<'_>,
        commands: &[&Self],
    ) -> Result<Vec<Option<Signal>>, StoreError> {
        let mut replies = Vec::with_capacity(commands.len());
        for c in commands {
            replies.push(take(b, &c.fence, &c.names).await?);
        }
        Ok(replies)
    }
}

/// Consumes the oldest pending signal among `names` for a running attempt.
async fn take(
    b: &mut Batch<'_>,
    fence: &Fence,
    names: &[String],
) -> Result<Option<Signal>, StoreError> {
    let row = sqlx::query(sql::TAKE_SIGNAL)
        .bind(b.now)
        .bind(fence.run_id.to_string())
        .bind(serde_json::to_string(names).expect("names serialise"))
        .bind(i64::from(fence.claim))
        .bind(&*fence.worker_id)
        .fetch_optional(&mut *b.conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(Signal {
        name: row.try_get("name")?,
        payload: serde_json::from_str(&row.try_get::<String, _>("payload")?)?,
        timed_out: row.try_get::<i64, _>("timed_out")? != 0,
    }))
}
