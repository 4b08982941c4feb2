//! `echo`: a diagnostic agent that returns its input's `value`, optionally slowly, in
//! steps with progress, streaming a `text` word by word, or failing on purpose.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::jobs::{Agent, AgentError, RunContext};

pub struct Echo;

#[derive(Deserialize)]
struct EchoInput {
    #[serde(default)]
    value: Value,
    #[serde(default)]
    text: Option<String>,
    #[serde(default = "once")]
    repeat: u32,
    #[serde(default)]
    delay_ms: u64,
    #[serde(default)]
    steps: u32,
    #[serde(default)]
    fail_attempts: u32,
    #[serde(default)]
    fail_permanently: bool,
    #[serde(default)]
    wait_for: Vec<String>,
    #[serde(default = "a_day")]
    wait_timeout_ms: u64,
}

fn a_day() -> u64 {
    24 * 3600 * 1000
}

#[async_trait]
impl Agent for Echo {
    fn name(&self) -> &str {
        "echo"
    }

    fn description(&self) -> &str {
        "Returns {\"value\": input.value}; can wait, report progress in steps, stream a text word by word, or fail on purpose."
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "value": { "description": "Returned as the result's `value` (null when not given)." },
                "text": { "type": "string", "maxLength": 1_000_000,
                          "description": "Streamed word by word over `delay_ms`, and returned as the result's `text`; the planned failures come after it." },
                "repeat": { "type": "integer", "minimum": 1, "maximum": 10_000,
                            "description": "Stream the text this many times over (a long answer from a short input; at most 4 MiB in all); 1 by default." },
                "delay_ms": { "type": "integer", "minimum": 0, "maximum": 3_600_000,
                              "description": "Total time to take, spread over the steps." },
                "steps": { "type": "integer", "minimum": 0, "maximum": 1000,
                           "description": "Progress reports to make, evenly spaced." },
                "fail_attempts": { "type": "integer", "minimum": 0, "maximum": 100,
                                   "description": "Fail this many first attempts (retryable)." },
                "fail_permanently": { "type": "boolean",
                                      "description": "Fail with a permanent error (after the `fail_attempts`)." },
                "wait_for": { "type": "array", "minItems": 1, "maxItems": 10, "uniqueItems": true,
                              "items": { "type": "string", "minLength": 1, "maxLength": 64 },
                              "description": "First wait (`waiting`, no worker slot held) for one of these signals (`POST /v1/runs/{id}/signals`): a human's approval, say. The result's `signal` is the one that came." },
                "wait_timeout_ms": { "type": "integer", "minimum": 1000, "maximum": 2_592_000_000_u64,
                                     "description": "How long the wait lasts before the run fails as `wait_timeout` (default a day)." }
            }
        })
    }

    async fn run(&self, ctx: RunContext, input: Value) -> Result<Value, AgentError> {
        let input: EchoInput = serde_json::from_value(input)
            .map_err(|e| AgentError::permanent(format!("invalid input: {e}")))?;
        // refused before any wait: a human does not approve a run that then cannot finish
        if let Some(text) = &input.text
            && text.len().saturating_mul(input.repeat as usize) > MAX_TEXT_BYTES
        {
            return Err(AgentError::permanent(format!(
                "`text` repeated {} times is over {MAX_TEXT_BYTES} bytes",
                input.repeat
            )));
        }
        let signal = wait_for_signal(&ctx, &input).await?;
        // with a text, the planned failures come after it was streamed
        if let Some(text) = &input.text {
            let text = text.repeat(input.repeat as usize);
            stream_words(&ctx, &text, input.delay_ms, input.steps).await?;
            planned_failure(&ctx, &input)?;
            return Ok(with_signal(
                json!({ "value": input.value, "text": text }),
                signal,
            ));
        }
        planned_failure(&ctx, &input)?;
        let steps = input.steps.max(1);
        let pause = Duration::from_millis(input.delay_ms) / steps;
        for step in 1..=steps {
            if !pause.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = ctx.cancelled().cancelled() => return Err(AgentError::retryable("cancelled")),
                }
            }
            if input.steps > 0 {
                let percent = (step * 100 / steps) as u8;
                ctx.progress(percent, format!("step {step} of {steps}"))
                    .await;
            }
        }
        Ok(with_signal(json!({ "value": input.value }), signal))
    }
}

/// A human in the loop: the run waits (holding no worker) until one of `wait_for` comes;
/// the agent is then called again, and the wait answers the signal at once. The signal is
/// kept in the run's checkpoint, so a later attempt (a planned failure, a lost worker) does
/// not wait for a second one.
async fn wait_for_signal(ctx: &RunContext, input: &EchoInput) -> Result<Option<Value>, AgentError> {
    if input.wait_for.is_empty() {
        return Ok(None);
    }
    if let Some(kept) = ctx
        .saved_checkpoint()
        .and_then(|c| c.get("signal").cloned())
    {
        return Ok(Some(kept));
    }
    let names: Vec<&str> = input.wait_for.iter().map(String::as_str).collect();
    let timeout = Duration::from_millis(input.wait_timeout_ms);
    let signal = ctx
        .wait_for_any(&names, timeout, crate::jobs::OnTimeout::Fail)
        .await?;
    let signal = json!({ "name": signal.name, "payload": signal.payload });
    ctx.checkpoint(json!({ "signal": signal }))
        .await
        .map_err(|e| AgentError::retryable(format!("keeping the signal: {}", e.message)))?;
    Ok(Some(signal))
}

/// The result, with the signal the run waited for when it waited.
fn with_signal(mut result: Value, signal: Option<Value>) -> Value {
    if let Some(signal) = signal {
        result["signal"] = signal;
    }
    result
}

/// The most text (repeats included) one echo run streams.
const MAX_TEXT_BYTES: usize = 4 * 1024 * 1024;

fn once() -> u32 {
    1
}

fn planned_failure(ctx: &RunContext, input: &EchoInput) -> Result<(), AgentError> {
    if ctx.attempt() <= input.fail_attempts {
        return Err(AgentError::retryable(format!(
            "planned failure on attempt {} of {}",
            ctx.attempt(),
            input.fail_attempts
        )));
    }
    if input.fail_permanently {
        return Err(AgentError::permanent("failed permanently, as asked"));
    }
    Ok(())
}

/// Streams `text` in pieces of a word and the space after it, evenly over `delay_ms` (paced
/// by the clock: when a write took longer than the pause, the words due meanwhile go
/// together in the next), with `steps` progress reports among them.
async fn stream_words(
    ctx: &RunContext,
    text: &str,
    delay_ms: u64,
    steps: u32,
) -> Result<(), AgentError> {
    let pieces = words(text);
    let count = pieces.len().max(1) as u32;
    let pause = Duration::from_millis(delay_ms) / count;
    let start = tokio::time::Instant::now();
    let mut reported = 0;
    let mut sent = 0u32;
    while sent < pieces.len() as u32 {
        tokio::select! {
            _ = tokio::time::sleep_until(start + pause * (sent + 1)) => {}
            _ = ctx.cancelled().cancelled() => return Err(AgentError::retryable("cancelled")),
        }
        let due = match pause.as_nanos() {
            // no delay: one word a write, back to back
            0 => sent + 1,
            each => ((start.elapsed().as_nanos() / each) as u32).clamp(sent + 1, count),
        };
        ctx.stream(pieces[sent as usize..due as usize].concat())
            .await?;
        sent = due;
        let step = (u64::from(sent) * u64::from(steps) / u64::from(count)) as u32;
        if step > reported {
            reported = step;
            let percent = (u64::from(sent) * 100 / u64::from(count)) as u8;
            ctx.progress(percent, format!("{sent} of {count} words"))
                .await;
        }
    }
    Ok(())
}

/// `text` cut after each run of whitespace: the pieces join back into `text`.
fn words(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut in_space = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            in_space = true;
        } else if in_space {
            pieces.push(&text[start..i]);
            start = i;
            in_space = false;
        }
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

#[cfg(test)]
mod tests {
    #[test]
    fn words_join_back_into_the_text() {
        for text in ["", "one", "Hello brave  new\nworld ", "  lead"] {
            let pieces = super::words(text);
            assert_eq!(pieces.concat(), text);
            assert!(pieces.iter().all(|p| !p.is_empty()));
        }
        assert_eq!(super::words("a b  c"), vec!["a ", "b  ", "c"]);
    }
}
