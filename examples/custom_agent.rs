//! An application's own agent, served by agentq next to the built-in ones.
//!
//! ```sh
//! cargo run --example custom_agent            # same flags and AGENTQ_* variables as agentq
//! curl -s localhost:8080/v1/runs -H 'content-type: application/json' \
//!      -d '{"agent": "word_count", "input": {"text": "to be or not to be"}}'
//! ```

use std::collections::BTreeMap;

use agentq::app::{Application, Role, builtin_agents};
use agentq::config::Cli;
use agentq::jobs::{Agent, AgentError, RunContext};
use async_trait::async_trait;
use clap::Parser;
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Err(message) = cli.settings.validate() {
        anyhow::bail!(message);
    }
    agentq::telemetry::init(cli.settings.log_format);
    let mut agents = builtin_agents();
    agents.register(WordCount)?;
    let app = Application::build(cli.settings.app_config(Role::Serve), agents).await?;
    app.run_until(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
