//! The store driven directly, as the store suite (`tests/store/`) and a second process
//! in the API suite do.

use std::sync::Arc;
use std::time::Duration;

use agentq::domain::{Backoff, Inserted, NewRun, Run, RunId};
use agentq::store::{Clock, Store, StoreOptions};
use serde_json::json;

use super::db::TestDb;

/// Opens (and migrates) the database at `url` directly, as a second process would.
pub async fn open_store(url: &str) -> Store {
    let store = Store::connect(url, &StoreOptions::default())
        .await
        .expect("the database opens");
    store.migrate().await.expect("migrations apply");
    store
}

/// A fresh store on a manual clock (standing at the real time until moved), for tests
/// that move time instead of sleeping for a lease to expire or a backoff to pass; with
/// `redis`, ready for Redis delivery's operations too.
pub async fn store_on_manual_clock(redis: bool) -> (Store, Clock, TestDb) {
    let db = TestDb::new().await;
    let clock = Clock::manual(chrono::Utc::now());
    let options = StoreOptions {
        clock: clock.clone(),
        ..StoreOptions::default()
    };
    let store = Store::connect(&db.url, &options)
        .await
        .expect("the database opens");
    store.migrate().await.expect("migrations apply");
    if redis {
        store
            .enable_redis_delivery()
            .await
            .expect("the Redis indexes");
    }
    (store, clock, db)
}

/// A fresh store ready for Redis delivery's operations too.
pub async fn temp_store_for_redis() -> (Store, TestDb) {
    let (store, db) = temp_store().await;
    store
        .enable_redis_delivery()
        .await
        .expect("the Redis indexes");
    (store, db)
}

/// A fresh store (its database kept alive by the returned guard).
pub async fn temp_store() -> (Store, TestDb) {
    let db = TestDb::new().await;
    let store = open_store(&db.url).await;
    (store, db)
}

/// An `echo` run with no backoff, for driving the store directly.
pub fn new_run() -> NewRun {
    NewRun {
        id: RunId::new(),
        agent: "echo".into(),
        input: json!({"value": 1}),
        priority: 0,
        max_attempts: 3,
        timeout: Duration::from_secs(1),
        backoff: Backoff {
            base: Duration::ZERO,
            cap: Duration::ZERO,
        },
        run_at: None,
        deadline: None,
        expires_at: None,
        metadata: Default::default(),
        idempotency: None,
        on_failure: None,
        compensates: None,
        depends_on: Vec::new(),
        callback_url: None,
        tenant: agentq::domain::Tenant::default_tenant(),
        trace_parent: None,
        created_by: None,
        concurrency: None,
    }
}

/// Inserts a run that must be new, and returns it.
pub async fn insert(store: &Store, run: NewRun) -> Run {
    match store.insert_run(run).await.expect("the insert commits") {
        Inserted::New(run) => *run,
        other => panic!("expected a new run, got {other:?}"),
    }
}

/// The agent list of a worker serving only `echo`.
pub fn echo_only() -> Option<Arc<[String]>> {
    Some(vec!["echo".to_owned()].into())
}
