//! `RunRequeue`: puts failed runs back in the queue with their attempts reset; their
//! history stays.

use serde_json::json;
use sqlx::Row;

use super::super::super::rows::parse_id;
use super::super::batch::{Refusal, refusal, wait_again};
use super::super::sql;
use super::{Apply, Batch, Command};
use crate::domain::{EventKind, RunStatus};
use crate::store::{RequeueTarget, StoreError, to_ms};

/// Replies how many runs went back; for one run, `NotFound` or `Conflict` when it could
/// not.
pub(in crate::store) struct RunRequeue {
    pub(in crate::store) target: RequeueTarget,
    /// Who asked (see `RunEvent::actor`).
    pub(in crate::store) actor: Option<String>,
}

impl Command for RunRequeue {
    type Reply = Result<u64, StoreError>;

    fn may_ready_runs(&self) -> bool {
        true
    }
}

impl Apply for RunRequeue {
    async fn apply(
        b: &mut Batch<'_>,
        commands: &[&Self],
    ) -> Result<Vec<Result<u64, StoreError>>, StoreError> {
        let mut replies = Vec::with_capacity(commands.len());
        for RunRequeue { target, actor } in commands {
            let requeued = requeue(b, target, actor).await?;
            replies.push(requeued.map_err(|r| r.into_error("retry")));
        }
        Ok(replies)
    }
}

async fn requeue(
    b: &mut Batch<'_>,
    target: &RequeueTarget,
    actor: &Option<String>,
) -> Result<Result<u64, Refusal>, StoreError> {
    let ids: Vec<String> = match target {
        RequeueTarget::One(id) => vec![id.to_string()],
        RequeueTarget::Failed(filter) => {
            sqlx::query_scalar(sql::FAILED_MATCHING)
                .bind(filter.agent.as_deref())
                .bind(filter.created_after.map(to_ms))
                .bind(filter.created_before.map(to_ms))
                .bind(i64::from(filter.limit))
                .bind(filter.tenant.as_deref())
                .fetch_all(&mut *b.conn)
                .await?
        }
    };
    let rows = sqlx::query(sql::REQUEUE)
        .bind(b.now)
        .bind(serde_json::to_string(&ids).expect("ids serialise"))
        .fetch_all(&mut *b.conn)
        .await?;
    if let (RequeueTarget::One(id), true) = (target, rows.is_empty()) {
        return Ok(Err(match refusal(b, *id).await? {
            // failed, yet not requeued: a run it depends on failed or was cancelled
            Refusal::WrongStatus(s) if s == RunStatus::Failed.as_str() => Refusal::Blocked(
                "a run it depends on failed or was cancelled: retry that run first".into(),
            ),
            other => other,
        }));
    }
    for row in &rows {
        let id: String = row.try_get("id")?;
        parse_id(&id)?;
        let seq: i64 = row.try_get("event_seq")?;
        // a run with a concurrency key waits for it again (`REQUEUE` left it blocked)
        if let Some(key) = row.try_get::<Option<String>, _>("concurrency_key")? {
            wait_again(b, (row.try_get("tenant")?, row.try_get("agent")?, key));
        }
        b.event_by(id, seq, EventKind::Requeued, 0, json!({}), actor.clone());
    }
    if !rows.is_empty() {
        b.made_ready(b.now);
    }
    Ok(Ok(rows.len() as u64))
}
