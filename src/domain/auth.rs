//! Who may do what: tenants, API key scopes, the key format, and run tokens.
//!
//! An API key is `aq_<id>_<secret>`: the id (12 hex digits) is public and finds the key's
//! row; only the SHA-256 of the secret (64 hex digits, 256 random bits) is stored, so a
//! leaked table grants nothing. A run token is `rt.<run id>.<tenant>.<expiry>.<sig>`:
//! an HMAC-SHA256 signature over the rest, under the server's token secret, letting a
//! browser read one run, follow its events and send the signals it waits for.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Utc};
use rand::RngCore;

use super::{RunId, hmac_hex, hmac_matches, same_digest, sha256_hex};

/// The tenant runs belong to when no keys are used.
pub const DEFAULT_TENANT: &str = "default";

/// A tenant name: 1 to 63 of `a-z 0-9 _ -`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tenant(String);

impl Tenant {
    pub fn parse(name: &str) -> Result<Self, String> {
        let ok = !name.is_empty()
            && name.len() <= 63
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(format!(
                "tenant `{name}` must be 1 to 63 of a-z, 0-9, _ and -, starting with a letter or digit"
            ))
        }
    }

    pub fn default_tenant() -> Self {
        Self(DEFAULT_TENANT.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a key lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Read the tenant's runs, their events and the agents.
    RunsRead,
    /// Create, cancel, retry and signal the tenant's runs.
    RunsWrite,
    /// The worker registry, bulk retry and metrics; implies the other scopes.
    Admin,
    /// An external worker: declare agents, claim runs and report on their attempts, of
    /// every tenant; nothing else.
    Worker,
}

impl Scope {
    pub const ALL: [Scope; 4] = [
        Scope::RunsRead,
        Scope::RunsWrite,
        Scope::Admin,
        Scope::Worker,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::RunsRead => "runs:read",
            Scope::RunsWrite => "runs:write",
            Scope::Admin => "admin",
            Scope::Worker => "worker",
        }
    }
}

/// A set of scopes, written `runs:read,runs:write`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scopes(BTreeSet<Scope>);

impl Scopes {
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut set = BTreeSet::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let scope = Scope::ALL
                .into_iter()
                .find(|s| s.as_str() == name)
                .ok_or_else(|| {
                    format!("unknown scope `{name}` (use runs:read, runs:write, admin or worker)")
                })?;
            set.insert(scope);
        }
        if set.is_empty() {
            return Err(
                "at least one scope is needed (runs:read, runs:write, admin, worker)".into(),
            );
        }
        Ok(Self(set))
    }

    /// Whether these scopes allow `scope` (`admin` allows everything).
    pub fn allow(&self, scope: Scope) -> bool {
        self.0.contains(&scope) || self.0.contains(&Scope::Admin)
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|s| s.as_str()).collect();
        f.write_str(&names.join(","))
    }
}

/// A newly made API key: shown once; only `id` and `secret_hash` are kept.
pub struct NewKey {
    pub id: String,
    pub secret_hash: String,
    /// The whole key, `aq_<id>_<secret>`.
    pub token: String,
}

impl NewKey {
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let mut id = [0u8; 6];
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut id);
        rng.fill_bytes(&mut secret);
        let (id, secret) = (hex::encode(id), hex::encode(secret));
        Self {
            secret_hash: sha256_hex(secret.as_bytes()),
            token: format!("aq_{id}_{secret}"),
            id,
        }
    }
}

/// The parts of a presented API key, if it has the key format.
pub fn split_key(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("aq_")?;
    let (id, secret) = rest.split_once('_')?;
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(id, 12) && hex(secret, 64)).then_some((id, secret))
}

/// Whether `secret` is the one whose hash was stored (constant time).
pub fn secret_matches(secret: &str, stored_hash: &str) -> bool {
    same_digest(&sha256_hex(secret.as_bytes()), stored_hash)
}

/// What a run token grants: one run of one tenant, until it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunToken {
    pub run: RunId,
    pub tenant: Tenant,
    pub expires_at: DateTime<Utc>,
}

impl RunToken {
    fn body(&self) -> String {
        format!(
            "rt.{}.{}.{}",
            self.run,
            self.tenant,
            self.expires_at.timestamp()
        )
    }

    /// The token string, signed with `secret`.
    pub fn sign(&self, secret: &[u8]) -> String {
        let body = self.body();
        let sig = hmac_hex(secret, &[body.as_bytes()]);
        format!("{body}.{sig}")
    }

    /// Checks a presented token's signature and expiry.
    pub fn verify(token: &str, secret: &[u8], now: DateTime<Utc>) -> Result<Self, &'static str> {
        let malformed = "not a run token";
        let (body, sig) = token.rsplit_once('.').ok_or(malformed)?;
        if !hmac_matches(secret, &[body.as_bytes()], sig) {
            return Err("the run token's signature does not match");
        }
        let mut parts = body.split('.');
        let (Some("rt"), Some(run), Some(tenant), Some(exp), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(malformed);
        };
        let expires_at = exp
            .parse::<i64>()
            .ok()
            .and_then(|s| DateTime::from_timestamp(s, 0))
            .ok_or(malformed)?;
        if expires_at <= now {
            return Err("the run token has expired");
        }
        Ok(Self {
            run: run.parse().map_err(|_| malformed)?,
            tenant: Tenant::parse(tenant).map_err(|_| malformed)?,
            expires_at,
        })
    }
}

/// Whether a bearer credential looks like a run token (rather than an API key).
pub fn is_run_token(token: &str) -> bool {
    token.starts_with("rt.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names_are_checked() {
        assert!(Tenant::parse("acme").is_ok());
        assert!(Tenant::parse("a-1_b").is_ok());
        for bad in ["", "Acme", "-a", "a.b", "a b", &"x".repeat(64)] {
            assert!(Tenant::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scopes_parse_print_and_admin_implies_the_rest() {
        let s = Scopes::parse("runs:write, runs:read").unwrap();
        assert_eq!(s.to_string(), "runs:read,runs:write");
        assert!(s.allow(Scope::RunsRead) && !s.allow(Scope::Admin));
        let admin = Scopes::parse("admin").unwrap();
        assert!(admin.allow(Scope::RunsWrite) && admin.allow(Scope::RunsRead));
        assert!(Scopes::parse("runs:delete").is_err());
        assert!(Scopes::parse(" , ").is_err());
    }

    #[test]
    fn a_generated_key_splits_and_matches_only_its_own_hash() {
        let key = NewKey::generate();
        let (id, secret) = split_key(&key.token).unwrap();
        assert_eq!(id, key.id);
        assert!(secret_matches(secret, &key.secret_hash));
        assert!(!secret_matches(&"0".repeat(64), &key.secret_hash));
        assert!(split_key("aq_123_456").is_none());
        assert!(split_key("Bearer x").is_none());
    }

    #[test]
    fn a_run_token_verifies_until_it_expires_and_not_under_another_secret() {
        let now = Utc::now();
        let token = RunToken {
            run: RunId::new(),
            tenant: Tenant::parse("acme").unwrap(),
            expires_at: now + chrono::Duration::minutes(5),
        };
        let signed = token.sign(b"secret");
        assert!(is_run_token(&signed));
        let back = RunToken::verify(&signed, b"secret", now).unwrap();
        assert_eq!(back.run, token.run);
        assert_eq!(back.tenant, token.tenant);
        assert!(RunToken::verify(&signed, b"other", now).is_err());
        let later = now + chrono::Duration::minutes(6);
        assert_eq!(
            RunToken::verify(&signed, b"secret", later),
            Err("the run token has expired")
        );
        let forged = signed.replace("acme", "evil");
        assert!(RunToken::verify(&forged, b"secret", now).is_err());
    }
}
