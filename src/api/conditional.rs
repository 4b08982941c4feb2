//! Conditional GETs: a body's ETag and the `If-None-Match` check that answers 304, for the
//! run reads and the dashboard's files.

use std::hash::{Hash, Hasher};

use axum::http::{HeaderMap, header};

/// A strong ETag of `body`.
pub(super) fn etag_of(body: &[u8]) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut hasher);
    format!("\"{:016x}{:08x}\"", hasher.finish(), body.len())
}

pub(super) fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*")
}
