//! `RunClaimDispatched`: Redis delivery's worker claims the runs of the messages it took,
//! fenced on (run, dispatch seq) like a claim of ready runs: a stale message claims
//! nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::super::sql;
use super::run_claim::claimed_rows;
use super::{Apply, Batch, Command};
use crate::domain::RunId;
use crate::store::{ClaimedRun, Fence, StoreError};

pub(in crate::store) struct RunClaimDispatched {
    pub(in crate::store) worker_id: Arc<str>,
    pub(in crate::store) messages: Vec<(RunId, i64)>,
    pub(in crate::store) lease: Duration,
}

impl Command for RunClaimDispatched {
    type Reply = Vec<ClaimedRun>;

    fn handed_out(reply: Vec<ClaimedRun>) -> Vec<Fence> {
        reply.iter().map(ClaimedRun::fence).collect()
    }
}

impl Apply for RunClaimDispatched {
    /// One statement for every message claim of the batch with the same worker and lease
    /// (each handler claims its own message, so a busy worker sends many at once).
    async fn apply(
        b: &mut Batch<'_>,
        commands: &[&Self],
    ) -> Result<Vec<Vec<ClaimedRun>>, StoreError> {
        let mut replies: Vec<Vec<ClaimedRun>> = commands.iter().map(|_| Vec::new()).collect();
        let mut groups: Vec<(&Arc<str>, Duration, Vec<usize>)> = Vec::new();
        for (i, c) in commands.iter().enumerate() {
            match groups
                .iter_mut()
                .find(|(w, l, _)| **w == c.worker_id && *l == c.lease)
            {
                Some((_, _, members)) => members.push(i),
                None => groups.push((&c.worker_id, c.lease, vec![i])),
            }
        }
        for (worker_id, lease, members) in groups {
            let mut asked = Vec::new();
            let mut asker = HashMap::new();
            for &i in &members {
                for message in &commands[i].messages {
                    asker.insert(message.0, i);
                    asked.push(*message);
                }
            }
            for run in claim_dispatched(b, worker_id, &asked, lease).await? {
                if let Some(&i) = asker.get(&run.id) {
                    replies[i].push(run);
                }
            }
        }
        Ok(replies)
    }
}

/// A row of the JSON array `CLAIM_DISPATCHED` and `UNDISPATCH` read: one message.
#[derive(Serialize)]
struct MessageRow {
    id: String,
    seq: i64,
}

/// Messages, (run id, dispatch seq), as the statements take them.
pub(super) fn messages(list: &[(RunId, i64)]) -> String {
    let rows: Vec<MessageRow> = list
        .iter()
        .map(|(id, seq)| MessageRow {
            id: id.to_string(),
            seq: *seq,
        })
        .collect();
    serde_json::to_string(&rows).expect("rows serialise")
}

/// Claims the runs whose messages are current, like a claim of ready runs does.
async fn claim_dispatched(
    b: &mut Batch<'_>,
    worker_id: &Arc<str>,
    list: &[(RunId, i64)],
    lease: Duration,
) -> Result<Vec<ClaimedRun>, StoreError> {
    let rows = sqlx::query(sql::CLAIM_DISPATCHED)
        .bind(&**worker_id)
        .bind(b.now + lease.as_millis() as i64)
        .bind(b.now)
        .bind(messages(list))
        .fetch_all(&mut *b.conn)
        .await?;
    claimed_rows(b, worker_id, rows).await
}
