//! `WebhookClaim`: a worker process claims due completion-webhook deliveries for a lease
//! (see `jobs::webhooks`).

use std::time::Duration;

use sqlx::Row;

use super::super::super::rows::parse_id;
use super::super::sql;
use super::{Apply, Batch, Command};
use crate::store::{StoreError, WebhookDelivery, from_ms};

pub(in crate::store) struct WebhookClaim {
    pub(in crate::store) limit: usize,
    pub(in crate::store) lease: Duration,
}

impl Command for WebhookClaim {
    type Reply = Vec<WebhookDelivery>;
}

impl Apply for WebhookClaim {
    async fn apply(
        b: &mut Batch<'_>,
        commands: &[&Self],
    ) -> Result<Vec<Vec<WebhookDelivery>>, StoreError> {
        let mut replies = Vec::with_capacity(commands.len());
        for c in commands {
            replies.push(claim(b, c.limit, c.lease.as_millis() as i64).await?);
        }
        Ok(replies)
    }
}

async fn claim(
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
