//! Tells this process's live event streams of events other processes wrote.
//!
//! Events this process commits reach its followers from the writer at once (the hub).
//! What other processes commit is found here: one read every [`EVERY`] of the newest seq
//! of every followed run (each run's `event_seq`, by primary key), in chunks, waking the
//! followers of the runs that moved. The cost is one indexed read per quarter second per
//! process, whatever the number of streams, where each stream used to read on its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{Db, sql};
use crate::store::hub::EventHub;

/// How often the followed runs' newest seqs are read.
const EVERY: Duration = Duration::from_millis(250);
/// The most runs one read asks about.
const CHUNK: usize = 500;

/// Reads the followed runs' newest seqs until the engine closes (it aborts this task).
pub(super) async fn watch(pool: sqlx::Pool<Db>, hub: Arc<EventHub>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_warned = None;
    loop {
        tick.tick().await;
        if !hub.is_followed() {
            continue;
        }
        let heads = hub.followed_heads();
        for chunk in heads.chunks(CHUNK) {
            let ids: Vec<&str> = chunk.iter().map(|(id, _)| id.as_str()).collect();
            let ids = serde_json::to_string(&ids).expect("ids serialise");
            let rows: Vec<(String, i64)> = match sqlx::query_as(sql::EVENT_HEADS)
                .bind(ids)
                .fetch_all(&pool)
                .await
            {
                Ok(rows) => rows,
                Err(e) => {
                    // the streams wait; the next tick tries again (said once a minute at most)
                    if last_warned
                        .is_none_or(|at: std::time::Instant| at.elapsed() > Duration::from_secs(60))
                    {
                        tracing::warn!(error = %e, "reading the followed runs' newest events failed; live streams of other processes' events wait");
                        last_warned = Some(std::time::Instant::now());
                    }
                    break;
                }
            };
            let newest: HashMap<&str, i64> =
                rows.iter().map(|(id, seq)| (id.as_str(), *seq)).collect();
            for (id, _) in chunk {
                hub.advanced(id, newest.get(id.as_str()).copied());
            }
        }
    }
}
