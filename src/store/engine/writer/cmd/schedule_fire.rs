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
            let moved: Option<String> = sqlx::query_scalar(sql::FIRE_SCHEDULE)
                .bind(c.next)
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
            let Some((tick, run)) = &c.run else {
                replies.push(Fired::Moved(None));
                continue;
            };
            let stored = match insert_runs(b, &[run], &Default::default()).await?.pop() {
                Some(InsertAnswer::New(run)) => Ok(run.id),
                Some(InsertAnswer::Existing(id)) => Ok(id),
                Some(InsertAnswer::KeyBusy(why)) => Err(why),
                Some(InsertAnswer::KeyReused) => Err("its Idempotency-Key was taken".into()),
                Some(InsertAnswer::BadDependencies(_)) | None => {
                    Err("the run was not stored".into())
                }
            };
            match &stored {
                Ok(id) => {
                    sqlx::query(sql::SCHEDULE_RAN)
                        .bind(tick)
                        .bind(id.to_string())
                        .bind(&c.id)
                        .execute(&mut *b.conn)
                        .await?;
                }
                Err(_) => {
                    sqlx::query(sql::SCHEDULE_MISSED)
                        .bind(&c.id)
                        .execute(&mut *b.conn)
                        .await?;
                }
            }
            replies.push(Fired::Moved(Some(stored)));
        }
        Ok(replies)
    }
}
