//! Compensation: a run that fails for good and names an `on_failure` agent gets a linked
//! run of that agent, created in the same transaction as the failure.
//!
//! The compensation run's input is `{"input": on_failure.input, "failed_run": {id, agent,
//! input, error}}`; it inherits the failed run's priority, attempts, timeout and backoff.
//! The failed run records `compensation_run_id` (and a `compensation_created` event), the
//! new run `compensates_run_id`. A run compensates once, even if retried and failed again.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Row;

use super::super::super::rows::parse_id;
use super::super::cmd::insert_runs;
use super::super::sql;
use super::Batch;
use crate::domain::{Backoff, Compensation, EventKind, NewRun, RunId, Tenant};
use crate::store::StoreError;

pub(in crate::store) async fn compensate(b: &mut Batch<'_>) -> Result<(), StoreError> {
    if b.failed.is_empty() {
        return Ok(());
    }
    let failed = serde_json::to_string(&std::mem::take(&mut b.failed)).expect("ids serialise");
    let rows = sqlx::query(sql::TO_COMPENSATE)
        .bind(failed)
        .fetch_all(&mut *b.conn)
        .await?;
    for row in rows {
        let failed_id: String = row.try_get("id")?;
        let spec: Compensation = serde_json::from_str(&row.try_get::<String, _>("on_failure")?)?;
        let input: Value = serde_json::from_str(&row.try_get::<String, _>("input")?)?;
        let envelope = json!({
            "input": spec.input,
            "failed_run": {
                "id": failed_id,
                "agent": row.try_get::<String, _>("agent")?,
                "input": input,
                "error": {
                    "kind": row.try_get::<Option<String>, _>("error_kind")?,
                    "message": row.try_get::<Option<String>, _>("error_message")?,
                },
            },
        });
        let ms = |column: &str| -> Result<Duration, StoreError> {
            Ok(Duration::from_millis(row.try_get::<i64, _>(column)? as u64))
        };
        let run = NewRun {
            id: RunId::new(),
            agent: spec.agent,
            input: envelope,
            priority: row.try_get::<i64, _>("priority")? as i32,
            max_attempts: row.try_get::<i64, _>("max_attempts")? as u32,
            timeout: ms("timeout_ms")?,
            backoff: Backoff {
                base: ms("backoff_base_ms")?,
                cap: ms("backoff_cap_ms")?,
            },
            run_at: None,
            deadline: None,
            expires_at: None,
            metadata: Default::default(),
            idempotency: None,
            on_failure: None,
            compensates: Some(parse_id(&failed_id)?),
            depends_on: Vec::new(),
            callback_url: None,
            tenant: Tenant::parse(row.try_get::<&str, _>("tenant")?)
                .map_err(|e| StoreError::Corrupt(format!("tenant: {e}")))?,
            trace_parent: None,
            created_by: None,
            concurrency: None,
        };
        let compensation_id = run.id.to_string();
        insert_runs(b, &[&run], &Default::default()).await?;
        let seq: i64 = sqlx::query_scalar(sql::LINK_COMPENSATION)
            .bind(&compensation_id)
            .bind(b.now)
            .bind(&failed_id)
            .fetch_one(&mut *b.conn)
            .await?;
        let attempt = row.try_get::<i64, _>("attempt")? as u32;
        let data = json!({ "run_id": compensation_id });
        b.event(
            failed_id,
            seq,
            EventKind::CompensationCreated,
            attempt,
            data,
        );
    }
    Ok(())
}
