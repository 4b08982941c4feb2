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
    /// An external worker's wait report id: the same report sent again gets the signal it
    /// took the first time.
    pub(in crate::store) taken_by: Option<String>,
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
            replies.push(take(b, &c.fence, &c.names, c.taken_by.as_deref()).await?);
        }
        Ok(replies)
    }
}

/// Consumes the oldest pending signal among `names` for a running attempt.
async fn take(
    b: &mut Batch<'_>,
    fence: &Fence,
    names: &[String],
    taken_by: Option<&str>,
) -> Result<Option<Signal>, StoreError> {
    if let Some(report) = taken_by {
        let taken = sqlx::query(sql::SIGNAL_TAKEN_BY)
            .bind(fence.run_id.to_string())
            .bind(report)
            .fetch_optional(&mut *b.conn)
            .await?;
        if let Some(row) = taken {
            return signal(&row).map(Some);
        }
    }
    let row = sqlx::query(sql::TAKE_SIGNAL)
        .bind(b.now)
        .bind(fence.run_id.to_string())
        .bind(serde_json::to_string(names).expect("names serialise"))
        .bind(i64::from(fence.claim))
        .bind(&*fence.worker_id)
        .bind(taken_by)
        .fetch_optional(&mut *b.conn)
        .await?;
    row.as_ref().map(signal).transpose()
}

fn signal(row: &<super::super::super::Db as sqlx::Database>::Row) -> Result<Signal, StoreError> {
    Ok(Signal {
        name: row.try_get("name")?,
        payload: serde_json::from_str(&row.try_get::<String, _>("payload")?)?,
        timed_out: row.try_get::<i64, _>("timed_out")? != 0,
    })
}
