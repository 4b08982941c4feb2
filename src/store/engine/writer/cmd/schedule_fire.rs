//! `ScheduleFire`: fires a schedule's due tick: moves it on to its next tick and stores the
//! tick's run, in one transaction. The move is a compare-and-set on the tick fired, so of
//! the processes that fire one tick, one makes its run and the others change nothing.

use super::super::sql;
use super::run_insert::{InsertAnswer, insert_runs};
use super::{Apply, Batch, Command};
use crate::domain::NewRun;
use crate::store::{Fired, StoreError};

pub(in crate::store) struct ScheduleFire {
    pub(in crate::store) id: String,
    /// The tick fired: the schedule's `next_tick_at` as the firing process read it (ms).
    pub(in crate::store) due: i64,
    /// Its next tick (ms); `None`: it has no more.
    pub(in crate::store) next: Option<i64>,
    /// Ticks that make no run.
    pub(in crate::store) missed: u64,
    /// The run of the tick that makes one, and that tick (ms).
    pub(in crate::store) run: Option<(i64, NewRun)>,
}

impl Command for ScheduleFire {
    type Reply = Fired;

    fn may_ready_runs(&self) -> bool {
        self.run.is_some()
    }
}

impl Apply for ScheduleFire {
    async fn apply(b: &mut Batch<'_>, commands: &[&Self]) -> Result<Vec<Fired>, StoreError> {
        let mut replies = Vec::with_capacity(commands.len());
        for c in commands {
            let run_id = c.run.as_ref().map(|(_, run)| run.id.to_string());
            let moved: Option<String> = sqlx::query_scalar(sql::FIRE_SCHEDULE)
                .bind(c.next)
                .bind(c.run.as_ref().map(|(tick, _)| *tick))
                .bind(run_id.as_deref())
                .bind(c.missed as i64)
                .bind(b.now)
                .bind(&c.id)
                .bind(c.due)
                .fetch_optional(&mut *b.conn)
                .await?;
            if moved.is_none() {
                replies.push(Fired::NotDue);
                continue;
            }
            let Some((_, run)) = &c.run else {
                replies.push(Fired::Moved(None));
                continue;
            };
            let answer = insert_runs(b, &[run], &Default::default()).await?.pop();
            replies.push(Fired::Moved(Some(match answer {
                Some(InsertAnswer::New(run)) => Ok(run.id),
                Some(InsertAnswer::Existing(id)) => Ok(id),
                Some(InsertAnswer::KeyBusy(why)) => Err(why),
                Some(InsertAnswer::KeyReused) => Err("its Idempotency-Key was taken".into()),
                Some(InsertAnswer::BadDependencies(_)) | None => {
                    Err("the run was not stored".into())
                }
            })));
        }
        Ok(replies)
    }
}
