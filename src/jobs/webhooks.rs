//! Completion webhooks: worker processes deliver the runs that finished with a
//! `callback_url`, at least once.
//!
//! Each delivery POSTs the run as JSON with `Agentq-Event: run.finished` and
//! `Agentq-Delivery: <id>`; with a secret, `Agentq-Signature: t=<unix seconds>,v1=<hex
//! HMAC-SHA256 of "<t>.<body>">`. A 2xx answer delivers it; anything else is tried again
//! after a jittered exponential backoff until `give_up_after` since the run finished.
//! Every attempt is recorded as an event of the run.
//!
//! Deliveries go through an [`EgressClient`]: a `callback_url` the egress policy refuses
//! (`--http-allow`) is not sent, and its delivery fails at once, for good, with the reason.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::domain::{Backoff, Secret, sign_request};
use crate::jobs::egress::{EgressClient, EgressPolicy, Refused};
use crate::store::{Store, WebhookDelivery, WebhookResult};

/// How completion webhooks are sent.
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    pub secret: Option<Secret>,
    /// First retry waits up to this long; doubling up to an hour.
    pub backoff_base: Duration,
    pub give_up_after: Duration,
    pub request_timeout: Duration,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        Self {
            secret: None,
            backoff_base: Duration::from_secs(1),
            give_up_after: Duration::from_secs(24 * 3600),
            request_timeout: Duration::from_secs(10),
        }
    }
}

const BATCH: usize = 16;
const CLAIM_LEASE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(250);

pub(crate) async fn deliver_webhooks(
    store: Store,
    options: WebhookOptions,
    egress: EgressPolicy,
    stop: CancellationToken,
) {
    let builder = reqwest::Client::builder()
        .timeout(options.request_timeout)
        .user_agent(super::egress::USER_AGENT);
    let client =
        EgressClient::new(egress, builder).expect("a client with default TLS settings builds");
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        // a read first: an idle worker takes no write lock just to find nothing
        if !store.has_due_webhooks().await.unwrap_or(true) {
            continue;
        }
        let claimed = match store.claim_webhooks(BATCH, CLAIM_LEASE).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(error = %e, "claiming webhook deliveries failed");
                continue;
            }
        };
        let sends = claimed
            .into_iter()
            .map(|delivery| deliver(&store, &client, &options, delivery));
        futures::future::join_all(sends).await;
    }
}

async fn deliver(
    store: &Store,
    client: &EgressClient,
    options: &WebhookOptions,
    d: WebhookDelivery,
) {
    let sent = match store.get_run(d.run_id).await {
        Ok(run) => {
            let body = serde_json::to_vec(&run).expect("a run serialises");
            send(client, options, &d, body).await
        }
        Err(e) => Err(SendError::Failed(format!("could not read the run: {e}"))),
    };
    let result = match sent {
        Ok(status) => WebhookResult::Delivered { status },
        Err(SendError::Refused(refused)) => WebhookResult::Failed {
            error: refused.to_string(),
            retry_at: None,
        },
        Err(SendError::Failed(error)) => {
            let now = chrono::Utc::now();
            let backoff = Backoff {
                base: options.backoff_base,
                cap: Duration::from_secs(3600),
            };
            let retry_at = now + backoff.delay(d.attempt, &mut rand::rng());
            let give_up = d.created_at + options.give_up_after;
            WebhookResult::Failed {
                error,
                retry_at: (retry_at <= give_up).then_some(retry_at),
            }
        }
    };
    if let Err(e) = store.webhook_done(d.clone(), result).await {
        tracing::warn!(run.id = %d.run_id, error = %e, "could not record a webhook delivery; it is tried again");
    }
}

/// Why a delivery was not made.
enum SendError {
    /// The egress policy refuses the callback URL: no later attempt can succeed.
    Refused(Refused),
    Failed(String),
}

async fn send(
    client: &EgressClient,
    options: &WebhookOptions,
    d: &WebhookDelivery,
    body: Vec<u8>,
) -> Result<u16, SendError> {
    let mut request = client
        .request(reqwest::Method::POST, &d.url)
        .map_err(SendError::Refused)?
        .header("content-type", "application/json")
        .header("agentq-event", "run.finished")
        .header("agentq-delivery", d.id.to_string());
    let run_id = d.run_id.to_string();
    if let Some(secret) = &options.secret {
        let t = chrono::Utc::now().timestamp();
        let signature = sign_request(secret.0.as_bytes(), t, &run_id, &body);
        request = request.header("agentq-signature", signature);
    }
    request = request.header("agentq-run-id", run_id);
    let response = request
        .body(body)
        .send()
        .await
        .map_err(|e| match Refused::find_in(&e) {
            Some(refused) => SendError::Refused(refused.clone()),
            None => SendError::Failed(format!("request failed: {e}")),
        })?;
    let status = response.status();
    if status.is_success() {
        Ok(status.as_u16())
    } else {
        Err(SendError::Failed(format!("answered {status}")))
    }
}
