//! A human-in-the-loop agent: it drafts a plan, waits for a person to approve or reject it
//! (a rejection sends it back to planning with the feedback) or to answer its questions,
//! then implements the plan. Waiting holds no worker; each phase is checkpointed, so the
//! agent picks up where it was when the signal resumes it.
//!
//! ```sh
//! cargo run --release --example approval_flow
//! curl -s localhost:8080/v1/runs -H 'content-type: application/json' \
//!      -d '{"agent": "approval_flow", "input": {"task": "migrate the billing tables"}}'
//! # the run becomes `waiting` (waiting_for: plan_approved, plan_rejected, answers_received)
//! curl -s localhost:8080/v1/runs/<id>/signals -H 'content-type: application/json' \
//!      -d '{"name": "plan_rejected", "payload": {"comment": "do it in two steps"}}'
//! curl -s localhost:8080/v1/runs/<id>/signals -H 'content-type: application/json' \
//!      -d '{"name": "plan_approved"}'
//! ```

use std::process::ExitCode;
use std::time::Duration;

use agentq::app::builtin_agents;
use agentq::jobs::{Agent, AgentError, OnTimeout, RunContext};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Plans, waits for a decision, implements.
pub struct ApprovalFlow;

/// What the agent has done so far; saved as its checkpoint after every step.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    phase: Phase,
    plan: String,
    feedback: Vec<String>,
    answers: Option<Value>,
}

#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Phase {
    #[default]
    Plan,
    Review,
    Implement,
}

#[async_trait]
impl Agent for ApprovalFlow {
    fn name(&self) -> &str {
        "approval_flow"
    }

    fn description(&self) -> &str {
        "Plans a task, waits for plan_approved / plan_rejected / answers_received, then implements it."
    }

    fn input_schema(&self) -> Value {
        json!({"type": "object", "required": ["task"],
               "properties": {"task": {"type": "string", "minLength": 1}}})
    }

    async fn run(&self, ctx: RunContext, input: Value) -> Result<Value, AgentError> {
        let task = input["task"].as_str().unwrap_or_default().to_owned();
        let mut state: State = ctx
            .saved_checkpoint()
            .and_then(|saved| serde_json::from_value(saved).ok())
            .unwrap_or_default();
        loop {
            match state.phase {
                Phase::Plan => {
                    state.plan = format!("plan v{} for {task}", state.feedback.len() + 1);
                    if let Some(last) = state.feedback.last() {
                        state.plan.push_str(&format!(", revised after: {last}"));
                    }
                    ctx.progress(30, "plan ready for review".to_owned()).await;
                    state.phase = Phase::Review;
                }
                Phase::Review => {
                    let names = ["plan_approved", "plan_rejected", "answers_received"];
                    // suspends the run (freeing the worker) until one of them arrives
                    let signal = ctx
                        .wait_for_any(&names, Duration::from_secs(24 * 3600), OnTimeout::Fail)
                        .await?;
                    match signal.name.as_str() {
                        "plan_rejected" => {
                            let comment = signal.payload["comment"].as_str().unwrap_or("rejected");
                            state.feedback.push(comment.to_owned());
                            state.phase = Phase::Plan;
                        }
                        "answers_received" => {
                            state.answers = Some(signal.payload);
                            state.phase = Phase::Implement;
                        }
                        _ => state.phase = Phase::Implement,
                    }
                }
                Phase::Implement => {
                    ctx.progress(90, "implementing".to_owned()).await;
                    return Ok(json!({
                        "implemented": state.plan,
                        "revisions": state.feedback.len(),
                        "feedback": state.feedback,
                        "answers": state.answers,
                    }));
                }
            }
            ctx.checkpoint(&state).await?;
        }
    }
}

fn main() -> ExitCode {
    let mut agents = builtin_agents();
    agents
        .register(ApprovalFlow)
        .expect("the agent's name and input schema are valid");
    // the same command line, settings and graceful shutdown as the agentq binary
    agentq::app::main_with(agents)
}
