//! `WebhookDone`: how a delivery attempt went, on the delivery and as an event of the
//! run.

use serde_json::json;
use sqlx::Row;

use super::super::sql;
use super::{Apply, Batch, Command};
use crate::domain::EventKind;
use crate::store::{StoreError, WebhookDelivery, WebhookResult, to_ms};

pub(in crate::store) struct WebhookDone {
    pub(in crate::store) delivery: WebhookDelivery,
    pub(in crate::store) result: WebhookResult,
}

impl Command for WebhookDone {
    type Reply = ();
}

impl Apply for WebhookDone {
    async fn apply(b: &mut Batch<'_>, commands: &[&Self]) -> Result<Vec<()>, StoreError> {
        for c in commands {
            done(b, &c.delivery, &c.result).await?;
        }
        Ok(vec![(); commands.len()])
    }
}

/// Records how a delivery went, on the delivery and as an event of the run.
async fn done(
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
                "next_attempt_at": retry_at.as_ref().map(crate::domain::time::rfc3339),
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
