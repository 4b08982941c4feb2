//! A run's output stream: the parts an attempt appends while it runs (its answer's text as
//! it is generated, reasoning, tool calls and their results, named data), each stored as a
//! `stream` event of the run, so it has the event's seq, is fenced like every write of an
//! attempt, and is deleted with the run.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::text::{nul_in, storable};

/// The most bytes of stream one run may hold, over all its attempts, by default.
pub const DEFAULT_MAX_STREAM_BYTES: u64 = 1024 * 1024;

/// One part of a run's output stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StreamPart {
    /// Text of the answer, appended to the text the attempt streamed before it.
    Text { text: String },
    /// The model's reasoning, appended like text.
    Reasoning { text: String },
    /// The agent calls a tool.
    ToolCall {
        /// 1 to 128 characters, naming the call its result answers.
        tool_call_id: String,
        /// 1 to 128 characters.
        tool_name: String,
        #[schema(value_type = Object)]
        input: Value,
    },
    /// What a tool call returned.
    ToolResult {
        tool_call_id: String,
        #[schema(value_type = Object)]
        output: Value,
    },
    /// Named data (a UI message stream's `data-<name>` part); a later part of one name
    /// replaces the earlier in the attempt's message.
    Data {
        /// `[a-z0-9_-]`, 1 to 64 characters.
        name: String,
        #[schema(value_type = Object)]
        data: Value,
    },
}

impl StreamPart {
    /// The part, or why it cannot be stored. Free text has NUL characters replaced; JSON
    /// holding one is refused (PostgreSQL cannot store it).
    pub fn checked(self) -> Result<Self, String> {
        let id = |field: &str, value: &str| match (1..=128).contains(&value.len()) {
            true => Ok(()),
            false => Err(format!("`{field}` is 1 to 128 characters")),
        };
        let json = |field: &str, value: &Value| match nul_in(value) {
            None => Ok(()),
            Some(path) => Err(format!(
                "`{field}` holds a NUL character (U+0000) at `{path}`"
            )),
        };
        match self {
            Self::Text { text } => Ok(Self::Text {
                text: storable(text),
            }),
            Self::Reasoning { text } => Ok(Self::Reasoning {
                text: storable(text),
            }),
            Self::ToolCall {
                tool_call_id,
                tool_name,
                input,
            } => {
                id("tool_call_id", &tool_call_id)?;
                id("tool_name", &tool_name)?;
                json("input", &input)?;
                Ok(Self::ToolCall {
                    tool_call_id: storable(tool_call_id),
                    tool_name: storable(tool_name),
                    input,
                })
            }
            Self::ToolResult {
                tool_call_id,
                output,
            } => {
                id("tool_call_id", &tool_call_id)?;
                json("output", &output)?;
                Ok(Self::ToolResult {
                    tool_call_id: storable(tool_call_id),
                    output,
                })
            }
            Self::Data { name, data } => {
                let valid = (1..=64).contains(&name.len())
                    && name.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                    });
                if !valid {
                    return Err("`name` is 1 to 64 of `a-z`, `0-9`, `_` and `-`".into());
                }
                json("data", &data)?;
                Ok(Self::Data { name, data })
            }
        }
    }

    /// What the part counts against the run's stream limit: the text of text and
    /// reasoning, the JSON of any other part.
    pub fn size(&self) -> u64 {
        match self {
            Self::Text { text } | Self::Reasoning { text } => text.len() as u64,
            other => serde_json::to_vec(other).map_or(0, |json| json.len() as u64),
        }
    }

    fn is_empty_text(&self) -> bool {
        matches!(self, Self::Text { text } | Self::Reasoning { text } if text.is_empty())
    }
}

/// `parts` with each run of adjacent text parts (and of reasoning parts) joined into one,
/// and empty texts left out: what a writer stores of many small deltas.
pub fn coalesce(parts: impl IntoIterator<Item = StreamPart>) -> Vec<StreamPart> {
    let mut joined: Vec<StreamPart> = Vec::new();
    for part in parts {
        if part.is_empty_text() {
            continue;
        }
        match (joined.last_mut(), part) {
            (Some(StreamPart::Text { text }), StreamPart::Text { text: more })
            | (Some(StreamPart::Reasoning { text }), StreamPart::Reasoning { text: more }) => {
                text.push_str(&more)
            }
            (_, part) => joined.push(part),
        }
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(t: &str) -> StreamPart {
        StreamPart::Text { text: t.into() }
    }

    #[test]
    fn adjacent_texts_join_and_other_parts_keep_their_place() {
        let call = StreamPart::ToolCall {
            tool_call_id: "c1".into(),
            tool_name: "search".into(),
            input: json!({"q": "x"}),
        };
        let parts = vec![
            text("Hel"),
            text(""),
            text("lo"),
            StreamPart::Reasoning { text: "a".into() },
            StreamPart::Reasoning { text: "b".into() },
            call.clone(),
            text(" world"),
        ];
        assert_eq!(
            coalesce(parts),
            vec![
                text("Hello"),
                StreamPart::Reasoning { text: "ab".into() },
                call,
                text(" world")
            ]
        );
    }

    #[test]
    fn parts_are_checked() {
        let bad_name = StreamPart::Data {
            name: "Progress!".into(),
            data: json!(1),
        };
        assert!(bad_name.checked().unwrap_err().contains("`name`"));
        let nul = StreamPart::ToolResult {
            tool_call_id: "c".into(),
            output: json!({"a": "\u{0}"}),
        };
        assert!(nul.checked().unwrap_err().contains("at `a`"));
        assert_eq!(text("a\u{0}").checked().unwrap(), text("a\u{FFFD}"));
        let part: StreamPart =
            serde_json::from_value(json!({"type": "text", "text": "hi"})).unwrap();
        assert_eq!(part.size(), 2);
        assert!(
            serde_json::from_value::<StreamPart>(json!({"type": "text", "txt": "hi"})).is_err()
        );
    }
}
