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
use std::time::{Duration, Instant};

use sqlx::ConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqlitePoolOptions, SqliteSynchronous};

use super::{StoreError, StoreOptions};

type Db = sqlx::Sqlite;
type Conn = sqlx::SqliteConnection;
type ConnectOpts = SqliteConnectOptions;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// SQLite's page size (its default, which agentq's files keep).
const PAGE_SIZE: u64 = 4096;

/// How long a statement waits for another connection's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

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
        .synchronous(synchronous)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(false)
        // the writer's transactions touch many pages at once (a thousand runs streaming):
        // a page cache that holds them (64 MiB at most, grown only as used), and statement
        // journals kept in memory rather than written to a temporary file
        .pragma("cache_size", "-65536")
        .pragma("temp_store", "memory")
        // a WAL that grew (a long read held checkpoints back, a full disk) is cut back to
        // 64 MiB after each checkpoint rather than kept at its largest
        .pragma("journal_size_limit", "67108864")
        .disable_statement_logging();
    // --sqlite-max-size: SQLite refuses to grow the file past it (SQLITE_FULL, as a full disk)
    let connect = match options.sqlite_max_size {
        Some(bytes) => connect.pragma("max_page_count", (bytes / PAGE_SIZE).max(1).to_string()),
        None => connect,
    };
    let mut conn = connect.connect().await?;
    use_wal(&mut conn).await?;
    let pool = SqlitePoolOptions::new()
        .max_connections(options.read_connections.max(1))
        .min_connections(1)
        // a ping on every checkout doubles the cost of a point read
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(connect.clone())
        .await?;
    Ok(engine::Engine::new(
        conn,
        connect,
        pool,
        options.clock.clone(),
    ))
}

/// Puts the database in WAL mode (kept in the file, so every later connection has it).
/// Switching a new file needs an exclusive lock that SQLite's busy timeout does not wait
/// for: processes opening a new file at once retry here instead of failing to start.
async fn use_wal(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        match sqlx::query("PRAGMA journal_mode = WAL")
            .execute(&mut *conn)
            .await
        {
            Err(sqlx::Error::Database(e)) if engine::is_busy(e.code().as_deref()) => {
                if Instant::now() >= deadline {
                    return Err(sqlx::Error::Database(e).into());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            done => return done.map(drop).map_err(Into::into),
        }
    }
}

#[cfg(test)]
mod tests {
    use sqlx::ConnectOptions;

    #[tokio::test]
    async fn every_statement_prepares_on_a_freshly_migrated_database() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("agentq.db").display());
        let mut conn = <super::ConnectOpts as std::str::FromStr>::from_str(&url)
            .unwrap()
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        let source = concat!(include_str!("sql.rs"), include_str!("../shared_sql.rs"));
        super::engine::statements::prepare_all(&mut conn, source).await;
    }
}
