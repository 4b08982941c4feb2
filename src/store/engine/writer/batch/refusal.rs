//! Why a change asked for through the API was not made: an answer, not an error, so
//! the batch goes on.

use super::super::sql;
use super::Batch;
use crate::domain::{RunId, RunStatus};
use crate::store::StoreError;

/// Why a requested change was not made.
pub(in crate::store) enum Refusal {
    NotFound,
    /// The run's current status does not allow the change.
    WrongStatus(String),
    /// Something else prevents it; the message says what.
    Blocked(String),
}

/// Why a change to run `id` was refused: it does not exist, or its status.
pub(in crate::store) async fn refusal(b: &mut Batch<'_>, id: RunId) -> Result<Refusal, StoreError> {
    let status: Option<String> = sqlx::query_scalar(sql::STATUS_OF)
        .bind(id.to_string())
        .fetch_optional(&mut *b.conn)
        .await?;
    Ok(status.map_or(Refusal::NotFound, Refusal::WrongStatus))
}

impl Refusal {
    pub(in crate::store) fn into_error(self, action: &str) -> StoreError {
        match self {
            Refusal::NotFound => StoreError::NotFound,
            Refusal::Blocked(message) => {
                let code = match action {
                    "retry" => "dependency_failed",
                    "change" => "run_started",
                    "signal" => "signal_replayed",
                    _ => "conflict",
                };
                StoreError::Conflict(code, format!("cannot {action}: {message}"))
            }
            Refusal::WrongStatus(status) => StoreError::Conflict(
                match status.parse::<RunStatus>() {
                    Ok(s) if s.is_terminal() && action != "retry" => "run_finished",
                    _ if action == "retry" => "run_not_failed",
                    _ => "run_started",
                },
                format!(
                    "cannot {action} a run that is {status}{}",
                    if status == RunStatus::Failed.as_str() || action != "retry" {
                        ""
                    } else {
                        " (only failed runs can be retried)"
                    }
                ),
            ),
        }
    }
}
