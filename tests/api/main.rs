mod agent_limits;
mod agents_and_health;
#[path = "../../examples/approval_flow.rs"]
#[allow(dead_code)]
mod approval_flow;
mod audit;
mod auth;
mod batch;
mod cancel_and_retry;
mod change_run;
mod cli;
mod compensation;
mod crash;
mod create_run;
mod dashboard;
mod dependencies;
mod deploy;
mod external_workers;
mod helpers;
mod http_agent;
mod idempotency;
mod limits;
mod list_runs;
mod live_events;
mod metrics;
mod openapi;
mod outage;
mod output_stream;
mod pause;
mod process;
mod read_run;
mod redis_delivery;
mod redis_ha;
mod retention;
mod retries;
mod scale_out;
mod shutdown;
mod signals;
mod startup;
mod throwaway;
mod time_limits;
mod tls;
mod tracing;
mod webhooks;
mod workers;

#[path = "../support/mod.rs"]
mod support;
