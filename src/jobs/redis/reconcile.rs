//! The reconciler: finds runs marked as sent whose message Redis no longer holds, and
//! frees them for the feeder; and the janitor: deletes what apalis-redis keeps of
//! finished messages (it never does).
//!
//! A message is live while its meta hash says `Pending` (waiting, buffered or in a
//! worker's inflight set) or `Running`. Missing means Redis lost it (restart without
//! persistence, FLUSHALL) or the push never landed; `Done`/`Killed`/`Failed` without a
//! claim means the claim failed (a database error). Freeing is idempotent and fenced by
//! the dispatch seq, so any number of processes may reconcile at once.

use std::sync::Arc;
use std::time::Duration;

use super::QueueConn;
use tokio_util::sync::CancellationToken;

use super::{RedisOptions, queue_name};
use crate::domain::RunId;
use crate::jobs::WorkerStatus;
use crate::store::Store;

/// How often the reconciler looks.
const EVERY: Duration = Duration::from_secs(1);

/// A mark younger than this is not checked: it covers the gap between marking a run and
/// its push landing in Redis.
const GRACE: Duration = Duration::from_secs(5);

/// Finished messages deleted per pipeline: small enough for one quick round trip.
const TRIM_BATCH: usize = 1000;

/// Pipelines per queue and look: the janitor keeps up with 20,000 runs/s per queue.
const TRIM_ROUNDS: usize = 20;

pub(super) async fn reconcile(
    store: Store,
    mut conn: QueueConn,
    options: RedisOptions,
    agents: Arc<[String]>,
    status: Arc<WorkerStatus>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // every live message of every served agent fits: at most a window each
    let limit = (options.dispatch_window * agents.len()).max(1);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        match free_lost(&store, &mut conn, &options, &agents, limit).await {
            Ok(freed) => {
                status.reconcile_failed(None);
                if freed > 0 {
                    tracing::warn!(
                        runs = freed,
                        "runs marked as sent were not in Redis (restarted or flushed?); sending them again"
                    )
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reconciling Redis with the runs table failed");
                status.reconcile_failed(Some(e));
                continue;
            }
        }
        for agent in agents.iter() {
            let queue = queue_name(&options, agent);
            for _ in 0..TRIM_ROUNDS {
                match trim_finished(&mut conn, &queue).await {
                    Ok(removed) if removed >= TRIM_BATCH => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(agent = %agent, error = %e, "deleting finished Redis messages failed");
                        break;
                    }
                }
            }
        }
    }
}

/// Frees the marks whose message is gone; returns how many.
async fn free_lost(
    store: &Store,
    conn: &mut QueueConn,
    options: &RedisOptions,
    agents: &[String],
    limit: usize,
) -> Result<u64, String> {
    let marked: Vec<(String, RunId, i64)> = store
        .dispatched_before(GRACE, limit, agents)
        .await
        .map_err(|e| format!("reading runs sent to Redis failed: {e}"))?;
    if marked.is_empty() {
        return Ok(0);
    }
    let mut pipe = redis::pipe();
    for (agent, id, seq) in &marked {
        let queue = queue_name(options, agent);
        pipe.cmd("HGET")
            .arg(format!("{queue}:meta:{id}:{seq}"))
            .arg("status");
    }
    let statuses: Vec<Option<String>> = pipe
        .query_async(conn)
        .await
        .map_err(|e| format!("looking up messages in Redis failed: {e}"))?;
    let lost: Vec<(RunId, i64)> = marked
        .into_iter()
        .zip(statuses)
        .filter(|(_, status)| !matches!(status.as_deref(), Some("Pending" | "Running")))
        .map(|((_, id, seq), _)| (id, seq))
        .collect();
    if lost.is_empty() {
        return Ok(0);
    }
    store
        .undispatch(lost)
        .await
        .map_err(|e| format!("freeing runs lost by Redis failed: {e}"))
}

/// Deletes the data and meta of up to `TRIM_BATCH` acked messages from each of `done`
/// (claimed or stale) and `dead` (not a dispatch message); returns how many.
/// apalis-redis keeps them forever otherwise.
async fn trim_finished(conn: &mut QueueConn, queue: &str) -> redis::RedisResult<usize> {
    let mut removed = 0;
    for set in ["done", "dead"] {
        let ids: Vec<String> = redis::cmd("SPOP")
            .arg(format!("{queue}:{set}"))
            .arg(TRIM_BATCH)
            .query_async(conn)
            .await?;
        if ids.is_empty() {
            continue;
        }
        let mut pipe = redis::pipe();
        pipe.cmd("HDEL")
            .arg(format!("{queue}:data"))
            .arg(&ids)
            .ignore();
        for id in &ids {
            pipe.cmd("DEL").arg(format!("{queue}:meta:{id}")).ignore();
        }
        pipe.query_async::<()>(conn).await?;
        removed += ids.len();
    }
    Ok(removed)
}
