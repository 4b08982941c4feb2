//! An application's own agent, served by agentq next to the built-in ones.
//!
//! ```sh
//! cargo run --release --example custom_agent  # same flags and AGENTQ_* variables as agentq
//! curl -s localhost:8080/v1/runs -H 'content-type: application/json' \
//!      -d '{"agent": "word_count", "input": {"text": "to be or not to be"}}'
//! ```

use std::collections::BTreeMap;
use std::process::ExitCode;

use agentq::app::builtin_agents;
use agentq::jobs::{Agent, AgentError, RunContext};
use async_trait::async_trait;
use serde_json::{Value, json};

/// Counts words, reporting progress as it goes. CPU work runs off the async threads.
struct WordCount;

#[async_trait]
impl Agent for WordCount {
    fn name(&self) -> &str {
        "word_count"
    }

    fn description(&self) -> &str {
        "Counts the words of a text."
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "required": ["text"],
            "properties": { "text": { "type": "string", "maxLength": 100000 } }
        })
    }

    async fn run(&self, ctx: RunContext, input: Value) -> Result<Value, AgentError> {
        let text = input["text"]
            .as_str()
            .ok_or_else(|| AgentError::permanent("text must be a string"))?
            .to_owned();
        ctx.progress(10, "counting".to_owned()).await;
        let counts = tokio::task::spawn_blocking(move || {
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            for word in text.split_whitespace() {
                *counts.entry(word.to_lowercase()).or_default() += 1;
            }
            counts
        })
        .await
        .map_err(|e| AgentError::retryable(format!("counting stopped: {e}")))?;
        ctx.log("info", format!("{} distinct words", counts.len()))
            .await;
        Ok(json!({ "words": counts.values().sum::<u64>(), "counts": counts }))
    }
}

fn main() -> ExitCode {
    let mut agents = builtin_agents();
    agents
        .register(WordCount)
        .expect("the agent's name and input schema are valid");
    // the same command line, settings and graceful shutdown as the agentq binary
    agentq::app::main_with(agents)
}
