//! Turning how an attempt ended into the run's next state: done, retry later, or failed.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use serde_json::Value;

use crate::domain::{RunError, RunErrorKind};
use crate::store::{ClaimedRun, Outcome};

use super::AgentError;

/// How an attempt ended without a result.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Failure {
    Agent(AgentError),
    Timeout(Duration),
    /// The attempt was stopped at the run's deadline.
    DeadlineExceeded,
    Panicked(String),
}

impl Failure {
    fn retryable(&self) -> bool {
        match self {
            Self::Agent(e) => e.retryable,
            Self::Timeout(_) | Self::Panicked(_) => true,
            Self::DeadlineExceeded => false,
        }
    }

    fn into_error(self) -> RunError {
        match self {
            Self::Agent(e) => RunError {
                kind: RunErrorKind::AgentError,
                message: e.message,
            },
            Self::Timeout(limit) => RunError {
                kind: RunErrorKind::Timeout,
                message: format!("attempt timed out after {} ms", limit.as_millis()),
            },
            Self::DeadlineExceeded => {
                deadline_exceeded("the attempt was stopped at the run's deadline")
            }
            Self::Panicked(message) => RunError {
                kind: RunErrorKind::Panicked,
                message: format!("agent panicked: {message}"),
            },
        }
    }
}

/// What decides an attempt's outcome besides how it ended: which attempt it was, of how
/// many, the backoff and the run's deadline.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Terms {
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: crate::domain::Backoff,
    pub(crate) deadline: Option<DateTime<Utc>>,
}

impl From<&ClaimedRun> for Terms {
    fn from(run: &ClaimedRun) -> Self {
        Self {
            attempt: run.attempt,
            max_attempts: run.max_attempts,
            backoff: run.backoff(),
            deadline: run.deadline,
        }
    }
}

/// A retryable failure is retried while attempts remain, after a jittered backoff;
/// anything else ends the run.
pub(crate) fn decide(
    run: &Terms,
    ended: Result<Value, Failure>,
    now: DateTime<Utc>,
    rng: &mut impl Rng,
) -> Outcome {
    let failure = match ended {
        Ok(result) => return Outcome::Succeeded(result),
        Err(Failure::Agent(AgentError {
            wait: Some(wait), ..
        })) => {
            return Outcome::Wait {
                signals: wait.signals,
                until: now + wait.timeout,
                resume_on_timeout: wait.resume_on_timeout,
            };
        }
        Err(failure) => failure,
    };
    let retry = failure.retryable() && run.attempt < run.max_attempts;
    let mut error = failure.into_error();
    error.message = crate::domain::storable(error.message);
    if !retry {
        return Outcome::Failed(error);
    }
    let retry_at = now + run.backoff.delay(run.attempt, rng);
    if run.deadline.is_some_and(|deadline| retry_at >= deadline) {
        // no retry may start after the deadline
        return Outcome::Failed(deadline_exceeded(&format!(
            "the next attempt would start after the deadline; last error: {}",
            error.message
        )));
    }
    Outcome::Retry { error, retry_at }
}

fn deadline_exceeded(message: &str) -> RunError {
    RunError {
        kind: RunErrorKind::DeadlineExceeded,
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RunId;
    use rand::{SeedableRng, rngs::StdRng};
    use serde_json::json;

    fn claimed(attempt: u32, max_attempts: u32) -> ClaimedRun {
        ClaimedRun {
            id: RunId::new(),
            agent: "echo".into(),
            input: json!({}),
            checkpoint: None,
            deadline: None,
            dependencies: Default::default(),
            attempt,
            claim: attempt,
            max_attempts,
            timeout_ms: 1000,
            backoff_base_ms: 1000,
            backoff_cap_ms: 300_000,
            priority: 0,
            worker_id: "w".into(),
            queue_wait_ms: 0,
            trace_parent: None,
            tenant: "default".into(),
            metadata: Default::default(),
            created_by: None,
        }
    }

    fn terms(attempt: u32, max_attempts: u32) -> Terms {
        Terms::from(&claimed(attempt, max_attempts))
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    #[test]
    fn success_is_recorded_with_its_result() {
        let out = decide(&terms(1, 3), Ok(json!(1)), now(), &mut rand::rng());
        assert_eq!(out, Outcome::Succeeded(json!(1)));
    }

    #[test]
    fn retryable_failure_is_retried_within_the_backoff_ceiling() {
        let mut rng = StdRng::seed_from_u64(1);
        for attempt in 1..=2 {
            let run = claimed(attempt, 3);
            let failure = Failure::Agent(AgentError::retryable("flaky"));
            match decide(&Terms::from(&run), Err(failure), now(), &mut rng) {
                Outcome::Retry { error, retry_at } => {
                    assert_eq!(error.kind, RunErrorKind::AgentError);
                    assert!(retry_at >= now() + run.backoff().ceiling(attempt) / 2);
                    assert!(retry_at <= now() + run.backoff().ceiling(attempt));
                }
                other => panic!("expected a retry, got {other:?}"),
            }
        }
    }

    #[test]
    fn last_attempt_fails_for_good() {
        let failure = Failure::Agent(AgentError::retryable("flaky"));
        let out = decide(&terms(3, 3), Err(failure), now(), &mut rand::rng());
        assert!(matches!(out, Outcome::Failed(e) if e.message == "flaky"));
    }

    #[test]
    fn permanent_failure_is_not_retried() {
        let failure = Failure::Agent(AgentError::permanent("bad input"));
        let out = decide(&terms(1, 5), Err(failure), now(), &mut rand::rng());
        assert!(matches!(out, Outcome::Failed(e) if e.kind == RunErrorKind::AgentError));
    }

    #[test]
    fn no_retry_is_scheduled_past_the_deadline() {
        let run = ClaimedRun {
            deadline: Some(now() + chrono::Duration::milliseconds(1)),
            backoff_base_ms: 60_000,
            backoff_cap_ms: 60_000,
            ..claimed(1, 5)
        };
        // a draw of 0 ms would still retry in time: keep drawing until one lands past it
        let mut rng = StdRng::seed_from_u64(3);
        let outcome = (0..20)
            .map(|_| {
                let failure = Failure::Agent(AgentError::retryable("flaky"));
                decide(&Terms::from(&run), Err(failure), now(), &mut rng)
            })
            .find(|o| !matches!(o, Outcome::Retry { .. }))
            .expect("a 60 s backoff lands past a 1 ms deadline");
        assert!(matches!(outcome, Outcome::Failed(e) if e.kind == RunErrorKind::DeadlineExceeded));
    }

    #[test]
    fn timeout_and_panic_are_retryable() {
        for failure in [
            Failure::Timeout(Duration::from_millis(5)),
            Failure::Panicked("boom".into()),
        ] {
            let out = decide(&terms(1, 2), Err(failure), now(), &mut rand::rng());
            assert!(matches!(out, Outcome::Retry { .. }));
        }
    }
}
