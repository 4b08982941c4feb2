//! `RunChange`: a run that has not started gets another priority or run_at
//! (`PATCH /v1/runs/{id}`). Once it started (or finished) it is refused.

use serde_json::{Map, Value};
use sqlx::Row;

use super::super::batch::{Refusal, refusal};
use super::super::sql;
use super::{Apply, Batch, Command};
use crate::domain::{EventKind, RunId};
use crate::store::{StoreError, from_ms};

/// Replies `NotFound`, or `Conflict` when the run has started.
pub(in crate::store) struct RunChange {
    pub(in crate::store) id: RunId,
    pub(in crate::store) priority: Option<i32>,
    /// ms since the epoch.
    pub(in crate::store) run_at: Option<i64>,
    /// Who asked (see `RunEvent::actor`).
    pub(in crate::store) actor: Option<String>,
}

impl Command for RunChange {
    type Reply = Result<(), StoreError>;

    /// An earlier run_at or a higher priority: waiting claims look again.
    fn may_ready_runs(&self) -> bool {
        true
    }
}

impl Apply for RunChange {
    async fn apply(
        b: &mut Batch<'_>,
        commands: &[&Self],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut replies = Vec::with_capacity(commands.len());
        for c in commands {
            let refused = change(b, c).await?;
            replies.push(refused.map_or(Ok(()), |r| Err(r.into_error("change"))));
        }
        Ok(replies)
    }
}

async fn change(b: &mut Batch<'_>, c: &RunChange) -> Result<Option<Refusal>, StoreError> {
    let row = sqlx::query(sql::CHANGE_RUN)
        .bind(b.now)
        .bind(c.id.to_string())
        .bind(c.priority.map(i64::from))
        .bind(c.run_at)
        .fetch_optional(&mut *b.conn)
        .await?;
    let Some(row) = row else {
        return Ok(Some(match refusal(b, c.id).await? {
            // queued or blocked again after it started (a lost lease, a retry)
            Refusal::WrongStatus(s) if s == "queued" || s == "blocked" => Refusal::Blocked(
                "it has started before: only a run that never started can be changed".into(),
            ),
            other => other,
        }));
    };
    let status: String = row.try_get("status")?;
    let run_at: i64 = row.try_get("run_at")?;
    if status == "queued" {
        b.made_ready(run_at);
    }
    let mut data = Map::new();
    if let Some(priority) = c.priority {
        data.insert("priority".into(), priority.into());
    }
    if c.run_at.is_some() {
        data.insert(
            "run_at".into(),
            crate::domain::time::rfc3339(&from_ms(run_at)).into(),
        );
    }
    b.event_by(
        c.id.to_string(),
        row.try_get("event_seq")?,
        EventKind::Changed,
        0,
        Value::Object(data),
        c.actor.clone(),
    );
    Ok(None)
}
