//! `WorkerHeartbeat`: the worker registry. A heartbeat upserts the process's row; rows
//! silent for a day go.

use super::super::sql;
use super::{Apply, Batch, Command};
use crate::domain::WorkerBeat;
use crate::store::{StoreError, to_ms};

/// Registry rows not heard from for this long are deleted.
const FORGET_AFTER_MS: i64 = 24 * 60 * 60 * 1000;

/// A worker process's heartbeat (registers it the first time).
pub(in crate::store) struct WorkerHeartbeat(pub(in crate::store) WorkerBeat);

impl Command for WorkerHeartbeat {
    type Reply = ();
}

impl Apply for WorkerHeartbeat {
    async fn apply(b: &mut Batch<'_>, commands: &[&Self]) -> Result<Vec<()>, StoreError> {
        for WorkerHeartbeat(beat) in commands {
            sqlx::query(sql::UPSERT_WORKER)
                .bind(&beat.id)
                .bind(&beat.host)
                .bind(i64::from(beat.pid))
                .bind(&beat.version)
                .bind(serde_json::to_string(&beat.agents).expect("agent names serialise"))
                .bind(i64::from(beat.concurrency))
                .bind(to_ms(beat.started_at))
                .bind(b.now)
                .bind(beat.running as i64)
                .bind(beat.processed as i64)
                .bind(i64::from(beat.restarts))
                .bind(beat.last_error.as_deref())
                .bind(beat.stopped.then_some(b.now))
                .bind(&beat.language)
                .bind(beat.last_restart_at.map(to_ms))
                .execute(&mut *b.conn)
                .await?;
            sqlx::query(sql::FORGET_WORKERS)
                .bind(b.now - FORGET_AFTER_MS)
                .execute(&mut *b.conn)
                .await?;
        }
        Ok(vec![(); commands.len()])
    }
}
