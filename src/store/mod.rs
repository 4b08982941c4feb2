//! All SQL for runs and their events, behind one `Store` handle.
//!
//! Writes go through a single writer task that group-commits whatever is waiting (see
//! `sqlite::writer`); reads use a pool. Every write of an attempt is fenced by
//! [`Fence`]: a worker that lost its run cannot overwrite it. A call returns only after
//! its write is committed, so nothing is acknowledged before it is stored.

mod clock;
mod error;
mod hub;
pub use hub::EventFollower;
mod model;
mod postgres;
mod sqlite;
mod tally;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::{
    Inserted, NewRun, Progress, QueueStats, Run, RunEvent, RunId, RunStatus, StatusCounts,
    WorkerBeat, WorkerInfo,
};

pub use attempts::ClaimReply;
pub use clock::Clock;
pub use error::StoreError;
pub use model::{
    AgentLimits, AgentLoad, ApiKeyInfo, BatchInserted, Bodies, ClaimedRun, EventBounds, EventPage,
    Fence, FinishedKey, Fired, KeyRecord, NewSignal, Outcome, Purged, QueueLoad, RequeueFilter,
    RequeueTarget, RunFilter, RunPage, Streamed, Sweep, Transition, TransitionCount,
    WebhookDelivery, WebhookResult,
};
pub use postgres::check_url as check_postgres_url;

/// Settings that shape the store's connection, chosen at start-up.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Connections in the read pool.
    pub read_connections: u32,
    /// SQLite `synchronous`: `normal` survives a crashed process; `full` also a lost machine.
    pub sqlite_synchronous_full: bool,
    /// What times the store's records; the system's but in tests.
    pub clock: Clock,
    /// The most bytes of output stream one run may hold (`--max-stream-bytes`).
    pub max_stream_bytes: u64,
    /// SQLite: the largest the database file may grow (`--sqlite-max-size`).
    pub sqlite_max_size: Option<u64>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            read_connections: 4,
            sqlite_synchronous_full: false,
            clock: Clock::system(),
            max_stream_bytes: crate::domain::DEFAULT_MAX_STREAM_BYTES,
            sqlite_max_size: None,
        }
    }
}

/// A cheap, cloneable handle to the runs table.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Engine>,
    clock: Clock,
    max_stream_bytes: u64,
    /// The attempts this process saw covered by their worker's lease (`renew_leases`).
    covered: Arc<attempts::Covered>,
}

/// The engine compiled for each dialect (see `engine/mod.rs`).
enum Engine {
    Sqlite(sqlite::engine::Engine),
    Postgres(postgres::engine::Engine),
}

/// Runs `$body` with `$e` bound to whichever dialect's engine the store uses.
macro_rules! on_engine {
    ($store:expr, $e:ident => $body:expr) => {
        match &*$store.inner {
            Engine::Sqlite($e) => $body,
            Engine::Postgres($e) => $body,
        }
    };
}

/// Sends a write to whichever dialect's writer the store uses and awaits its reply.
/// `$command` is built from the types of `engine::writer::cmd`, which each dialect
/// compiles for itself, so the same words name each dialect's own command.
macro_rules! command {
    ($store:expr, $command:expr) => {
        match &*$store.inner {
            Engine::Sqlite(e) => {
                #[allow(unused_imports)]
                use sqlite::engine::writer::cmd::*;
                e.writer.call($command).await
            }
            Engine::Postgres(e) => {
                #[allow(unused_imports)]
                use postgres::engine::writer::cmd::*;
                e.writer.call($command).await
            }
        }
    };
}

/// Like [`command!`], without waiting: queues the write (see `WriterHandle::send_now`) and
/// gives its reply's receiver, `None` when the writer's queue is full or closed.
macro_rules! command_now {
    ($store:expr, $command:expr) => {
        match &*$store.inner {
            Engine::Sqlite(e) => {
                #[allow(unused_imports)]
                use sqlite::engine::writer::cmd::*;
                e.writer.send_now($command)
            }
            Engine::Postgres(e) => {
                #[allow(unused_imports)]
                use postgres::engine::writer::cmd::*;
                e.writer.send_now($command)
            }
        }
    };
}

// `impl Store` by entity; after the macros, which they use
mod agents;
mod attempts;
mod dispatch;
mod keys;
mod retention;
mod runs;
mod schedules;
mod webhooks;
mod workers;

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Connects to `url` (`sqlite://path`, creating the file if needed, or
    /// `postgres://…`). Does not migrate.
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let engine = if url.starts_with("sqlite:") {
            Engine::Sqlite(sqlite::connect(url, options).await?)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Engine::Postgres(postgres::connect(url, options).await?)
        } else {
            return Err(StoreError::Unsupported(format!(
                "database URL must start with sqlite:// or postgres:// (got `{}`)",
                url.split(':').next().unwrap_or_default()
            )));
        };
        Ok(Self {
            inner: Arc::new(engine),
            clock: options.clock.clone(),
            max_stream_bytes: options.max_stream_bytes,
            covered: Arc::default(),
        })
    }
    /// What times the store's records (leases, due times, events).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Now, as the store's clock has it (ms).
    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Which database the store uses: `sqlite` or `postgres`.
    pub fn dialect(&self) -> &'static str {
        match &*self.inner {
            Engine::Sqlite(_) => "sqlite",
            Engine::Postgres(_) => "postgres",
        }
    }
    /// Prepares the database for Redis delivery: creates the indexes only it reads, which
    /// the table-claiming default would otherwise keep up for nothing. Idempotent; on a
    /// large table the first call takes as long as building them.
    pub async fn enable_redis_delivery(&self) -> Result<(), StoreError> {
        on_engine!(self, e => e.enable_redis_delivery().await)
    }
    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        on_engine!(self, e => e.migrate().await)
    }
    /// The transitions this process's writer committed since it started, by agent.
    pub fn transitions(&self) -> Vec<TransitionCount> {
        on_engine!(self, e => e.tally.snapshot())
    }
    /// The transactions this process's writer committed.
    pub fn writer_transactions(&self) -> u64 {
        on_engine!(self, e => e.tally.transactions())
    }
    /// Why the storage is full, while writes find it so (until a commit at least 5 s after
    /// the last refusal, or a minute without one).
    pub fn storage_full(&self) -> Option<String> {
        on_engine!(self, e => e.tally.full_reason())
    }
    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_engine!(self, e => e.ping().await)
    }
    /// Stops the writer after it has committed what it was given, and closes connections.
    pub async fn close(&self) {
        on_engine!(self, e => e.close().await)
    }
}

pub(crate) fn to_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// Rounds up to the millisecond: a run asked not to start before `t` never starts early.
pub(crate) fn to_ms_ceil(t: DateTime<Utc>) -> i64 {
    let ms = t.timestamp_millis();
    if t.timestamp_subsec_nanos().is_multiple_of(1_000_000) {
        ms
    } else {
        ms + 1
    }
}

pub(crate) fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}
