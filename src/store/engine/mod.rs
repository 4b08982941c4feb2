//! The store's engine: the writer, reads and row mapping, written once and compiled for
//! each dialect. A dialect module includes this directory with `#[path]` and provides
//! `Db`, `Conn`, `ConnectOpts`, its statements as `sql`, and `MIGRATOR`. Monomorphising
//! the source per dialect keeps the hot path on concrete sqlx types (no `Any` driver, no
//! generic bounds on every bind) while the logic exists once.

mod heads;
mod keys;
mod reads;
mod rows;
pub(in crate::store) mod writer;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::Connection;

use super::{Conn, ConnectOpts, Db, MIGRATOR, sql};
use crate::store::hub::EventHub;
use crate::store::tally::Tally;
use crate::store::{Clock, StoreError};

/// How long a schema change waits for another process's (SQLite).
const SCHEMA_WAIT: Duration = Duration::from_secs(600);

/// `SQLITE_BUSY` or one of its extended codes (PostgreSQL's codes are not numbers).
pub(super) fn is_busy(code: Option<&str>) -> bool {
    code.and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|c| c & 0xff == 5)
}

pub(in crate::store) struct Engine {
    pub(in crate::store) writer: writer::WriterHandle,
    pub(in crate::store) hub: Arc<EventHub>,
    /// Transitions the writer committed, for metrics.
    pub(in crate::store) tally: Arc<Tally>,
    /// What times the store's records.
    clock: Clock,
    pool: sqlx::Pool<Db>,
    /// The dialect's own tasks (PostgreSQL's listener), stopped at close.
    background: std::sync::Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Engine {
    /// Starts the writer task on `conn` (reconnecting with `options` if it breaks) beside
    /// a read pool.
    pub(super) fn new(
        conn: Conn,
        options: ConnectOpts,
        pool: sqlx::Pool<Db>,
        clock: Clock,
    ) -> Self {
        let hub = Arc::new(EventHub::default());
        let tally = Arc::new(Tally::default());
        let engine = Self {
            writer: writer::WriterHandle::spawn(
                conn,
                options,
                hub.clone(),
                tally.clone(),
                clock.clone(),
            ),
            clock,
            hub,
            tally,
            pool,
            background: std::sync::Mutex::new(Vec::new()),
        };
        // other processes' events reach this process's streams by one read for them all
        engine.spawn_background(heads::watch(engine.pool.clone(), engine.hub.clone()));
        engine
    }

    /// Runs `task` beside the engine until it closes.
    #[allow(dead_code, reason = "only some dialects have background tasks")]
    pub(super) fn spawn_background(
        &self,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let handle = tokio::spawn(task).abort_handle();
        self.background
            .lock()
            .expect("background tasks lock")
            .push(handle);
    }

    /// Applies pending migrations, one process at a time.
    pub(in crate::store) async fn migrate(&self) -> Result<(), StoreError> {
        // SQLite: the write lock only when there is something to apply; a process starting
        // beside busy writers should not need it just to find nothing to do
        if sql::SCHEMA_BEGIN.is_some() && self.migrations_pending().await {
            let mut tx = self.begin_schema_change().await?;
            MIGRATOR.run(&mut *tx).await?;
            tx.commit().await?;
        } else {
            // PostgreSQL: sqlx's migrator holds an advisory lock of its own
            MIGRATOR.run(&self.pool).await?;
        }
        Ok(())
    }

    /// A transaction to change the schema in, one process at a time. On SQLite it holds
    /// the write lock from its start, waiting up to `SCHEMA_WAIT` for another process's
    /// change (building an index on a large table outlasts the busy timeout); on
    /// PostgreSQL it holds an advisory lock (`SCHEMA_LOCK`).
    async fn begin_schema_change(&self) -> Result<sqlx::Transaction<'static, Db>, StoreError> {
        let Some(begin) = sql::SCHEMA_BEGIN else {
            let mut tx = self.pool.begin().await?;
            if let Some(lock) = sql::SCHEMA_LOCK {
                sqlx::query(lock).execute(&mut *tx).await?;
            }
            return Ok(tx);
        };
        let deadline = Instant::now() + SCHEMA_WAIT;
        let mut told = false;
        loop {
            match self.pool.begin_with(begin).await {
                Err(sqlx::Error::Database(e))
                    if is_busy(e.code().as_deref()) && Instant::now() < deadline =>
                {
                    if !told {
                        tracing::info!("waiting for another process to finish changing the schema");
                        told = true;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                begun => return Ok(begun?),
            }
        }
    }

    /// Whether a migration is not applied yet (or the table of applied ones is missing).
    async fn migrations_pending(&self) -> bool {
        let applied: Vec<i64> = match sqlx::query_scalar(sql::APPLIED_MIGRATIONS)
            .fetch_all(&self.pool)
            .await
        {
            Ok(applied) => applied,
            Err(_) => return true,
        };
        MIGRATOR
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .any(|m| !applied.contains(&m.version))
    }

    /// Creates the indexes only Redis delivery needs (idempotent; one process at a time).
    pub(in crate::store) async fn enable_redis_delivery(&self) -> Result<(), StoreError> {
        let mut tx = self.begin_schema_change().await?;
        for statement in sql::REDIS_INDEXES {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(in crate::store) async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        conn.ping().await?;
        Ok(())
    }

    pub(in crate::store) async fn close(&self) {
        for task in self
            .background
            .lock()
            .expect("background tasks lock")
            .drain(..)
        {
            task.abort();
        }
        self.writer.close().await;
        self.pool.close().await;
    }
}

/// The check every dialect's test runs on its statements (see `sql::all`).
#[cfg(test)]
pub(super) mod statements {
    use sqlx::Executor;

    use super::{Conn, MIGRATOR, sql};

    /// Every `pub(super) const` of the dialect's `sql.rs` (its source text) is in
    /// `sql::all()`, and every statement there prepares on `conn`, a freshly migrated
    /// schema: a typo or a missing column fails here, before a behaviour test reaches it.
    pub(in crate::store) async fn prepare_all(conn: &mut Conn, source: &str) {
        MIGRATOR
            .run(&mut *conn)
            .await
            .expect("the migrations apply");
        // what Redis delivery adds (`enable_redis_delivery`): its statements name them
        for index in sql::REDIS_INDEXES {
            sqlx::query(index)
                .execute(&mut *conn)
                .await
                .expect("the index builds");
        }
        let all = sql::all();
        let declared: Vec<&str> = source
            .lines()
            .filter_map(|l| l.strip_prefix("pub(super) const "))
            .filter_map(|l| l.split(':').next())
            .collect();
        for name in &declared {
            assert!(
                all.iter().any(|(n, _)| n == name),
                "sql::{name} is missing from sql::all()"
            );
        }
        assert_eq!(
            all.len(),
            declared.len(),
            "sql::all() names one statement twice"
        );
        let mut failed = Vec::new();
        let mut prepared = 0;
        for (name, statements) in &all {
            for statement in statements {
                match conn
                    .prepare(sqlx::SqlSafeStr::into_sql_str(*statement))
                    .await
                {
                    Ok(_) => prepared += 1,
                    Err(e) => failed.push(format!("{name}: {e}")),
                }
            }
        }
        assert!(
            failed.is_empty(),
            "statements that do not prepare:\n{}",
            failed.join("\n")
        );
        assert!(prepared > 70, "only {prepared} statements prepared");
    }
}
