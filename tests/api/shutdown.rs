use std::sync::atomic::Ordering;
use std::time::Duration;

use agentq::domain::RunStatus;

use serde_json::json;

use crate::helpers::{TestApp, event_types, open_store};
use crate::support::eventually::eventually;

#[tokio::test]
async fn shutdown_lets_in_flight_runs_finish_within_the_timeout() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"agent": "patient", "input": {"ms": 300}}))
        .await;
    app.wait_for_status(&id, "running", Duration::from_secs(5))
        .await;
    let db = app.shutdown().await.unwrap();
    let store = open_store(&db.url).await;
    let run = store.get_run(id.parse().unwrap()).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.attempt, 1);
}

#[tokio::test]
async fn shutdown_hands_back_runs_still_running_at_the_timeout_without_using_an_attempt() {
    let app = TestApp::spawn_with(|c| c.worker.shutdown_timeout = Duration::from_millis(200)).await;
    let probe = app.probe.clone();
    let id = app
        .create(json!({"agent": "patient", "input": {"ms": 1500}}))
        .await;
    app.wait_for_status(&id, "running", Duration::from_secs(5))
        .await;
    let started = std::time::Instant::now();
    let db = app.shutdown().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown waited {:?}",
        started.elapsed()
    );
    assert_eq!(
        probe.cancelled.load(Ordering::SeqCst),
        1,
        "the agent was told to stop"
    );

    let store = open_store(&db.url).await;
    let run = store.get_run(id.parse().unwrap()).await.unwrap();
    assert_eq!((run.status, run.attempt), (RunStatus::Queued, 0));
    assert!(run.worker_id.is_none());
    let kinds: Vec<String> = store
        .list_events(run.id, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["created", "started", "released"]);
    store.close().await;

    let app = TestApp::spawn_on(&db.url, |_| {}).await;
    let run = app
        .wait_for_status(&id, "succeeded", Duration::from_secs(5))
        .await;
    assert_eq!(run["attempt"], 1);
    let types = event_types(&app.events(&id).await);
    assert_eq!(
        types,
        ["created", "started", "released", "started", "succeeded"]
    );
    drop(db);
}

#[tokio::test]
async fn a_running_agent_whose_run_was_taken_away_is_told_to_stop() {
    let app = TestApp::spawn_with(|c| c.worker.lease = Duration::from_secs(1)).await;
    let id = app
        .create(json!({"agent": "patient", "input": {"ms": 30000}}))
        .await;
    app.wait_for_status(&id, "running", Duration::from_secs(5))
        .await;
    // another process takes the run over, as if this worker's lease had lapsed
    let store = open_store(&app.db_url).await;
    store
        .release_worker(app.get_run(&id).await["worker_id"].as_str().unwrap().into())
        .await
        .unwrap();
    eventually(
        Duration::from_secs(5),
        "the agent is told to stop",
        || async {
            let cancelled = app.probe.cancelled.load(Ordering::SeqCst);
            if cancelled > 0 {
                Ok(())
            } else {
                Err(cancelled)
            }
        },
    )
    .await;
}
