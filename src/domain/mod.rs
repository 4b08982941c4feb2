//! The run model: ids, statuses and their legal transitions, run errors and retry backoff;
//! and worker processes as the registry shows them.
//!
//! Pure types and rules with no I/O, shared by the store, the workers and the API.

mod agent;
mod auth;
mod backoff;
mod concurrency;
mod queue;
mod run;
mod schedule;
mod secrets;
mod signing;
mod status;
mod stream;
mod text;
pub mod time;
mod worker;

pub use agent::{
    AgentDeclaration, AgentDefaults, AgentPauseState, AgentSchemaChange, Declared, DeclaredAgent,
};
pub use auth::{
    DEFAULT_TENANT, NewKey, RunToken, Scope, Scopes, Tenant, is_run_token, secret_matches,
    split_key,
};
pub use backoff::Backoff;
pub use concurrency::{Concurrency, KeyPolicy, KeySettings, MAX_KEY_CHARS, MAX_KEY_LIMIT};
pub use queue::{QueueStats, StatusCounts, THROUGHPUT_MINUTES, throughput_start};
pub use run::{
    AgentName, Compensation, EventKind, IdempotencyKey, Inserted, NewRun, Progress, Run, RunError,
    RunErrorKind, RunEvent, RunId, Secret, Signal, WaitingFor,
};
pub use schedule::{
    Cadence, CatchUp, DueSchedule, Firing, NewSchedule, RunTemplate, SCHEDULE_ID_KEY,
    SCHEDULE_TICK_KEY, Schedule, at_ms, fire,
};
pub use secrets::{NamedSecrets, SECRET_ENV_PREFIX, valid_secret_name};
pub use signing::{
    BadSignature, hmac_hex, hmac_matches, same_digest, sha256_hex, sign_request, verify_request,
};
pub use status::RunStatus;
pub use stream::{DEFAULT_MAX_STREAM_BYTES, StreamPart, coalesce};
pub use text::{may_hold_nul, nul_in, storable};
pub use worker::{WorkerBeat, WorkerInfo, WorkerState};
