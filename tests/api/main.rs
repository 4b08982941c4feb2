mod agents_and_health;
#[path = "../../examples/approval_flow.rs"]
#[allow(dead_code)]
mod approval_flow;
mod claims;
mod cli;
mod compensation;
mod crash;
mod create_run;
mod dependencies;
mod fencing;
mod helpers;
mod http_agent;
mod idempotency;
mod list_runs;
mod live_events;
mod openapi;
mod read_run;
mod retries;
mod shutdown;
mod signals;
mod steering;
mod time_limits;
mod webhooks;
