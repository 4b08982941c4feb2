//! Changes asked for through the API: cancel a run, put failed runs back in the queue.

use serde_json::json;
use sqlx::Row;

use super::super::super::rows::parse_id;
use super::super::{Refusal, sql};
use super::Batch;
use crate::domain::{EventKind, RunId, RunStatus};
use crate::store::RequeueTarget;
use crate::store::{StoreError, to_ms};

/// Why a requested change was not made; an answer, not an error, so the batch goes on.
async fn refusal(b: &mut Batch<'_>, id: RunId) -> Result<Refusal, StoreError> {
    let status: Option<String> = sqlx::query_scalar(sql::STATUS_OF)
        .bind(id.to_string())
        .fetch_optional(&mut *b.conn)
        .await?;
    Ok(status.map_or(Refusal::NotFound, Refusal::WrongStatus))
}

pub(super) async fn cancel(b: &mut Batch<'_>, id: RunId) -> Result<Option<Refusal>, StoreError> {
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
    b.event(
        id.to_string(),
        seq,
        EventKind::Cancelled,
        attempt,
        json!({}),
    );
    Ok(None)
}

/// Puts failed runs back in the queue with their attempts reset; their history stays.
pub(super) async fn requeue(
    b: &mut Batch<'_>,
    target: &RequeueTarget,
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
        b.event(id, seq, EventKind::Requeued, 0, json!({}));
    }
    if !rows.is_empty() {
        b.made_ready(b.now);
    }
    Ok(Ok(rows.len() as u64))
}

impl Refusal {
    pub(crate) fn into_error(self, action: &str) -> StoreError {
        match self {
            Refusal::NotFound => StoreError::NotFound,
            Refusal::Blocked(message) => {
                StoreError::Conflict(format!("cannot {action}: {message}"))
            }
            Refusal::WrongStatus(status) => StoreError::Conflict(format!(
                "cannot {action} a run that is {status}{}",
                if status == RunStatus::Failed.as_str() || action != "retry" {
                    ""
                } else {
                    " (only failed runs can be retried)"
                }
            )),
        }
    }
}
