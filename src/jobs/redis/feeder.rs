//! The feeder: keeps each served agent's Redis queue topped up to the dispatch window,
//! from the runs table in claim order (priority, then due time).
//!
//! It looks every poll interval, and at once when a commit of this process makes runs
//! ready (an insert, a retry coming due in the writer, a hand-back). Marking happens in
//! the table first and the push second: a push that fails leaves runs marked without a
//! message, which the reconciler frees after its grace, so nothing stays queued forever.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::{Task, TaskBuilder, TaskId, TaskSink};
use apalis_redis::RedisStorage;

use super::QueueConn;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Consumed, RedisOptions, queue_config};
use crate::domain::RunId;
use crate::jobs::execute::Executor;
use crate::store::Store;

pub(super) async fn feed(
    executor: Arc<Executor>,
    conn: QueueConn,
    options: RedisOptions,
    agents: Arc<[String]>,
    poll_interval: Duration,
    consumed: Arc<Consumed>,
    stop: CancellationToken,
) {
    let (store, status) = (&executor.store, &executor.status);
    let wake_channel = super::wake::channel(&options);
    let mut publisher = conn.clone();
    let mut queues: HashMap<&str, RedisStorage<Value, QueueConn>> = agents
        .iter()
        .map(|agent| {
            let storage =
                RedisStorage::new(conn.clone()).with_config(queue_config(&options, agent));
            (agent.as_str(), storage)
        })
        .collect();
    loop {
        consumed.reset();
        let mut failure = None;
        for agent in agents.iter() {
            let queue = queues.get_mut(agent.as_str()).expect("a queue per agent");
            let cap = executor.agent_limits.get(agent.as_str()).copied();
            match top_up(store, queue, agent, options.dispatch_window, cap).await {
                Ok(0) => {}
                // the processes serving the agent fetch now, not at their next poll
                Ok(_) => {
                    let queue = super::queue_name(&options, agent);
                    if let Err(e) =
                        super::wake::publish(&mut publisher, &wake_channel, &queue).await
                    {
                        tracing::debug!(agent = %agent, error = %e, "publishing a wake-up failed (workers find the runs at their next poll)");
                    }
                }
                Err(e) => {
                    tracing::warn!(agent = %agent, error = %e, "topping up the Redis queue failed");
                    failure = Some(e);
                }
            }
        }
        // a round that reached Redis for every queue is the proof delivery works
        if failure.is_none() {
            status.worked();
        }
        status.delivery_failed(failure);
        tokio::select! {
            _ = tokio::time::sleep(poll_interval) => {}
            _ = store.runs_ready() => {}
            _ = consumed.notify.notified() => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Marks the agent's next ready runs (up to the window) and pushes one message each;
/// returns how many.
async fn top_up(
    store: &Store,
    queue: &mut RedisStorage<Value, QueueConn>,
    agent: &str,
    window: usize,
    cap: Option<u32>,
) -> Result<usize, String> {
    let marked = store
        .dispatch(agent.to_owned(), window, cap)
        .await
        .map_err(|e| format!("marking runs to send to Redis failed: {e}"))?;
    if marked.is_empty() {
        return Ok(0);
    }
    let count = marked.len();
    let tasks: Vec<Task<Value>> = marked.into_iter().map(message).collect();
    // one batch_push.lua call for the lot
    queue
        .push_all(futures::stream::iter(tasks))
        .await
        .map_err(|e| {
            format!("pushing {count} runs to Redis failed (they are sent again later): {e}")
        })?;
    tracing::debug!(agent, runs = count, "sent runs to Redis");
    Ok(count)
}

/// One message: the run and the dispatch seq its claim must match. The task id is unique
/// per dispatch because apalis-redis silently drops a push whose id it has seen.
fn message((id, seq): (RunId, i64)) -> Task<Value> {
    TaskBuilder::new(json!({ "run": id.to_string(), "seq": seq }))
        .task_id(TaskId::from_string(format!("{id}:{seq}")))
        .build()
}

/// The (run, seq) a message names, if it is a dispatch message at all.
pub(super) fn parse_message(message: &Value) -> Option<(RunId, i64)> {
    let run = message.get("run")?.as_str()?.parse().ok()?;
    let seq = message.get("seq")?.as_i64()?;
    Some((run, seq))
}
