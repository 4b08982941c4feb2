//! `ScheduleCreate`: stores a schedule with its first tick.

use super::super::sql;
use super::{Apply, Batch, Command};
use crate::domain::NewSchedule;
use crate::store::{StoreError, to_ms};

/// Replies `Conflict` when the tenant has a schedule of that name.
pub(in crate::store) struct ScheduleCreate(pub(in crate::store) NewSchedule);

impl Command for ScheduleCreate {
    type Reply = Result<(), StoreError>;
}

impl Apply for ScheduleCreate {
    async fn apply(
        b: &mut Batch<'_>,
        commands: &[&Self],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut replies = Vec::with_capacity(commands.len());
        for ScheduleCreate(s) in commands {
            let template = serde_json::to_string(&s.template).expect("a template serialises");
            let stored: Option<String> = sqlx::query_scalar(sql::INSERT_SCHEDULE)
                .bind(&s.id)
                .bind(s.tenant.as_str())
                .bind(s.name.as_deref())
                .bind(&s.template.agent)
                .bind(s.cron.as_deref())
                .bind(s.timezone.as_deref())
                .bind(s.interval_ms.map(|ms| ms as i64))
                .bind(s.catch_up.as_str())
                .bind(template)
                .bind(to_ms(s.first_tick))
                .bind(b.now)
                .bind(s.created_by.as_deref())
                .fetch_optional(&mut *b.conn)
                .await?;
            replies.push(match stored {
                Some(_) => Ok(()),
                None => Err(StoreError::Conflict(
                    "schedule_name_taken",
                    format!(
                        "the tenant has a schedule named `{}` already",
                        s.name.as_deref().unwrap_or_default()
                    ),
                )),
            });
        }
        Ok(replies)
    }
}
