//! agentq: runs agent jobs in the background for web applications.
//!
//! A frontend submits a run over HTTP and gets its id at once; workers execute it with
//! retries, timeouts and progress updates; the outcome lands in the runs table that
//! clients poll or follow. See `ARCHITECTURE.md` in the repository for the design.

pub mod domain;
pub mod jobs;
pub mod store;
