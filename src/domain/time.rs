//! One precision for every timestamp agentq writes: RFC 3339 in UTC with milliseconds
//! (`2026-12-05T20:24:45.120Z`), the precision the store keeps. chrono's own form drops the
//! fraction when it is zero and prints nanoseconds when there are some, so a client would see
//! three shapes of one field.

use chrono::{DateTime, Utc};
use serde::Serializer;

const FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.3fZ";

/// `t` as agentq writes it.
pub fn rfc3339(t: &DateTime<Utc>) -> String {
    t.format(FORMAT).to_string()
}

/// `#[serde(serialize_with = "crate::domain::time::ms")]`
pub fn ms<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&t.format(FORMAT))
}

/// `#[serde(serialize_with = "crate::domain::time::ms_opt")]`
pub fn ms_opt<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => ms(t, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn always_three_digits() {
        let whole = DateTime::parse_from_rfc3339("2026-12-05T20:24:45Z")
            .unwrap()
            .to_utc();
        let fine = DateTime::parse_from_rfc3339("2026-12-05T20:24:45.123456789Z")
            .unwrap()
            .to_utc();
        assert_eq!(rfc3339(&whole), "2026-12-05T20:24:45.000Z");
        assert_eq!(rfc3339(&fine), "2026-12-05T20:24:45.123Z");
        #[derive(serde::Serialize)]
        struct T {
            #[serde(serialize_with = "ms")]
            a: DateTime<Utc>,
            #[serde(serialize_with = "ms_opt")]
            b: Option<DateTime<Utc>>,
            #[serde(serialize_with = "ms_opt")]
            c: Option<DateTime<Utc>>,
        }
        let v = serde_json::to_value(T {
            a: whole,
            b: Some(fine),
            c: None,
        })
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a": "2026-12-05T20:24:45.000Z", "b": "2026-12-05T20:24:45.123Z", "c": null})
        );
    }
}
