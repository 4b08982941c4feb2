//! The SQLite dialect: one writer connection owned by the writer task, a pool for reads,
//! and the statements in `sql`. The engine (writer, reads, row mapping) is shared with the
//! PostgreSQL dialect and compiled here for SQLite.

mod sql;

#[path = "../engine/mod.rs"]
#[allow(
    clippy::duplicate_mod,
    reason = "the engine is compiled once per dialect, on purpose (see engine/mod.rs)"
)]
pub(super) mod engine;

use std::str::FromStr;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::{StoreError, StoreOptions};

type Db = sqlx::Sqlite;
type Conn = sqlx::SqliteConnection;
type ConnectOpts = SqliteConnectOptions;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

pub(super) async fn connect(
    url: &str,
    options: &StoreOptions,
) -> Result<engine::Engine, StoreError> {
    let synchronous = if options.sqlite_synchronous_full {
        SqliteSynchronous::Full
    } else {
        SqliteSynchronous::Normal
    };
    let connect = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(synchronous)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(false)
        .disable_statement_logging();
    let conn = connect.connect().await?;
    let pool = SqlitePoolOptions::new()
        .max_connections(options.read_connections.max(1))
        .min_connections(1)
        // a ping on every checkout doubles the cost of a point read
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(connect.clone())
        .await?;
    Ok(engine::Engine::new(conn, connect, pool))
}
