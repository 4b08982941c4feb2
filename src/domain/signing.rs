//! SHA-256 digests and HMAC-SHA256 signatures as lowercase hex: the one implementation
//! behind signal signatures, webhook signatures, idempotency fingerprints, API key
//! hashes and run tokens.

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
