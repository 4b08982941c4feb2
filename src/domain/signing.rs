//! SHA-256 digests and HMAC-SHA256 signatures as lowercase hex: the one implementation
//! behind signal signatures, webhook signatures, idempotency fingerprints, API key
//! hashes and run tokens.
//!
//! Signed requests (signals in, completion webhooks out) follow Stripe's scheme: a header
//! `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<run id>.<body>">`. The run id and the
//! time are signed with the body, so a signed body is good for one run, within a
//! tolerance window, and (for signals) once.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    for part in parts {
        mac.update(part);
    }
    mac
}

/// Hex HMAC-SHA256 of the concatenated `parts` under `key`.
pub fn hmac_hex(key: &[u8], parts: &[&[u8]]) -> String {
    hex::encode(mac(key, parts).finalize().into_bytes())
}

/// Whether `given` (hex) is the HMAC-SHA256 of `parts` under `key`, compared in constant
/// time. Malformed hex is simply a mismatch.
pub fn hmac_matches(key: &[u8], parts: &[&[u8]], given: &str) -> bool {
    match hex::decode(given) {
        Ok(bytes) => mac(key, parts).verify_slice(&bytes).is_ok(),
        Err(_) => false,
    }
}

/// The signature header of a request about run `run_id` with `body`, signed at `t`
/// (unix seconds).
pub fn sign_request(secret: &[u8], t: i64, run_id: &str, body: &[u8]) -> String {
    let hex = hmac_hex(
        secret,
        &[
            t.to_string().as_bytes(),
            b".",
            run_id.as_bytes(),
            b".",
            body,
        ],
    );
    format!("t={t},v1={hex}")
}

/// Why a signed request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadSignature {
    /// Not `t=<unix seconds>,v1=<hex>` (an old `sha256=` header among them).
    Malformed,
    /// Signed longer ago (or further ahead) than the tolerance allows.
    Stale { age_secs: i64 },
    /// No `v1` matches the run id, time and body under the secret.
    Mismatch,
}

impl std::fmt::Display for BadSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed => f.write_str(
                "the signature must be t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<run id>.<body>\">",
            ),
            Self::Stale { age_secs } => write!(
                f,
                "the signature's time is {age_secs} s away from now, outside the tolerance: sign each request when it is sent"
            ),
            Self::Mismatch => {
                f.write_str("the signature does not match this run, time and body")
            }
        }
    }
}

/// Checks a signed request's header against `secret`, the run it is about and its body,
/// at `now` (unix seconds), refusing a time more than `tolerance_secs` away. Several `v1`
/// values are allowed (a sender rotating secrets); one must match. Answers the matching
/// `v1`, which names this signed request.
pub fn verify_request(
    secret: &[u8],
    header: &str,
    run_id: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<String, BadSignature> {
    let mut t = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => {
                t = Some(value.parse::<i64>().map_err(|_| BadSignature::Malformed)?)
            }
            Some(("v1", value)) => candidates.push(value),
            Some(_) => {} // other schemes, for later versions
            None => return Err(BadSignature::Malformed),
        }
    }
    let (Some(t), false) = (t, candidates.is_empty()) else {
        return Err(BadSignature::Malformed);
    };
    let age_secs = now.saturating_sub(t);
    if age_secs.saturating_abs() > tolerance_secs {
        return Err(BadSignature::Stale { age_secs });
    }
    let t_text = t.to_string();
    let signed: [&[u8]; 5] = [t_text.as_bytes(), b".", run_id.as_bytes(), b".", body];
    // the form kept to refuse a replay is lowercase: hex decodes either case, and the same
    // signature in another case must not count as another request
    candidates
        .into_iter()
        .find(|given| hmac_matches(secret, &signed, given))
        .map(str::to_ascii_lowercase)
        .ok_or(BadSignature::Mismatch)
}

/// Constant-time equality of two strings of the same public length (hex digests).
pub fn same_digest(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_its_own_signature_and_nothing_else() {
        let sig = hmac_hex(b"key", &[b"a.", b"body"]);
        assert_eq!(sig.len(), 64);
        assert!(hmac_matches(b"key", &[b"a.body"], &sig));
        assert!(!hmac_matches(b"other", &[b"a.body"], &sig));
        assert!(!hmac_matches(b"key", &[b"a.body!"], &sig));
        assert!(!hmac_matches(b"key", &[b"a.body"], "zz"));
    }

    #[test]
    fn a_signed_request_is_good_for_its_run_its_body_and_its_time_only() {
        let header = sign_request(b"s", 1000, "run-1", b"{}");
        let v1 = header.split_once(",v1=").unwrap().1.to_owned();
        assert_eq!(
            verify_request(b"s", &header, "run-1", b"{}", 1000, 300),
            Ok(v1.clone())
        );
        assert_eq!(
            verify_request(b"s", &header, "run-1", b"{}", 1299, 300),
            Ok(v1.clone())
        );
        assert_eq!(
            verify_request(b"s", &header, "run-1", b"{}", 1301, 300),
            Err(BadSignature::Stale { age_secs: 301 })
        );
        assert_eq!(
            verify_request(b"s", &header, "run-1", b"{}", 699, 300),
            Err(BadSignature::Stale { age_secs: -301 })
        );
        for (secret, run, body) in [
            (&b"x"[..], "run-1", &b"{}"[..]),
            (b"s", "run-2", b"{}"),
            (b"s", "run-1", b"{ }"),
        ] {
            assert_eq!(
                verify_request(secret, &header, run, body, 1000, 300),
                Err(BadSignature::Mismatch)
            );
        }
        // the same signature in capitals is the same request (one replay key)
        let upper = header.replace(&v1, &v1.to_uppercase());
        assert_eq!(
            verify_request(b"s", &upper, "run-1", b"{}", 1000, 300),
            Ok(v1.clone())
        );
        // a rotating sender may send two; either may match
        let other = sign_request(b"old", 1000, "run-1", b"{}");
        let both = format!("{header},{}", other.split_once(',').unwrap().1);
        assert!(verify_request(b"old", &both, "run-1", b"{}", 1000, 300).is_ok());
        for malformed in [
            "sha256=abcd",
            "v1=abcd",
            "t=1000",
            "t=x,v1=ab",
            "",
            "t=1000;v1=ab",
        ] {
            assert_eq!(
                verify_request(b"s", malformed, "run-1", b"{}", 1000, 300),
                Err(BadSignature::Malformed),
                "{malformed}"
            );
        }
    }

    #[test]
    fn a_signature_is_the_one_the_readme_verifier_computes() {
        // computed with README's Python verifier's formula, apart from this code
        assert_eq!(
            sign_request(
                b"whsec",
                1_700_000_000,
                "0193b0c8-aaaa-7bbb-8ccc-000000000001",
                br#"{"id":1}"#
            ),
            "t=1700000000,v1=4f67507c7cf66c4a29deab70d16675f3874e8d76b8a67accd88e0b6d074162ec"
        );
    }

    #[test]
    fn sha256_is_the_known_digest() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(same_digest("ab", "ab"));
        assert!(!same_digest("ab", "ac"));
        assert!(!same_digest("ab", "abc"));
    }
}
