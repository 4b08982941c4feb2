//! [`Store`]'s schedules: runs made on a cron expression or at an interval.

use super::*;
use crate::domain::{DueSchedule, NewRun, NewSchedule, Schedule};

impl Store {
    /// Stores a schedule; `Conflict` when its tenant has one of its name.
    pub async fn create_schedule(&self, schedule: NewSchedule) -> Result<(), StoreError> {
        command!(self, ScheduleCreate(schedule))?
    }

    /// `NotFound` when there is no such schedule.
    pub async fn get_schedule(&self, id: &str) -> Result<Schedule, StoreError> {
        on_engine!(self, e => e.get_schedule(id).await)
    }

    /// The tenant's schedules (every tenant's with `None`), newest first.
    pub async fn list_schedules(&self, tenant: Option<&str>) -> Result<Vec<Schedule>, StoreError> {
        on_engine!(self, e => e.list_schedules(tenant).await)
    }

    /// Up to `limit` schedules whose tick has come, earliest first.
    pub async fn due_schedules(&self, limit: u32) -> Result<Vec<DueSchedule>, StoreError> {
        on_engine!(self, e => e.due_schedules(limit).await)
    }

    /// When the next schedule not paused ticks, if one does.
    pub async fn next_schedule_tick(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        on_engine!(self, e => e.next_schedule_tick().await)
    }

    /// Fires the schedule's tick `due`: moves it on to `next` (counting `missed` ticks) and
    /// stores `run` (made for its tick), once over every process.
    pub async fn fire_schedule(
        &self,
        id: &str,
        due: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
        missed: u64,
        run: Option<(DateTime<Utc>, NewRun)>,
    ) -> Result<Fired, StoreError> {
        let id = id.to_owned();
        command!(
            self,
            ScheduleFire {
                id,
                due: to_ms(due),
                next: next.map(to_ms),
                missed,
                run: run.map(|(tick, run)| (to_ms(tick), run)),
            }
        )
    }

    /// Pauses the schedule; `false` when it was paused already (or is gone).
    pub async fn pause_schedule(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        command!(
            self,
            ScheduleChange {
                id,
                op: ScheduleOp::Pause
            }
        )
    }

    /// Resumes the schedule from `next`; `false` when it was not paused.
    pub async fn resume_schedule(
        &self,
        id: &str,
        next: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        let id = id.to_owned();
        command!(
            self,
            ScheduleChange {
                id,
                op: ScheduleOp::Resume(next.map(to_ms))
            }
        )
    }

    /// Deletes the schedule (its runs stay); `false` when there was none.
    pub async fn delete_schedule(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        command!(
            self,
            ScheduleChange {
                id,
                op: ScheduleOp::Delete
            }
        )
    }
}
