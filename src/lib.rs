//! agentq: runs agent jobs in the background for web applications.
//!
//! A frontend submits a run over HTTP and gets its id at once; workers execute it with
//! retries, timeouts and progress updates; the outcome lands in the runs table that
//! clients poll or follow. `app::Application::build` wires everything; applications add
//! their own agents by implementing [`jobs::Agent`] and registering them in a
//! [`jobs::AgentRegistry`] (see `examples/custom_agent.rs`).

pub mod api;
pub mod app;
pub mod config;
pub mod domain;
pub mod jobs;
pub mod keys;
pub mod store;
pub mod telemetry;
