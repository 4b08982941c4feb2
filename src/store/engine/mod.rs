//! The store's engine: the writer, reads and row mapping, written once and compiled for
//! each dialect. A dialect module includes this directory with `#[path]` and provides
//! `Db`, `Conn`, `ConnectOpts`, its statements as `sql`, and `MIGRATOR`. Monomorphising
//! the source per dialect keeps the hot path on concrete sqlx types (no `Any` driver, no
//! generic bounds on every bind) while the logic exists once.

mod keys;
mod reads;
mod rows;
pub(super) mod writer;

use std::sync::Arc;

use sqlx::Connection;

use super::{Conn, ConnectOpts, Db, MIGRATOR, sql};
use crate::store::StoreError;
use crate::store::hub::EventHub;
use crate::store::tally::Tally;

pub(in crate::store) struct Engine {
    pub(in crate::store) writer: writer::WriterHandle,
    pub(in crate::store) hub: Arc<EventHub>,
    /// Transitions the writer committed, for metrics.
    pub(in crate::store) tally: Arc<Tally>,
    pool: sqlx::Pool<Db>,
    /// The dialect's own tasks (PostgreSQL's listener), stopped at close.
    background: std::sync::Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Engine {
    /// Starts the writer task on `conn` (reconnecting with `options` if it breaks) beside
    /// a read pool.
    pub(super) fn new(conn: Conn, options: ConnectOpts, pool: sqlx::Pool<Db>) -> Self {
        let hub = Arc::new(EventHub::default());
        let tally = Arc::new(Tally::default());
        Self {
            writer: writer::WriterHandle::spawn(conn, options, hub.clone(), tally.clone()),
            hub,
            tally,
            pool,
            background: std::sync::Mutex::new(Vec::new()),
        }
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

    pub(in crate::store) async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Creates the indexes only Redis delivery needs (idempotent).
    pub(in crate::store) async fn enable_redis_delivery(&self) -> Result<(), StoreError> {
        for statement in sql::REDIS_INDEXES {
            sqlx::query(statement).execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Creates the index only retention needs (idempotent).
    pub(in crate::store) async fn enable_retention(&self) -> Result<(), StoreError> {
        for statement in sql::RETENTION_INDEXES {
            sqlx::query(statement).execute(&self.pool).await?;
        }
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
