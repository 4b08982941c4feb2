//! `echo`: a diagnostic agent that returns its input's `value`, optionally slowly, in
//! steps with progress, or failing on purpose.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::jobs::{Agent, AgentError, RunContext};

pub struct Echo;

#[derive(Deserialize)]
struct EchoInput {
    value: Value,
    #[serde(default)]
    delay_ms: u64,
    #[serde(default)]
    steps: u32,
    #[serde(default)]
    fail_attempts: u32,
    #[serde(default)]
    fail_permanently: bool,
}

#[async_trait]
impl Agent for Echo {
    fn name(&self) -> &str {
        "echo"
    }

    fn description(&self) -> &str {
        "Returns {\"value\": input.value}; can wait, report progress in steps, or fail on purpose."
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "required": ["value"],
            "additionalProperties": false,
            "properties": {
                "value": { "description": "Returned as the result's `value`." },
                "delay_ms": { "type": "integer", "minimum": 0, "maximum": 3_600_000,
                              "description": "Total time to take, spread over the steps." },
                "steps": { "type": "integer", "minimum": 0, "maximum": 1000,
                           "description": "Progress reports to make, evenly spaced." },
                "fail_attempts": { "type": "integer", "minimum": 0, "maximum": 100,
                                   "description": "Fail this many first attempts (retryable)." },
                "fail_permanently": { "type": "boolean",
                                      "description": "Fail with a permanent error." }
            }
        })
    }

    async fn run(&self, ctx: RunContext, input: Value) -> Result<Value, AgentError> {
        let input: EchoInput = serde_json::from_value(input)
            .map_err(|e| AgentError::permanent(format!("invalid input: {e}")))?;
        if input.fail_permanently {
            return Err(AgentError::permanent("failed permanently, as asked"));
        }
        if ctx.attempt() <= input.fail_attempts {
            return Err(AgentError::retryable(format!(
                "planned failure on attempt {} of {}",
                ctx.attempt(),
                input.fail_attempts
            )));
        }
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
        Ok(json!({ "value": input.value }))
    }
}
