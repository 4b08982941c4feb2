//! Wake-ups: a worker process learns at once that messages were pushed to an agent's queue,
//! instead of finding them at its next poll. The feeder (of whichever process) publishes
//! the agent's name on `<namespace>:wake` after each push; every worker process holds one
//! subscription to that channel and wakes the apalis worker of that agent, which fetches
//! at once. Pub/sub delivers at most once: a wake-up lost while the subscription is down is
//! covered by the poll (`--queue-poll-interval`), and every queue is woken when the
//! subscription is back.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use futures::{Stream, StreamExt};
use redis::RedisError;
use tokio_util::sync::CancellationToken;

use super::{QueueConn, RedisOptions};

/// The channel wake-ups go on: one per namespace (pub/sub ignores the database number).
pub(super) fn channel(options: &RedisOptions) -> String {
    format!("{}:wake", options.namespace)
}

/// Tells the processes serving `agent` that its queue has new messages.
pub(super) async fn publish(
    conn: &mut QueueConn,
    channel: &str,
    agent: &str,
) -> Result<(), RedisError> {
    redis::cmd("PUBLISH")
        .arg(channel)
        .arg(agent)
        .query_async::<i64>(conn)
        .await
        .map(drop)
}

/// One agent queue's wake-ups, as the stream its apalis worker polls on: ready once per
/// signal (signals that come before it is polled count once).
#[derive(Clone, Default)]
pub(crate) struct Wake(Arc<Inner>);

#[derive(Default)]
struct Inner {
    waker: AtomicWaker,
    set: AtomicBool,
}

impl Wake {
    pub(super) fn signal(&self) {
        self.0.set.store(true, Ordering::Release);
        self.0.waker.wake();
    }
}

impl Stream for Wake {
    type Item = ();

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
        let inner = &self.0;
        if inner.set.swap(false, Ordering::AcqRel) {
            return Poll::Ready(Some(()));
        }
        inner.waker.register(cx.waker());
        // a signal between the check and the registration is not lost
        if inner.set.swap(false, Ordering::AcqRel) {
            return Poll::Ready(Some(()));
        }
        Poll::Pending
    }
}

/// Holds the subscription until `stop`, waking the queue each message names; subscribes
/// again after an error (backing off up to 5 s), waking every queue once it is back. A
/// failure that repeats (a user without the channel in its ACL, a proxy without pub/sub) is
/// a warning once, then debug lines, until a subscription holds again.
pub(super) async fn listen(
    conn: QueueConn,
    channel: String,
    wakes: HashMap<String, Wake>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    let mut warned = false;
    loop {
        let mut held = false;
        let ended = tokio::select! {
            ended = subscribe(&conn, &channel, &wakes, &mut held) => ended,
            _ = stop.cancelled() => return,
        };
        if held {
            backoff = Duration::from_millis(100);
            warned = false;
        }
        match ended {
            Ok(()) => tracing::debug!("the Redis wake-up subscription ended; subscribing again"),
            Err(e) if !warned => {
                warned = true;
                tracing::warn!(error = %e, channel = %channel, "the Redis wake-up subscription failed: idle workers find new runs at their --queue-poll-interval meanwhile (the Redis user needs PUBLISH and SUBSCRIBE on this channel); subscribing again");
            }
            Err(e) => tracing::debug!(error = %e, "the Redis wake-up subscription failed again"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// How often the subscription's connection is pinged: a connection dropped without a reset
/// (a NAT or load balancer forgetting it, a host gone) would otherwise end nothing.
const PING_EVERY: Duration = Duration::from_secs(15);

/// After a wake-up, the queue is woken once more this much later: a fetch already under
/// way when the wake-up came (it started before the push) can take the wake-up and come
/// back empty, and the worker would then wait for its poll.
const WAKE_AGAIN_AFTER: Duration = Duration::from_millis(25);

/// One subscription, until its connection ends, stops answering, or Sentinel names
/// another master; `held` says it was established.
async fn subscribe(
    conn: &QueueConn,
    channel: &str,
    wakes: &HashMap<String, Wake>,
    held: &mut bool,
) -> Result<(), String> {
    let client = conn.client();
    let address = conn.address();
    let pubsub = tokio::time::timeout(Duration::from_secs(5), async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok::<_, RedisError>(pubsub)
    })
    .await
    .map_err(|_| "subscribing timed out after 5 s".to_owned())?
    .map_err(|e| e.to_string())?;
    *held = true;
    // what was pushed while no subscription listened is fetched now
    wakes.values().for_each(Wake::signal);
    let (mut sink, mut messages) = pubsub.split();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    let mut again: Vec<&Wake> = Vec::new();
    let mut again_at = None;
    loop {
        let at = again_at;
        let wake_again = async move {
            match at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else { return Ok(()) };
                if let Ok(queue) = message.get_payload::<String>()
                    && let Some(wake) = wakes.get(&queue)
                {
                    wake.signal();
                    if !again.iter().any(|w| Arc::ptr_eq(&w.0, &wake.0)) {
                        again.push(wake);
                    }
                    again_at.get_or_insert_with(|| tokio::time::Instant::now() + WAKE_AGAIN_AFTER);
                }
            }
            _ = wake_again => {
                again.drain(..).for_each(Wake::signal);
                again_at = None;
            }
            _ = ping.tick() => {
                match tokio::time::timeout(Duration::from_secs(5), sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(format!("ping: {e}")),
                    Err(_) => return Err("the subscription did not answer a ping in 5 s".into()),
                }
                // Sentinel moved the master: subscribe where the pushes go now
                if conn.address() != address {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn a_signal_before_the_poll_wakes_once() {
        let mut wake = Wake::default();
        assert!(wake.next().now_or_never().is_none(), "nothing signalled");
        wake.signal();
        wake.signal();
        assert_eq!(wake.next().now_or_never(), Some(Some(())));
        assert!(
            wake.next().now_or_never().is_none(),
            "two signals count once"
        );
        // a clone shares the signal
        let other = wake.clone();
        other.signal();
        assert_eq!(wake.next().now_or_never(), Some(Some(())));
    }
}
