//! `RunSignal`: a signal sent to a run through the API, kept until a wait consumes it,
//! and resuming the run if it waits for it.

use serde_json::json;
use sqlx::Row;

use super::super::batch::{Refusal, insert_signal, resume};
use super::super::sql;
use super::{Apply, Batch, Command};
use crate::domain::{EventKind, RunId, RunStatus};
use crate::store::{NewSignal, StoreError};

/// Replies whether it resumed the run; `NotFound`, or `Conflict` when the run finished
/// or the same signed request was taken before.
pub(in crate::store) struct RunSignal {
    pub(in crate::store) id: RunId,
    pub(in crate::store) signal: NewSignal,
}

impl Command for RunSignal {
    type Reply = Result<bool, StoreError>;

    fn may_ready_runs(&self) -> bool {
        true
    }
}

impl Apply for RunSignal {
    async fn apply(
        b: &mut Batch<'_>,
        commands: &[&Self],
    ) -> Result<Vec<Result<bool, StoreError>>, StoreError> {
        let mut replies = Vec::with_capacity(commands.len());
        for c in commands {
            let delivered = deliver(b, c.id, &c.signal).await?;
            replies.push(
                delivered
                    .map(|resumed| resumed > 0)
                    .map_err(|r| r.into_error("signal")),
            );
        }
        Ok(replies)
    }
}

/// Stores a signal sent to a run and resumes the run if it waits for it. Answers whether it
/// resumed the run, or why the signal was refused (unknown or finished run).
async fn deliver(
    b: &mut Batch<'_>,
    run_id: RunId,
    signal: &NewSignal,
) -> Result<Result<u64, Refusal>, StoreError> {
    let name = signal.name.as_str();
    let id = run_id.to_string();
    let status: Option<String> = sqlx::query_scalar(sql::STATUS_OF)
        .bind(&id)
        .fetch_optional(&mut *b.conn)
        .await?;
    match status.as_deref().map(str::parse::<RunStatus>) {
        None => return Ok(Err(Refusal::NotFound)),
        Some(Ok(s)) if s.is_terminal() => return Ok(Err(Refusal::WrongStatus(s.to_string()))),
        _ => {}
    }
    let signature = signal.signature.as_deref();
    if !insert_signal(b, &id, name, &signal.payload, false, signature).await? {
        return Ok(Err(Refusal::Blocked(
            "this signed request was taken before (a replay): sign each sending anew".into(),
        )));
    }
    let row = sqlx::query(sql::NEXT_EVENT)
        .bind(b.now)
        .bind(&id)
        .fetch_one(&mut *b.conn)
        .await?;
    let attempt = row.try_get::<i64, _>("attempt")? as u32;
    // the payload too, so the run's log shows what was sent and by whom
    let data = json!({ "name": name, "payload": signal.payload });
    b.event_by(
        id.clone(),
        row.try_get("event_seq")?,
        EventKind::SignalReceived,
        attempt,
        data,
        signal.actor.clone(),
    );
    resume(b, id, name, false).await
}
