//! `RunClaim`: a worker claims up to `limit` due runs of its agents, each with a
//! `started` event and the results of the runs it depends on. An idle worker's claim that
//! finds nothing may wait: it is parked in the writer and applied again with later
//! batches, so a run inserted by the API is claimed in the transaction that stores it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sqlx::Row;

use super::super::super::Db;
use super::super::super::rows::parse_id;
use super::super::batch::{claim_within, dependency_results};
use super::super::sql;
use super::{Apply, Batch, Command};
use crate::domain::EventKind;
use crate::store::{AgentLimits, ClaimedRun, Fence, StoreError, from_ms};

pub(in crate::store) struct RunClaim {
    pub(in crate::store) worker_id: Arc<str>,
    /// Every agent when `None`.
    pub(in crate::store) agents: Option<Arc<[String]>>,
    pub(in crate::store) limit: usize,
    pub(in crate::store) lease: Duration,
    /// Park until runs are claimable or this time (ms) passes; `None` answers at once.
    pub(in crate::store) wait_until: Option<i64>,
    /// No agent ends up with more runs running over all workers than its limit.
    pub(in crate::store) agent_limits: Option<AgentLimits>,
}

impl Command for RunClaim {
    type Reply = Vec<ClaimedRun>;

    fn waits_until(&self) -> Option<i64> {
        self.wait_until
    }

    fn waits_for_room(&self) -> bool {
        self.agent_limits.is_some()
    }

    fn found_nothing(reply: &Vec<ClaimedRun>) -> bool {
        reply.is_empty()
    }

    fn handed_out(reply: Vec<ClaimedRun>) -> Vec<Fence> {
        reply.iter().map(ClaimedRun::fence).collect()
    }
}

impl RunClaim {
    /// Whether `other` claims for the same worker, agents and lease.
    fn claims_like(&self, other: &Self) -> bool {
        self.worker_id == other.worker_id
            && self.agents == other.agents
            && self.lease == other.lease
    }
}

impl Apply for RunClaim {
    async fn apply(
        b: &mut Batch<'_>,
        commands: &[&Self],
    ) -> Result<Vec<Vec<ClaimedRun>>, StoreError> {
        let mut replies = Vec::with_capacity(commands.len());
        let mut rest = commands;
        while let Some((c, _)) = rest.split_first() {
            let agents = c.agents.as_deref();
            if let Some(limits) = &c.agent_limits {
                replies
                    .push(claim_within(b, &c.worker_id, agents, c.limit, c.lease, limits).await?);
                rest = &rest[1..];
                continue;
            }
            // the claims of one worker's slots in a row (each finishing attempt claims its
            // slot's next run) are one statement, its runs dealt out in order
            let alike = rest
                .iter()
                .take_while(|o| o.agent_limits.is_none() && o.claims_like(c))
                .count();
            let (these, after) = rest.split_at(alike);
            let total = these.iter().map(|o| o.limit).sum();
            let mut runs = claim_ready(b, &c.worker_id, agents, total, c.lease)
                .await?
                .into_iter();
            for o in these {
                replies.push(runs.by_ref().take(o.limit).collect());
            }
            rest = after;
        }
        Ok(replies)
    }
}

pub(in crate::store) async fn claim_ready(
    b: &mut Batch<'_>,
    worker_id: &Arc<str>,
    agents: Option<&[String]>,
    limit: usize,
    lease: Duration,
) -> Result<Vec<ClaimedRun>, StoreError> {
    let agents = agents.map(|a| serde_json::to_string(a).expect("names serialise"));
    let rows = sqlx::query(sql::CLAIM)
        .bind(&**worker_id)
        .bind(b.now + lease.as_millis() as i64)
        .bind(b.now)
        .bind(agents)
        .bind(limit as i64)
        .fetch_all(&mut *b.conn)
        .await?;
    claimed_rows(b, worker_id, rows).await
}

/// Maps the rows a claim statement returned (`CLAIM`, `CLAIM_DISPATCHED`) to claimed runs,
/// with a `started` event each and the results of the runs they depend on.
pub(in crate::store) async fn claimed_rows(
    b: &mut Batch<'_>,
    worker_id: &Arc<str>,
    rows: Vec<<Db as sqlx::Database>::Row>,
) -> Result<Vec<ClaimedRun>, StoreError> {
    let mut claimed = Vec::with_capacity(rows.len());
    let mut with_dependencies = Vec::new();
    for row in rows {
        let id: String = row.try_get("id")?;
        let input: String = row.try_get("input")?;
        let checkpoint: Option<String> = row.try_get("checkpoint")?;
        let deadline: Option<i64> = row.try_get("deadline")?;
        if row.try_get::<i64, _>("depends_count")? > 0 {
            with_dependencies.push(id.clone());
        }
        let run = ClaimedRun {
            id: parse_id(&id)?,
            agent: row.try_get("agent")?,
            input: serde_json::from_str(&input)?,
            checkpoint: checkpoint
                .as_deref()
                .map(serde_json::from_str)
                .transpose()?,
            deadline: deadline.map(from_ms),
            dependencies: Default::default(),
            attempt: row.try_get::<i64, _>("attempt")? as u32,
            claim: row.try_get::<i64, _>("claims")? as u32,
            max_attempts: row.try_get::<i64, _>("max_attempts")? as u32,
            timeout_ms: row.try_get::<i64, _>("timeout_ms")? as u64,
            backoff_base_ms: row.try_get::<i64, _>("backoff_base_ms")? as u64,
            backoff_cap_ms: row.try_get::<i64, _>("backoff_cap_ms")? as u64,
            priority: row.try_get::<i64, _>("priority")? as i32,
            worker_id: worker_id.clone(),
            queue_wait_ms: (b.now - ready_since(&row)?).max(0) as u64,
            trace_parent: row.try_get("trace_parent")?,
            tenant: row.try_get("tenant")?,
            metadata: serde_json::from_str(&row.try_get::<String, _>("metadata")?)?,
            created_by: row.try_get("created_by")?,
        };
        let seq: i64 = row.try_get("event_seq")?;
        b.event(
            id,
            seq,
            EventKind::Started,
            run.attempt,
            json!({ "worker_id": &*run.worker_id }),
        );
        claimed.push(run);
    }
    if !with_dependencies.is_empty() {
        let mut results = dependency_results(b, &with_dependencies).await?;
        for run in &mut claimed {
            if let Some(found) = results.remove(&run.id.to_string()) {
                run.dependencies = found;
            }
        }
    }
    // RETURNING gives no order; hand the runs out in the order they were chosen.
    claimed.sort_by_key(|r| std::cmp::Reverse(r.priority));
    Ok(claimed)
}

/// When a claimed run became ready: its `run_at`, or, if later, when it last went back to
/// the queue mid-attempt (it kept its `run_at`, and its place in line).
fn ready_since(row: &<Db as sqlx::Database>::Row) -> Result<i64, sqlx::Error> {
    let run_at: i64 = row.try_get("run_at")?;
    let requeued_at: Option<i64> = row.try_get("requeued_at")?;
    Ok(requeued_at.map_or(run_at, |at| at.max(run_at)))
}
