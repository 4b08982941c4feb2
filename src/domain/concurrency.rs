//! Concurrency keys: at most `limit` runs of one key (`user:42`, `thread:9`) of one agent
//! and tenant hold the key at once; what a new run does when its key is full is its
//! [`KeyPolicy`].
//!
//! A run holds its key from when it is let in until it finishes, so a key's runs never
//! overlap beyond the limit, even across retries and waits for signals, and they are let
//! in oldest first.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The longest concurrency key, in characters.
pub const MAX_KEY_CHARS: usize = 255;
/// The highest limit of one key.
pub const MAX_KEY_LIMIT: u32 = 1000;

/// What a new run does when its key already has `limit` runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyPolicy {
    /// Waits its turn (`blocked`), and is let in after the runs before it.
    #[default]
    Queue,
    /// Is refused: `409 concurrency_key_busy`, nothing stored.
    Reject,
    /// Cancels the key's oldest unfinished runs (running ones included) until it fits,
    /// then starts.
    CancelRunning,
    /// Cancels the key's runs that have not started yet, then waits its turn: only the
    /// newest waiting run is kept (debounce).
    DropQueued,
}

impl KeyPolicy {
    pub const ALL: [KeyPolicy; 4] = [
        Self::Queue,
        Self::Reject,
        Self::CancelRunning,
        Self::DropQueued,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queue => "queue",
            Self::Reject => "reject",
            Self::CancelRunning => "cancel_running",
            Self::DropQueued => "drop_queued",
        }
    }
}

impl std::str::FromStr for KeyPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!("`{s}` is not a key policy (queue, reject, cancel_running, drop_queued)")
            })
    }
}

/// A new run's concurrency key, with the limit and policy it was given or defaulted to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Concurrency {
    pub key: String,
    pub limit: u32,
    pub policy: KeyPolicy,
}

/// An agent's key settings where a run sets none (`--key-concurrency chat=1:cancel_running`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeySettings {
    pub limit: Option<u32>,
    pub policy: Option<KeyPolicy>,
}

impl std::str::FromStr for KeySettings {
    type Err = String;

    /// `LIMIT`, `POLICY` or `LIMIT:POLICY`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut settings = KeySettings::default();
        for part in s.split(':') {
            let part = part.trim();
            if let Ok(n) = part.parse::<u32>() {
                if !(1..=MAX_KEY_LIMIT).contains(&n) || settings.limit.is_some() {
                    return Err(format!(
                        "a key limit is one number from 1 to {MAX_KEY_LIMIT}"
                    ));
                }
                settings.limit = Some(n);
            } else if settings.policy.is_none() {
                settings.policy = Some(part.parse()?);
            } else {
                return Err(format!("`{s}` is not LIMIT, POLICY or LIMIT:POLICY"));
            }
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_limit_policy_or_both() {
        assert_eq!(
            "2:cancel_running".parse::<KeySettings>(),
            Ok(KeySettings {
                limit: Some(2),
                policy: Some(KeyPolicy::CancelRunning)
            })
        );
        assert_eq!(
            "reject".parse::<KeySettings>().unwrap().policy,
            Some(KeyPolicy::Reject)
        );
        assert_eq!("3".parse::<KeySettings>().unwrap().limit, Some(3));
        assert!("0".parse::<KeySettings>().is_err());
        assert!("1:2".parse::<KeySettings>().is_err());
        assert!("later".parse::<KeySettings>().is_err());
    }
}
