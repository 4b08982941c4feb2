//! Run statuses: one vocabulary shared by Rust, the JSON API and the SQL `CHECK` constraint.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where a run is in its lifecycle.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Waiting for the runs it depends on to succeed.
    Blocked,
    /// Waiting for a worker; may carry a future `run_at`.
    Queued,
    /// Claimed by a worker that holds its lease.
    Running,
    /// Failed an attempt; the next attempt is due at `next_attempt_at`.
    Retrying,
    /// Suspended until a signal it waits for arrives (`waiting_for`), holding no worker.
    Waiting,
    /// Finished with a result.
    Succeeded,
    /// Failed for good: a permanent error or its attempts exhausted.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
}

impl RunStatus {
    pub const ALL: [RunStatus; 8] = [
        Self::Blocked,
        Self::Queued,
        Self::Running,
        Self::Retrying,
        Self::Waiting,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Blocked => "blocked",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Waiting => "waiting",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// Whether the lifecycle allows moving from `self` to `next`.
    ///
    /// The store's conditional updates encode the same rules in their `WHERE` clauses; this
    /// function is their specification, checked by the unit tests below.
    pub fn can_become(self, next: RunStatus) -> bool {
        use RunStatus::*;
        match (self, next) {
            (Queued | Retrying, Running) => true,
            // time limits fail runs that have not started: past their deadline, or not
            // started by `expires_at`
            (Queued | Retrying, Failed) => true,
            (Running, Succeeded | Failed | Retrying | Queued | Waiting) => true,
            (Waiting, Queued | Failed) => true,
            (Failed, Queued | Blocked) => true,
            (Blocked, Queued | Failed) => true,
            (from, Cancelled) => !from.is_terminal(),
            _ => false,
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RunStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown status `{s}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::RunStatus::{self, *};

    #[test]
    fn terminal_statuses_never_change_except_failed_retried_by_hand() {
        for from in [Succeeded, Cancelled] {
            for to in RunStatus::ALL {
                assert!(!from.can_become(to), "{from} -> {to}");
            }
        }
        assert!(Failed.can_become(Queued));
        assert!(!Failed.can_become(Running));
        assert!(Blocked.can_become(Queued) && !Blocked.can_become(Running));
    }

    #[test]
    fn only_ready_runs_can_be_claimed() {
        let claimable: Vec<_> = RunStatus::ALL
            .into_iter()
            .filter(|s| s.can_become(Running))
            .collect();
        assert_eq!(claimable, vec![Queued, Retrying]);
    }

    #[test]
    fn every_non_terminal_status_can_be_cancelled() {
        for s in RunStatus::ALL {
            assert_eq!(s.can_become(Cancelled), !s.is_terminal(), "{s}");
        }
    }

    #[test]
    fn status_round_trips_through_its_name() {
        for s in RunStatus::ALL {
            assert_eq!(s.as_str().parse::<RunStatus>().unwrap(), s);
        }
        assert!("done".parse::<RunStatus>().is_err());
    }
}
