//! Text the databases can store: PostgreSQL keeps no NUL character (U+0000) in text or
//! jsonb, so agentq refuses it in JSON it is given and replaces it in free text, in every
//! dialect alike.

use serde_json::Value;

/// Whether serialised JSON may hold a NUL character: JSON writes one only as the `\u0000`
/// escape, so text without it need not be walked with [`nul_in`].
pub fn may_hold_nul(json: &[u8]) -> bool {
    json.windows(6).any(|w| w == b"\\u0000")
}

/// The path (`a/0/b`, empty for the value itself) of the first string or object key in
/// `value` holding a NUL character; a key is named with the NUL written as `\u0000`.
pub fn nul_in(value: &Value) -> Option<String> {
    let join = |head: &str, rest: Option<String>| {
        rest.map(|rest| match rest.is_empty() {
            true => head.to_owned(),
            false => format!("{head}/{rest}"),
        })
    };
    match value {
        Value::String(s) => s.contains('\0').then(String::new),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| join(&i.to_string(), nul_in(item))),
        Value::Object(map) => map.iter().find_map(|(key, item)| match key.contains('\0') {
            true => Some(key.replace('\0', "\\u0000")),
            false => join(key, nul_in(item)),
        }),
        _ => None,
    }
}

/// Free text (a progress or log message, an error) with each NUL character replaced by
/// U+FFFD, the replacement character.
pub fn storable(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_the_first_nul_by_its_path() {
        assert_eq!(nul_in(&json!({"a": [1, {"b": "x"}]})), None);
        assert_eq!(
            nul_in(&json!({"a": [1, {"b": "x\u{0}"}]})).as_deref(),
            Some("a/1/b")
        );
        assert_eq!(nul_in(&json!({"k\u{0}": 1})).as_deref(), Some("k\\u0000"));
        assert_eq!(nul_in(&json!("\u{0}")).as_deref(), Some(""));
        assert_eq!(storable("a\u{0}b".into()), "a\u{FFFD}b");
        let text = serde_json::to_vec(&json!({"a": "x\u{0}"})).unwrap();
        assert!(may_hold_nul(&text));
        assert!(!may_hold_nul(br#"{"a": "x"}"#));
    }
}
