//! `AgentPause`: pauses an agent's queue or resumes it. While paused, no claim takes its
//! runs (the claim statements leave paused agents out), the feeder sends none to Redis,
//! and a message already there claims nothing; new runs are accepted and wait.

use super::super::sql;
use super::{Apply, Batch, Command};
use crate::store::StoreError;

/// Replies whether it changed anything (pausing a paused agent, or resuming one that is
/// not, does not).
pub(in crate::store) struct AgentPause {
    pub(in crate::store) agent: String,
    /// Pause, or resume.
    pub(in crate::store) pause: bool,
    /// Who paused it (see `RunEvent::actor`).
    pub(in crate::store) actor: Option<String>,
}

impl Command for AgentPause {
    type Reply = bool;

    /// A resumed agent's runs are claimable again: waiting claims look again.
    fn may_ready_runs(&self) -> bool {
        !self.pause
    }
}

impl Apply for AgentPause {
    async fn apply(b: &mut Batch<'_>, commands: &[&Self]) -> Result<Vec<bool>, StoreError> {
        let mut replies = Vec::with_capacity(commands.len());
        for c in commands {
            let done = if c.pause {
                sqlx::query(sql::PAUSE_AGENT)
                    .bind(&c.agent)
                    .bind(b.now)
                    .bind(c.actor.as_deref())
                    .execute(&mut *b.conn)
                    .await?
            } else {
                sqlx::query(sql::RESUME_AGENT)
                    .bind(&c.agent)
                    .execute(&mut *b.conn)
                    .await?
            };
            if !c.pause && done.rows_affected() > 0 {
                sqlx::query(sql::UNDISPATCH_AGENT)
                    .bind(&c.agent)
                    .execute(&mut *b.conn)
                    .await?;
                b.made_ready(b.now);
            }
            replies.push(done.rows_affected() > 0);
        }
        Ok(replies)
    }
}
