//! Per-agent concurrency limits over all workers (`--agent-limit http=20`).
//!
//! A claim counts the limited agents' running runs in its own transaction and takes no
//! more than each one's room. On PostgreSQL, where several processes write, it first takes
//! a transaction-scoped advisory lock per limited agent (in name order, so two claims
//! never wait on each other crosswise): the count then sees every other claim of that
//! agent that committed. SQLite needs none: each batch holds the database's write lock.
//!
//! An agent whose room is at least the claim's size joins the one claim of the agent's
//! unlimited peers, in the usual priority order. An agent closer to its limit is claimed
//! on its own first, up to its room; one at its limit is left out. Redis delivery keeps
//! the same bound at the feeder: runs sent plus runs running stay within the limit.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;

use super::super::cmd::claim_ready as claim;
use super::super::sql;
use super::Batch;
use crate::store::{ClaimedRun, StoreError};

/// Takes the limits' locks for `agents` and counts their running runs.
async fn running(
    b: &mut Batch<'_>,
    agents: &[&String],
) -> Result<HashMap<String, i64>, StoreError> {
    if let Some(lock) = sql::AGENT_LIMIT_LOCK {
        // `agents` comes from a BTreeMap: always the same order
        for agent in agents {
            sqlx::query(lock)
                .bind(agent.as_str())
                .execute(&mut *b.conn)
                .await?;
        }
        // The lock may have waited for another process's batch, one that finished a run of
        // the agent: what this batch writes from here on (the claim's `started` time) comes
        // after that finish, not before it as the batch's start time would.
        b.now = b.now.max(b.clock.now_ms());
    }
    let rows = sqlx::query(sql::RUNNING_BY_AGENT)
        .bind(serde_json::to_string(agents).expect("names serialise"))
        .fetch_all(&mut *b.conn)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("agent")?, r.try_get("n")?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

/// A claim of up to `limit` runs of `agents` that keeps every limited agent within its
/// limit. Workers always name their agents; with `None` the limits cannot be applied
/// per agent and the claim is an ordinary one.
pub(in crate::store) async fn claim_within(
    b: &mut Batch<'_>,
    worker_id: &Arc<str>,
    agents: Option<&[String]>,
    limit: usize,
    lease: Duration,
    limits: &BTreeMap<String, u32>,
) -> Result<Vec<ClaimedRun>, StoreError> {
    let Some(agents) = agents else {
        return claim(b, worker_id, None, limit, lease).await;
    };
    let limited: Vec<&String> = limits.keys().filter(|a| agents.contains(a)).collect();
    if limited.is_empty() {
        return claim(b, worker_id, Some(agents), limit, lease).await;
    }
    let running = running(b, &limited).await?;
    let mut left = limit;
    let mut claimed = Vec::new();
    let mut together = Vec::new();
    for agent in agents {
        let Some(cap) = limits.get(agent) else {
            together.push(agent.clone());
            continue;
        };
        let room = (i64::from(*cap) - running.get(agent).copied().unwrap_or(0)).max(0) as usize;
        if room >= left {
            together.push(agent.clone());
        } else if room > 0 && left > 0 {
            let runs = claim(b, worker_id, Some(std::slice::from_ref(agent)), room, lease).await?;
            left -= runs.len();
            claimed.extend(runs);
        }
    }
    if left > 0 && !together.is_empty() {
        claimed.extend(claim(b, worker_id, Some(&together), left, lease).await?);
    }
    Ok(claimed)
}

/// How many more runs of a limited agent the feeder may send: its limit minus its runs
/// running and already sent, counted in one statement. Two counts in two statements
/// would each see a different moment on PostgreSQL, and a claim committing in between
/// (a sent run becoming a running one) would be counted twice as room.
pub(in crate::store) async fn room_to_send(
    b: &mut Batch<'_>,
    agent: &str,
    cap: u32,
) -> Result<usize, StoreError> {
    if let Some(lock) = sql::AGENT_LIMIT_LOCK {
        sqlx::query(lock).bind(agent).execute(&mut *b.conn).await?;
    }
    let taken: i64 = sqlx::query_scalar(sql::RUNNING_OR_SENT)
        .bind(agent)
        .fetch_one(&mut *b.conn)
        .await?;
    Ok((i64::from(cap) - taken).max(0) as usize)
}
