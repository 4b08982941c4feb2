//! `RunDispatch`: Redis delivery's feeder marks an agent's next ready runs as sent, up to
//! the window (and with an agent limit, up to the limit minus its running runs).
//!
//! A message carries `(run id, dispatch seq)`. Marking a run bumps its seq; a claim must
//! match the seq and find the run still marked and ready, and it clears the mark. Every
//! status change away from queued/retrying clears the mark too, so a stale, duplicated or
//! superseded message finds nothing to claim.

use sqlx::Row;

use super::super::super::rows::parse_id;
use super::super::batch::room_to_send;
use super::super::sql;
use super::{Apply, Batch, Command};
use crate::domain::RunId;
use crate::store::StoreError;

/// Replies the runs marked, (id, seq), in claim order.
pub(in crate::store) struct RunDispatch {
    pub(in crate::store) agent: String,
    pub(in crate::store) window: usize,
    pub(in crate::store) cap: Option<u32>,
}

impl Command for RunDispatch {
    type Reply = Vec<(RunId, i64)>;
}

impl Apply for RunDispatch {
    async fn apply(
        b: &mut Batch<'_>,
        commands: &[&Self],
    ) -> Result<Vec<Vec<(RunId, i64)>>, StoreError> {
        let mut replies = Vec::with_capacity(commands.len());
        for c in commands {
            let most = match c.cap {
                Some(cap) => Some(room_to_send(b, &c.agent, cap).await?),
                None => None,
            };
            replies.push(dispatch(b, &c.agent, c.window, most).await?);
        }
        Ok(replies)
    }
}

/// Marks up to `window` minus the already marked ready runs of `agent`, in claim order.
/// Returns them (id, seq) in that order; empty when another feeder holds the agent.
async fn dispatch(
    b: &mut Batch<'_>,
    agent: &str,
    window: usize,
    most: Option<usize>,
) -> Result<Vec<(RunId, i64)>, StoreError> {
    if let Some(lock) = sql::DISPATCH_LOCK {
        let taken: bool = sqlx::query_scalar(lock)
            .bind(agent)
            .fetch_one(&mut *b.conn)
            .await?;
        if !taken {
            return Ok(Vec::new());
        }
    }
    let marked: i64 = sqlx::query_scalar(sql::COUNT_DISPATCHED)
        .bind(agent)
        .fetch_one(&mut *b.conn)
        .await?;
    let room = (window as i64)
        .saturating_sub(marked)
        .min(most.map_or(i64::MAX, |m| m as i64));
    if room <= 0 {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(sql::DISPATCH)
        .bind(b.now)
        .bind(agent)
        .bind(room)
        .fetch_all(&mut *b.conn)
        .await?;
    let mut sent = Vec::with_capacity(rows.len());
    for row in rows {
        let id: String = row.try_get("id")?;
        let order = (
            std::cmp::Reverse(row.try_get::<i64, _>("priority")?),
            row.try_get::<i64, _>("run_at")?,
        );
        sent.push((
            order,
            parse_id(&id)?,
            row.try_get::<i64, _>("dispatch_seq")?,
        ));
    }
    // RETURNING gives no order; Redis gets them in the order they were chosen
    sent.sort_by_key(|a| (a.0, a.1));
    Ok(sent.into_iter().map(|(_, id, seq)| (id, seq)).collect())
}
