//! Processes starting on one database: at once on a new database, and beside a process
//! that holds the write lock.

use std::time::{Duration, Instant};

use sqlx::Connection;

use crate::helpers::{TestDb, open_store};

#[tokio::test]
async fn processes_starting_at_once_on_a_new_database_all_open_it_and_prepare_it() {
    // what each does at start, at once: without waiting for each other, all but one
    // could fail and exit (SQLite: switching the new file to WAL, creating the tables;
    // PostgreSQL: `CREATE INDEX IF NOT EXISTS` on the catalog's unique index name)
    for _ in 0..5 {
        let db = TestDb::new().await;
        let stores = futures::future::join_all((0..4).map(|_| open_store(&db.url))).await;
        let prepared =
            futures::future::join_all(stores.iter().map(|s| s.enable_redis_delivery())).await;
        for (i, result) in prepared.into_iter().enumerate() {
            assert!(result.is_ok(), "process {i}: {result:?}");
        }
        for store in stores {
            store.close().await;
        }
    }
}

#[tokio::test]
async fn a_process_starting_on_a_migrated_sqlite_file_needs_no_write_lock() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("agentq.db").display());
    open_store(&url).await.close().await;
    // another process writing (here: holding the write lock throughout)
    let mut writer = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut writer)
        .await
        .unwrap();
    // opening and migrating finds nothing to apply, so it takes no write lock (if it did,
    // it would fail after the 5 s busy timeout)
    let started = Instant::now();
    let store = open_store(&url).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    sqlx::query("ROLLBACK").execute(&mut writer).await.unwrap();
    store.close().await;
}
