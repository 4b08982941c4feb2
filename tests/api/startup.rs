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

/// A run that was waiting when migration 0016 is applied had been stored one attempt lower
/// (the wait used to lower it); the migration raises it, so the run resumes in the attempt
/// it waited in instead of one below it (below 0: a refused write).
#[tokio::test]
async fn a_run_waiting_across_the_upgrade_resumes_in_the_attempt_it_waited_in() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("agentq.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let mut before = sqlx::migrate::Migrator::new(std::path::Path::new("migrations/sqlite"))
        .await
        .unwrap();
    let older: Vec<_> = before
        .migrations
        .iter()
        .filter(|m| m.version < 16)
        .cloned()
        .collect();
    assert_eq!(older.len(), 15);
    before.migrations = older.into();
    before.run(&pool).await.unwrap();
    // as the old wait left it: waiting in attempt 1, stored as 0
    let id = uuid::Uuid::now_v7().to_string();
    let now = chrono::Utc::now().timestamp_millis();
    sqlx::query(
        "INSERT INTO runs (id, agent, status, input, attempt, claims, max_attempts, timeout_ms,
                           backoff_base_ms, backoff_cap_ms, run_at, started_at, created_at,
                           updated_at, event_seq, waiting_for, wait_until)
         VALUES (?1, 'echo', 'waiting', '{\"value\": 1, \"wait_for\": [\"go\"]}', 0, 1, 3,
                 60000, 1000, 60000, ?2, ?2, ?2, ?2, 3, '[\"go\"]', ?3)",
    )
    .bind(&id)
    .bind(now)
    .bind(now + 3_600_000)
    .execute(&pool)
    .await
    .unwrap();
    // and its log as the old engine wrote it
    sqlx::query(
        "INSERT INTO run_events (run_id, seq, at, type, attempt, data) VALUES
             (?1, 1, ?2, 'created', 0, '{}'), (?1, 2, ?2, 'started', 1, '{}'),
             (?1, 3, ?2, 'waiting', 1, '{}')",
    )
    .bind(&id)
    .bind(now)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let app = crate::helpers::TestApp::spawn_on(&url, |_| {}).await;
    assert_eq!(app.get_run(&id).await["attempt"], 1);
    let signal = app
        .client
        .post(app.url(&format!("/v1/runs/{id}/signals")))
        .json(&serde_json::json!({"name": "go"}))
        .send()
        .await
        .unwrap();
    assert_eq!(signal.status(), 202);
    let done = app
        .wait_for_status(&id, "succeeded", Duration::from_secs(10))
        .await;
    assert_eq!(done["attempt"], 1, "{done}");
}
