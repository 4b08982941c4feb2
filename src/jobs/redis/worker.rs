//! The Redis side of a worker process: one apalis worker per served agent queue, each
//! supervised (restarted under a fresh name after a backoff when it dies), and the
//! handler that turns a message into a claimed attempt.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use apalis::layers::WorkerBuilderExt;
use apalis::prelude::{AbortError, BoxDynError, Data, Monitor, WorkerBuilder};
use apalis_core::backend::ext::poll_strategy::{PollWith, Strategy};
use apalis_core::worker::ext::parallelize::ParallelizeExt;
use apalis_redis::RedisStorage;

use super::QueueConn;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::Pacing;
use super::feeder::parse_message;
use super::wake::Wake;
use super::{Consumed, RedisOptions, queue_config};
use crate::jobs::execute::{Executor, run_attempt};
use crate::jobs::stop::stop_signal;
use crate::jobs::supervise::Supervisor;

/// What every message handler of this process shares.
pub(crate) struct Delivery {
    executor: Arc<Executor>,
    /// Attempts this process runs at once, over all agent queues (`--concurrency`).
    slots: Semaphore,
    lease: Duration,
    shutdown: CancellationToken,
    consumed: Arc<Consumed>,
    window: usize,
}

impl Delivery {
    pub(crate) fn new(
        executor: &Arc<Executor>,
        options: Pacing,
        window: usize,
        consumed: Arc<Consumed>,
        shutdown: &CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Delivery {
            executor: executor.clone(),
            slots: Semaphore::new(options.concurrency),
            lease: options.lease,
            shutdown: shutdown.clone(),
            consumed,
            window,
        })
    }
}

/// Runs one supervised worker per agent until the delivery's shutdown, and waits for them
/// to stop.
pub(crate) async fn supervise_queues(
    conn: QueueConn,
    redis: &RedisOptions,
    delivery: Arc<Delivery>,
    agents: &Arc<[String]>,
    wakes: &HashMap<String, Wake>,
    options: Pacing,
    supervisor: &(dyn Fn() -> Supervisor + Sync),
) {
    let queues: Vec<_> = agents
        .iter()
        .map(|agent| {
            let wake = wakes
                .get(&super::queue_name(redis, agent))
                .cloned()
                .unwrap_or_default();
            tokio::spawn(supervise(
                agent.clone(),
                conn.clone(),
                redis.clone(),
                delivery.clone(),
                wake,
                options,
                supervisor(),
            ))
        })
        .collect();
    for queue in queues {
        let _ = queue.await;
    }
}

/// Runs the apalis worker of one agent queue until shutdown: it fetches when `wake` says
/// its queue got messages, and every poll interval in case a wake-up was lost. apalis-redis ends the worker
/// on any backend error (a reset connection, a flushed Redis); it is started again as its
/// [`Supervisor`] says (or the worker gives up), under a new name (a name is refused while
/// Redis still lists it).
async fn supervise(
    agent: String,
    conn: QueueConn,
    redis: RedisOptions,
    delivery: Arc<Delivery>,
    wake: Wake,
    options: Pacing,
    mut supervisor: Supervisor,
) {
    let (status, shutdown) = (delivery.executor.status.clone(), delivery.shutdown.clone());
    for restart in 0u64.. {
        let name = format!("{}-{agent}-{restart}", status.id());
        let storage = RedisStorage::<Value, QueueConn>::new(conn.clone())
            .with_config(queue_config(&redis, &agent));
        let (poll, concurrency, delivery, wake) = (
            redis.poll_interval,
            options.concurrency,
            delivery.clone(),
            wake.clone(),
        );
        let monitor = Monitor::new()
            .register(move |_restarts| {
                let strategy = Strategy::new().stream(wake.clone()).interval(poll);
                WorkerBuilder::new(name.as_str())
                    .backend(PollWith::new(storage.clone(), strategy))
                    .concurrency(concurrency)
                    .parallelize(tokio::spawn)
                    .data(delivery.clone())
                    .build(handle)
            })
            .should_restart(|_, _| false)
            .shutdown_timeout(options.shutdown_timeout);
        let ended = supervisor
            .watch(monitor.run_with_signal(stop_signal(&shutdown)))
            .await;
        if shutdown.is_cancelled() {
            return;
        }
        let reason = match ended {
            Err(e) => format!("the Redis worker of `{agent}` failed: {e}"),
            Ok(()) => format!("the Redis worker of `{agent}` stopped on its own"),
        };
        let Some(wait) = supervisor.stopped(&reason) else {
            return;
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// The apalis handler: claims the message's run and runs the attempt. Returns `Ok` for
/// everything agentq handles itself (a stale message, an attempt that failed: retries
/// are scheduled in the runs table), and `AbortError` only for a payload that is not a
/// dispatch message, so apalis-redis never retries on its own.
async fn handle(message: Value, delivery: Data<Arc<Delivery>>) -> Result<(), BoxDynError> {
    let Some((run_id, seq)) = parse_message(&message) else {
        tracing::warn!(%message, "a Redis message that is not a dispatch message; dropped");
        return Err(AbortError::new(format!("not a dispatch message: {message}")).into());
    };
    let Ok(_slot) = delivery.slots.acquire().await else {
        return Ok(());
    };
    // at shutdown no new attempt starts; the run stays marked and the reconciler of a
    // running process sends it again
    if delivery.shutdown.is_cancelled() {
        return Ok(());
    }
    delivery.consumed.took_one(delivery.window);
    let exec = &delivery.executor;
    let claimed = exec
        .store
        .claim_dispatched(exec.status.id(), vec![(run_id, seq)], delivery.lease)
        .await;
    match claimed {
        Ok(runs) => {
            exec.status.worked();
            for run in runs {
                run_attempt(exec, run).await;
            }
        }
        // acked anyway: the reconciler sees the message finished without a claim and
        // frees the run for another dispatch
        Err(e) => {
            tracing::warn!(run.id = %run_id, error = %e, "claiming a run from its Redis message failed");
        }
    }
    Ok(())
}
