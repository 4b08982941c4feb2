//! Reads: point lookups, filtered listing with cursor paging, and a run's events.

use crate::domain::{Run, RunEvent, RunId};
use crate::store::{RunFilter, RunPage, StoreError, to_ms};

use super::Sqlite;
use super::rows::{EventRow, RunRow};

const RUN_COLUMNS: &str = "id, agent, status, input, priority, metadata, progress_percent, \
    progress_message, attempt, max_attempts, result, checkpoint, error_kind, error_message, timeout_ms, \
    backoff_base_ms, backoff_cap_ms, run_at, deadline, expires_at, waiting_for, wait_until, callback_url, on_failure, compensation_run_id, compensates_run_id, worker_id, lease_until, created_at, started_at, \
    finished_at, updated_at, CASE WHEN depends_count > 0 THEN (SELECT json_group_array(depends_on_id) \
    FROM run_dependencies WHERE run_id = runs.id) END AS depends_on";

impl Sqlite {
    pub(in crate::store) async fn get_run(&self, id: RunId) -> Result<Run, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"));
        let row: RunRow = sqlx::query_as(sql)
            .bind(id.to_string())
            .fetch_one(&self.pool)
            .await?;
        row.try_into()
    }

    pub(in crate::store) async fn list_runs(&self, f: &RunFilter) -> Result<RunPage, StoreError> {
        let statuses = (!f.statuses.is_empty()).then(|| {
            serde_json::to_string(&f.statuses).expect("statuses serialise to a JSON array")
        });
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs \
             WHERE (?1 IS NULL OR status IN (SELECT value FROM json_each(?1))) \
               AND (?2 IS NULL OR agent = ?2) \
               AND (?3 IS NULL OR created_at >= ?3) \
               AND (?4 IS NULL OR created_at < ?4) \
               AND (?5 IS NULL OR id < ?5) \
             ORDER BY id DESC LIMIT ?6"
        ));
        let limit = f.limit.max(1);
        let rows: Vec<RunRow> = sqlx::query_as(sql)
            .bind(statuses)
            .bind(f.agent.as_deref())
            .bind(f.created_after.map(to_ms))
            .bind(f.created_before.map(to_ms))
            .bind(f.before.map(|id| id.to_string()))
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.pool)
            .await?;
        let more = rows.len() > limit as usize;
        let runs = rows
            .into_iter()
            .take(limit as usize)
            .map(Run::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if more {
            runs.last().map(|r| r.id)
        } else {
            None
        };
        Ok(RunPage { runs, next_cursor })
    }

    pub(in crate::store) async fn list_events(
        &self,
        id: RunId,
        after: i64,
    ) -> Result<Vec<RunEvent>, StoreError> {
        let id = id.to_string();
        let mut tx = self.pool.begin().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM runs WHERE id = ?1")
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT seq, at, type, attempt, data FROM run_events \
             WHERE run_id = ?1 AND seq > ?2 ORDER BY seq",
        )
        .bind(&id)
        .bind(after)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.into_iter().map(RunEvent::try_from).collect()
    }

    /// Whether any webhook delivery is due: a read, so idle workers need no write lock.
    pub(in crate::store) async fn has_due_webhooks(&self) -> Result<bool, StoreError> {
        let due: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM webhook_deliveries INDEXED BY webhook_deliveries_due \
             WHERE delivered_at IS NULL AND given_up = 0 AND due_at <= ?1)",
        )
        .bind(to_ms(chrono::Utc::now()))
        .fetch_one(&self.pool)
        .await?;
        Ok(due)
    }
}
