//! [`Store`]'s completion webhooks: claiming due deliveries and recording how they went.

use super::*;

impl Store {
    /// Whether any webhook delivery is due (a read).
    pub async fn has_due_webhooks(&self) -> Result<bool, StoreError> {
        on_engine!(self, e => e.has_due_webhooks().await)
    }
    /// Claims up to `limit` due webhook deliveries for `lease`.
    pub async fn claim_webhooks(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        command!(self, WebhookClaim { limit, lease })
    }
    /// Records a delivery attempt's result (and an event on the run).
    pub async fn webhook_done(
        &self,
        delivery: WebhookDelivery,
        result: WebhookResult,
    ) -> Result<(), StoreError> {
        command!(self, WebhookDone { delivery, result })
    }
}
