//! The worker registry: `GET /v1/workers`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::TestApp;
use crate::support::eventually::eventually;

async fn workers(app: &TestApp) -> Vec<Value> {
    app.get_json("/v1/workers").await["workers"]
        .as_array()
        .expect("a list of workers")
        .clone()
}

#[tokio::test]
async fn a_worker_process_registers_and_its_heartbeat_counts_what_it_did() {
    let app = TestApp::spawn_with(|c| c.worker.agents = Some(vec!["echo".into()])).await;
    for value in 0..3 {
        let id = app
            .create(json!({"agent": "echo", "input": {"value": value}}))
            .await;
        app.wait_for_status(&id, "succeeded", Duration::from_secs(5))
            .await;
    }
    // the next heartbeat (every 2 s) carries the count
    let worker = eventually(
        Duration::from_secs(8),
        "the worker has processed 3",
        || async {
            let listed = workers(&app).await;
            let found = listed.iter().find(|w| w["processed"] == 3).cloned();
            found.ok_or(listed)
        },
    )
    .await;
    assert_eq!(worker["state"], "alive");
    assert_eq!(worker["agents"], json!(["echo"]));
    assert_eq!(worker["concurrency"], 8);
    assert_eq!(worker["pid"], std::process::id());
    assert_eq!(worker["running"], 0);
    assert_eq!(worker["restarts"], 0);
    assert!(worker["last_error"].is_null());
    assert_eq!(worker["version"], env!("CARGO_PKG_VERSION"));
    let id = worker["id"].as_str().unwrap();
    assert!(id.contains(&format!("-{}-", std::process::id())), "{id}");
}

#[tokio::test]
async fn a_worker_that_shut_down_is_listed_as_stopped() {
    let app = TestApp::spawn().await;
    // registered at its first heartbeat
    eventually(Duration::from_secs(5), "the worker registers", || async {
        let listed = workers(&app).await;
        if listed.is_empty() {
            Err(listed)
        } else {
            Ok(())
        }
    })
    .await;
    let db = app.shutdown().await.unwrap();
    let api = TestApp::spawn_on(&db.url, |c| c.role = agentq::app::Role::Api).await;
    let listed = workers(&api).await;
    assert_eq!(listed.len(), 1, "an api process runs no worker: {listed:?}");
    assert_eq!(listed[0]["state"], "stopped");
    let ready = api.get_json("/readyz").await;
    assert!(ready["checks"].get("worker").is_none(), "{ready}");
}
