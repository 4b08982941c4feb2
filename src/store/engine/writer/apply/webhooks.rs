//! Completion webhooks: scheduled in the transaction that settles a run with a
//! `callback_url`, then claimed and reported by worker processes (see `jobs::webhooks`).

use serde_json::json;
use sqlx::Row;

use super::super::super::rows::parse_id;
use super::super::sql;
use super::Batch;
use crate::domain::EventKind;
use crate::store::{StoreError, WebhookDelivery, WebhookResult, from_ms, to_ms};

pub(super) async fn schedule(b: &mut Batch<'_>) -> Result<(), StoreError> {
    if b.callbacks.is_empty() {
        return Ok(());
    }
    let ids = serde_json::to_string(&std::mem::take(&mut b.callbacks)).expect("ids serialise");
    sqlx::query(sql::SCHEDULE_WEBHOOKS)
        .bind(b.now)
        .bind(ids)
        .execute(&mut *b.conn)
        .await?;
    Ok(())
}

pub(super) async fn claim(
    b: &mut Batch<'_>,
    limit: usize,
    lease_ms: i64,
) -> Result<Vec<WebhookDelivery>, StoreError> {
    let rows = sqlx::query(sql::CLAIM_WEBHOOKS)
        .bind(b.now)
        .bind(b.now + lease_ms)
        .bind(limit as i64)
        .fetch_all(&mut *b.conn)
        .await?;
    let mut claimed = Vec::with_capacity(rows.len());
    for row in rows {
        let run_id: String = row.try_get("run_id")?;
        let url: Option<String> = sqlx::query_scalar(sql::CALLBACK_URL)
            .bind(&run_id)
            .fetch_optional(&mut *b.conn)
            .await?
            .flatten();
        let Some(url) = url else { continue };
        claimed.push(WebhookDelivery {
            id: row.try_get("id")?,
            run_id: parse_id(&run_id)?,
            url,
            attempt: row.try_get::<i64, _>("attempts")? as u32,
            created_at: from_ms(row.try_get("created_at")?),
        });
    }
    Ok(claimed)
}

/// Records how a delivery went, on the delivery and as an event of the run.
pub(super) async fn done(
    b: &mut Batch<'_>,
    delivery: &WebhookDelivery,
    result: &WebhookResult,
) -> Result<(), StoreError> {
    let (kind, data) = match result {
        WebhookResult::Delivered { status } => {
            sqlx::query(sql::WEBHOOK_DELIVERED)
                .bind(b.now)
                .bind(delivery.id)
                .execute(&mut *b.conn)
                .await?;
            let data =
                json!({ "delivery": delivery.id, "attempt": delivery.attempt, "status": status });
            (EventKind::WebhookDelivered, data)
        }
        WebhookResult::Failed { error, retry_at } => {
            sqlx::query(sql::WEBHOOK_FAILED)
                .bind(retry_at.map(to_ms))
                .bind(error)
                .bind(delivery.id)
                .execute(&mut *b.conn)
                .await?;
            let data = json!({
                "delivery": delivery.id,
                "attempt": delivery.attempt,
                "error": error,
                "next_attempt_at": retry_at,
                "given_up": retry_at.is_none(),
            });
            (EventKind::WebhookFailed, data)
        }
    };
    let row = sqlx::query(sql::NEXT_EVENT)
        .bind(b.now)
        .bind(delivery.run_id.to_string())
        .fetch_optional(&mut *b.conn)
        .await?;
    if let Some(row) = row {
        let attempt = row.try_get::<i64, _>("attempt")? as u32;
        b.event(
            delivery.run_id.to_string(),
            row.try_get("event_seq")?,
            kind,
            attempt,
            data,
        );
    }
    Ok(())
}
