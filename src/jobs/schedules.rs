//! The schedules' ticker: every process fires the schedules whose tick has come. Firing is
//! a compare-and-set on the tick in the store, so however many processes tick, each tick
//! makes one run.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::domain::{DueSchedule, Tenant, fire};
use crate::store::{Fired, Store};

/// How many due schedules one look fires.
const PER_LOOK: u32 = 100;
/// The longest wait between looks: schedules other processes create or resume are seen
/// within it.
const LOOK_EVERY: Duration = Duration::from_secs(1);

pub async fn tick_schedules(store: Store, stop: CancellationToken) {
    loop {
        let mut full = false;
        match store.due_schedules(PER_LOOK).await {
            Ok(due) => {
                full = due.len() as u32 == PER_LOOK;
                for schedule in due {
                    fire_one(&store, schedule).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the schedules due failed"),
        }
        let wait = if full {
            Duration::ZERO
        } else {
            match store.next_schedule_tick().await {
                Ok(Some(at)) => (at - store.clock().now())
                    .to_std()
                    .unwrap_or(Duration::ZERO)
                    .clamp(Duration::from_millis(10), LOOK_EVERY),
                _ => LOOK_EVERY,
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return,
        }
    }
}

async fn fire_one(store: &Store, schedule: DueSchedule) {
    let parts = schedule.cadence().and_then(|cadence| {
        let tenant = Tenant::parse(&schedule.tenant)?;
        Ok((cadence, tenant, schedule.template.clone()?))
    });
    let (cadence, tenant, template) = match parts {
        Ok(parts) => parts,
        Err(e) => {
            // a schedule that no longer reads (a time zone gone from the tz database, say)
            // is stopped, not fired again and again: it shows no next tick
            tracing::warn!(schedule = %schedule.id, error = %e, "a stored schedule does not read: it is stopped");
            let stopped = store
                .fire_schedule(&schedule.id, schedule.next_tick_at, None, 1, None)
                .await;
            if let Err(e) = stopped {
                tracing::warn!(schedule = %schedule.id, error = %e, "stopping a schedule failed");
            }
            return;
        }
    };
    let firing = fire(
        &cadence,
        schedule.catch_up,
        schedule.next_tick_at,
        store.clock().now(),
    );
    let run = firing.tick.map(|tick| {
        let run = template.run_for(&schedule.id, tenant, schedule.created_by.clone(), tick);
        (tick, run)
    });
    match store
        .fire_schedule(
            &schedule.id,
            schedule.next_tick_at,
            firing.next,
            firing.missed,
            run,
        )
        .await
    {
        Ok(Fired::Moved(Some(Err(why)))) => {
            tracing::warn!(schedule = %schedule.id, "a schedule's tick made no run: {why}")
        }
        Ok(Fired::Moved(_)) if firing.missed > 0 => tracing::info!(
            schedule = %schedule.id,
            missed = firing.missed,
            "a schedule missed ticks while nothing ran"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(schedule = %schedule.id, error = %e, "firing a schedule failed"),
    }
}
