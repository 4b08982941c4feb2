//! A refused destination: what was refused and why, worded for the run's error.

use std::fmt;

use super::Blocked;

/// A destination the policy refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Refused {
    /// The host as the URL names it.
    pub target: String,
    pub reason: Reason,
    /// Refused as the target of a redirect.
    pub redirect: bool,
}

/// Why a destination was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `--http-allow` is set and no pattern matches the URL's host and port.
    NotAllowed,
    /// A cloud metadata host name.
    MetadataHost,
    /// The URL names an address in a blocked range.
    Address(Blocked),
    /// The host name resolves only to blocked addresses (the reason of the first).
    ResolvesTo(Blocked),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NotAllowed => f.write_str("not matched by --http-allow"),
            Reason::MetadataHost => {
                f.write_str("cloud metadata host; allow it by name with --http-allow")
            }
            Reason::Address(blocked) => {
                write!(f, "{blocked} address; allow it with --http-allow")
            }
            Reason::ResolvesTo(blocked) => {
                let article = if *blocked == Blocked::Unspecified {
                    "an"
                } else {
                    "a"
                };
                write!(
                    f,
                    "it resolves to {article} {blocked} address; allow that address with --http-allow"
                )
            }
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let via = if self.redirect { "a redirect to " } else { "" };
        write!(f, "refused {via}{}: {}", self.target, self.reason)
    }
}

impl Refused {
    pub(crate) fn new(target: impl Into<String>, reason: Reason) -> Self {
        Self {
            target: target.into(),
            reason,
            redirect: false,
        }
    }

    /// The refusal inside `error`'s chain of sources (a `reqwest::Error` from a request
    /// whose connection or redirect was refused), if any.
    pub fn find_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
        let mut next = Some(error);
        while let Some(e) = next {
            if let Some(refused) = e.downcast_ref::<Refused>() {
                return Some(refused);
            }
            next = e.source();
        }
        None
    }
}
