//! Schedules: a run made again and again, on a cron expression or at a fixed interval.
//!
//! Each tick makes one run, exactly once however many processes tick: a process fires a
//! tick by moving the schedule's `next_tick_at` on from that tick in the same transaction
//! that stores the run (a compare-and-set on `next_tick_at`), and the run carries the
//! deterministic Idempotency-Key `#schedule:<id>:<tick ms>`. A tick reached more than
//! [`GRACE`] late (everything was down) is missed: [`CatchUp`] says what then.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{Backoff, Compensation, Concurrency, IdempotencyKey, NewRun, RunId, Tenant};

/// How late a tick may be fired and still count as on time.
pub const GRACE: Duration = Duration::from_secs(60);
/// The shortest interval.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The longest interval.
pub const MAX_INTERVAL: Duration = Duration::from_secs(366 * 24 * 3600);
/// The metadata keys every run of a schedule carries.
pub const SCHEDULE_ID_KEY: &str = "schedule_id";
pub const SCHEDULE_TICK_KEY: &str = "schedule_tick";
/// How many ticks of a cron expression are walked to find the latest one due; a schedule
/// further behind than that fires (or skips) the last one walked.
const MAX_WALK: usize = 100_000;

/// What a schedule does about ticks it missed while nothing ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Missed ticks make no run; the schedule goes on from the next tick.
    #[default]
    Skip,
    /// However many ticks were missed, one run is made for the latest of them.
    One,
}

impl CatchUp {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::One => "one",
        }
    }
}

impl FromStr for CatchUp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "skip" => Ok(Self::Skip),
            "one" => Ok(Self::One),
            other => Err(format!("`{other}` is not a catch-up policy (skip, one)")),
        }
    }
}

/// When a schedule ticks.
#[derive(Debug, Clone)]
pub enum Cadence {
    /// A cron expression (5 fields, or 6 with seconds first) in a time zone.
    Cron {
        expression: String,
        cron: Box<croner::Cron>,
        timezone: chrono_tz::Tz,
    },
    /// Every `interval` from the schedule's creation.
    Every(Duration),
}

impl Cadence {
    /// A cron expression: 5 fields (minute first) or 6 (second first), no year.
    pub fn cron(expression: &str, timezone: Option<&str>) -> Result<Self, (&'static str, String)> {
        let fields = expression.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err((
                "cron",
                format!(
                    "a cron expression has 5 fields (minute hour day month weekday), or 6 with seconds first; this has {fields}"
                ),
            ));
        }
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .year(croner::parser::Year::Disallowed)
            .build()
            .parse(expression)
            .map_err(|e| ("cron", format!("not a cron expression: {e}")))?;
        let timezone = match timezone {
            None => chrono_tz::UTC,
            Some(name) => name.parse::<chrono_tz::Tz>().map_err(|_| {
                (
                    "timezone",
                    format!("`{name}` is not an IANA time zone (like Europe/Paris or UTC)"),
                )
            })?,
        };
        let cadence = Self::Cron {
            expression: expression.trim().to_owned(),
            cron: Box::new(cron),
            timezone,
        };
        // an expression that never matches (February 30th) is no schedule
        if cadence.after(Utc::now()).is_none() {
            return Err(("cron", "this cron expression never matches".into()));
        }
        Ok(cadence)
    }

    /// An interval like `30s`, `5m` or `1h 30m`.
    pub fn every(interval: &str) -> Result<Self, (&'static str, String)> {
        let every = humantime::parse_duration(interval).map_err(|e| {
            (
                "interval",
                format!("{e} (an interval is written like 30s, 5m or 1h 30m)"),
            )
        })?;
        if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&every) {
            return Err(("interval", "an interval is from 1s to 366 days".into()));
        }
        Ok(Self::Every(every))
    }

    /// The first tick strictly after `t`; `None` when there is none.
    pub fn after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Cron { cron, timezone, .. } => cron
                .find_next_occurrence(&t.with_timezone(timezone), false)
                .ok()
                .map(|at| at.with_timezone(&Utc)),
            Self::Every(every) => Some(t + chrono::Duration::from_std(*every).ok()?),
        }
    }

    /// The first tick after `now` of a schedule whose next tick was `next`: an interval
    /// keeps its phase (ticks stay `next` plus whole intervals), a cron expression is read
    /// from `now`.
    pub fn resumed(
        &self,
        next: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        match (self, next) {
            (Self::Every(_), Some(next)) if next > now => Some(next),
            (Self::Every(every), Some(next)) => {
                let step = every.as_millis().max(1) as i64;
                let steps = (now - next).num_milliseconds() / step + 1;
                Some(next + chrono::Duration::milliseconds(steps * step))
            }
            _ => self.after(now),
        }
    }

    /// The ticks due by `now`, from `first` (itself due): the latest, and how many came
    /// before it.
    fn latest_due(&self, first: DateTime<Utc>, now: DateTime<Utc>) -> (DateTime<Utc>, u64) {
        match self {
            Self::Every(every) => {
                let step = every.as_millis().max(1) as i64;
                let behind = (now - first).num_milliseconds().max(0) / step;
                (
                    first + chrono::Duration::milliseconds(behind * step),
                    behind as u64,
                )
            }
            Self::Cron { .. } => {
                let (mut latest, mut before) = (first, 0u64);
                for _ in 0..MAX_WALK {
                    match self.after(latest) {
                        Some(next) if next <= now => {
                            latest = next;
                            before += 1;
                        }
                        _ => break,
                    }
                }
                (latest, before)
            }
        }
    }
}

/// What a process does with a schedule whose tick `due` has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firing {
    /// The tick a run is made for, if any.
    pub tick: Option<DateTime<Utc>>,
    /// Ticks that make no run.
    pub missed: u64,
    /// The schedule's next tick; `None` when it has none (a cron expression that stops
    /// matching).
    pub next: Option<DateTime<Utc>>,
}

/// Fires the schedule's tick `due` at `now` (`due` <= `now`): a run for the latest tick due
/// if it is on time (within [`GRACE`]), else as `catch_up` says.
pub fn fire(
    cadence: &Cadence,
    catch_up: CatchUp,
    due: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Firing {
    let (latest, before) = cadence.latest_due(due, now);
    let grace = chrono::Duration::from_std(GRACE).expect("a small duration");
    let on_time = now - latest <= grace;
    let tick = (on_time || catch_up == CatchUp::One).then_some(latest);
    Firing {
        missed: before + u64::from(tick.is_none()),
        tick,
        // the tick after the latest due is after `now`, unless the walk gave up early
        next: match cadence.after(latest) {
            Some(next) if next <= now => cadence.after(now),
            next => next,
        },
    }
}

/// The run a schedule makes each tick, validated when the schedule was created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunTemplate {
    pub agent: String,
    pub input: Value,
    pub priority: i32,
    pub max_attempts: u32,
    pub timeout_ms: u64,
    pub backoff_base_ms: u64,
    pub backoff_cap_ms: u64,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<Compensation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
}

impl RunTemplate {
    /// The template of a validated run (its times, dependencies and key are not kept).
    pub fn of(run: &NewRun) -> Self {
        Self {
            agent: run.agent.clone(),
            input: run.input.clone(),
            priority: run.priority,
            max_attempts: run.max_attempts,
            timeout_ms: run.timeout.as_millis() as u64,
            backoff_base_ms: run.backoff.base.as_millis() as u64,
            backoff_cap_ms: run.backoff.cap.as_millis() as u64,
            metadata: run.metadata.clone(),
            on_failure: run.on_failure.clone(),
            callback_url: run.callback_url.clone(),
            concurrency: run.concurrency.clone(),
        }
    }

    /// The run of `schedule`'s tick `tick`.
    pub fn run_for(
        &self,
        schedule: &str,
        tenant: Tenant,
        created_by: Option<String>,
        tick: DateTime<Utc>,
    ) -> NewRun {
        // `#` is in no tenant name: no key a client sends (`<tenant>:<key>`) can be this
        let key = format!("#schedule:{schedule}:{}", tick.timestamp_millis());
        let mut metadata = self.metadata.clone();
        metadata.insert(SCHEDULE_ID_KEY.into(), schedule.to_owned());
        metadata.insert(
            SCHEDULE_TICK_KEY.into(),
            tick.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        );
        NewRun {
            id: RunId::new(),
            agent: self.agent.clone(),
            input: self.input.clone(),
            priority: self.priority,
            max_attempts: self.max_attempts,
            timeout: Duration::from_millis(self.timeout_ms),
            backoff: Backoff {
                base: Duration::from_millis(self.backoff_base_ms),
                cap: Duration::from_millis(self.backoff_cap_ms),
            },
            run_at: None,
            deadline: None,
            expires_at: None,
            metadata,
            on_failure: self.on_failure.clone(),
            compensates: None,
            depends_on: Vec::new(),
            callback_url: self.callback_url.clone(),
            idempotency: Some(IdempotencyKey {
                fingerprint: super::sha256_hex(key.as_bytes()),
                key,
                expires_at: tick + chrono::Duration::days(1),
            }),
            tenant,
            trace_parent: None,
            created_by,
            concurrency: self.concurrency.clone(),
        }
    }
}

/// A schedule as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Schedule {
    pub id: String,
    /// Unique within the tenant, when given.
    pub name: Option<String>,
    pub tenant: String,
    pub agent: String,
    /// The cron expression, when it ticks on one.
    pub cron: Option<String>,
    /// The time zone of `cron` (IANA name).
    pub timezone: Option<String>,
    /// The interval, when it ticks on one (ms).
    pub interval_ms: Option<u64>,
    pub catch_up: CatchUp,
    /// The run each tick makes, as stored: its fields with every default applied (a
    /// concurrency key as `concurrency`: `{key, limit, policy}`). `null` in the answer to
    /// a pause or resume by a key without `runs:read`.
    #[schema(value_type = Option<Object>)]
    pub run: Value,
    /// When it ticks next (while not paused); `null` when it never will again.
    #[serde(serialize_with = "crate::domain::time::ms_opt")]
    pub next_tick_at: Option<DateTime<Utc>>,
    pub paused: bool,
    #[serde(serialize_with = "crate::domain::time::ms_opt")]
    pub paused_at: Option<DateTime<Utc>>,
    /// The last tick that made a run, and that run.
    #[serde(serialize_with = "crate::domain::time::ms_opt")]
    pub last_tick_at: Option<DateTime<Utc>>,
    pub last_run_id: Option<String>,
    /// Ticks that made no run (missed while nothing ran, with `catch_up` `skip`).
    pub missed_ticks: u64,
    #[serde(serialize_with = "crate::domain::time::ms")]
    pub created_at: DateTime<Utc>,
    /// Who created it (`key:<id>` or `open`); its runs name the same creator.
    pub created_by: Option<String>,
}

/// A schedule to store.
#[derive(Debug, Clone)]
pub struct NewSchedule {
    pub id: String,
    pub name: Option<String>,
    pub tenant: Tenant,
    pub cron: Option<String>,
    pub timezone: Option<String>,
    pub interval_ms: Option<u64>,
    pub catch_up: CatchUp,
    pub template: RunTemplate,
    pub first_tick: DateTime<Utc>,
    pub created_by: Option<String>,
}

/// A schedule whose tick has come, as a ticking process reads it.
#[derive(Debug, Clone)]
pub struct DueSchedule {
    pub id: String,
    pub tenant: String,
    pub cron: Option<String>,
    pub timezone: Option<String>,
    pub interval_ms: Option<u64>,
    pub catch_up: CatchUp,
    /// The run each tick makes; why not, when the stored one does not read.
    pub template: Result<RunTemplate, String>,
    pub next_tick_at: DateTime<Utc>,
    pub created_by: Option<String>,
}

impl DueSchedule {
    pub fn cadence(&self) -> Result<Cadence, String> {
        cadence_of(
            self.cron.as_deref(),
            self.timezone.as_deref(),
            self.interval_ms,
        )
    }
}

impl Schedule {
    pub fn cadence(&self) -> Result<Cadence, String> {
        cadence_of(
            self.cron.as_deref(),
            self.timezone.as_deref(),
            self.interval_ms,
        )
    }
}

/// A stored schedule's cadence.
fn cadence_of(
    cron: Option<&str>,
    timezone: Option<&str>,
    interval_ms: Option<u64>,
) -> Result<Cadence, String> {
    match (cron, interval_ms) {
        (Some(expression), _) => Cadence::cron(expression, timezone).map_err(|(_, e)| e),
        (None, Some(ms)) => Ok(Cadence::Every(Duration::from_millis(ms))),
        (None, None) => Err("a schedule with neither cron nor interval".into()),
    }
}

/// `t` as the store keeps times (ms).
pub fn at_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn cron_takes_five_or_six_fields_in_a_time_zone() {
        let daily = Cadence::cron("0 9 * * *", Some("Europe/Paris")).unwrap();
        // 09:00 in Paris in winter is 08:00 UTC
        assert_eq!(
            daily.after(t("2026-12-05T10:00:00Z")),
            Some(t("2026-12-06T08:00:00Z"))
        );
        let every_ten_seconds = Cadence::cron("*/10 * * * * *", None).unwrap();
        assert_eq!(
            every_ten_seconds.after(t("2026-12-05T10:00:03Z")),
            Some(t("2026-12-05T10:00:10Z"))
        );
        assert_eq!(Cadence::cron("* * * *", None).unwrap_err().0, "cron");
        assert_eq!(Cadence::cron("0 0 30 2 *", None).unwrap_err().0, "cron");
        assert_eq!(Cadence::cron("61 * * * *", None).unwrap_err().0, "cron");
        assert_eq!(
            Cadence::cron("0 9 * * *", Some("Mars/Base")).unwrap_err().0,
            "timezone"
        );
        assert_eq!(Cadence::every("0s").unwrap_err().0, "interval");
        assert_eq!(Cadence::every("soon").unwrap_err().0, "interval");
    }

    #[test]
    fn a_resumed_interval_keeps_its_phase() {
        let hourly = Cadence::every("1h").unwrap();
        let next = t("2026-12-05T10:15:00Z");
        assert_eq!(
            hourly.resumed(Some(next), t("2026-12-05T10:00:00Z")),
            Some(next)
        );
        assert_eq!(
            hourly.resumed(Some(next), t("2026-12-05T13:20:00Z")),
            Some(t("2026-12-05T14:15:00Z"))
        );
        assert_eq!(
            hourly.resumed(Some(next), t("2026-12-05T13:15:00Z")),
            Some(t("2026-12-05T14:15:00Z"))
        );
    }

    #[test]
    fn a_tick_on_time_makes_a_run_and_missed_ones_follow_the_policy() {
        let every_minute = Cadence::every("1m").unwrap();
        // on time
        let f = fire(
            &every_minute,
            CatchUp::Skip,
            t("2026-12-05T10:00:00Z"),
            t("2026-12-05T10:00:01Z"),
        );
        assert_eq!(f.tick, Some(t("2026-12-05T10:00:00Z")));
        assert_eq!((f.missed, f.next), (0, Some(t("2026-12-05T10:01:00Z"))));
        // down for 10 minutes: the latest due tick (10:10) is on time, the ten before missed
        let f = fire(
            &every_minute,
            CatchUp::Skip,
            t("2026-12-05T10:00:00Z"),
            t("2026-12-05T10:10:30Z"),
        );
        assert_eq!(f.tick, Some(t("2026-12-05T10:10:00Z")));
        assert_eq!((f.missed, f.next), (10, Some(t("2026-12-05T10:11:00Z"))));
        // a daily tick two hours late: skipped, or made once
        let daily = Cadence::cron("0 9 * * *", None).unwrap();
        let due = t("2026-12-03T09:00:00Z");
        let now = t("2026-12-05T11:00:00Z");
        let skip = fire(&daily, CatchUp::Skip, due, now);
        assert_eq!((skip.tick, skip.missed), (None, 3));
        assert_eq!(skip.next, Some(t("2026-12-06T09:00:00Z")));
        let one = fire(&daily, CatchUp::One, due, now);
        assert_eq!((one.tick, one.missed), (Some(t("2026-12-05T09:00:00Z")), 2));
        assert_eq!(one.next, Some(t("2026-12-06T09:00:00Z")));
    }
}
