//! `on_failure`: a run that fails for good gets a linked compensation run.

use std::sync::atomic::Ordering;
use std::time::Duration;

use agentq::domain::{Compensation, NewRun, RunStatus};
use serde_json::{Value, json};

use crate::helpers::{TestApp, echo_only, event_types, insert, new_run, temp_store};

#[tokio::test]
async fn a_run_that_fails_for_good_gets_a_linked_compensation_run() {
    let app = TestApp::spawn().await;
    app.probe.failing.store(true, Ordering::SeqCst);
    let id = app
        .create(json!({"agent": "switch", "on_failure": {"agent": "undo", "input": {"why": "cleanup"}}}))
        .await;
    let failed = app
        .wait_for(&id, Duration::from_secs(5), |r| {
            r["compensation_run_id"].is_string()
        })
        .await;
    assert_eq!(failed["status"], "failed");
    let compensation_id = failed["compensation_run_id"].as_str().unwrap().to_owned();
    let compensation = app
        .wait_for_status(&compensation_id, "succeeded", Duration::from_secs(5))
        .await;
    assert_eq!(compensation["agent"], "undo");
    assert_eq!(compensation["compensates_run_id"], id.as_str());
    assert_eq!(compensation["result"]["undid"], id.as_str());
    assert_eq!(compensation["result"]["because"], "switched off");
    assert_eq!(compensation["result"]["note"], json!({"why": "cleanup"}));
    let types = event_types(&app.events(&id).await);
    assert_eq!(
        types,
        ["created", "started", "failed", "compensation_created"]
    );
}

#[tokio::test]
async fn success_and_cancel_create_no_compensation() {
    let app = TestApp::spawn().await;
    let spec = json!({"agent": "undo"});
    let ok = app
        .create(json!({"agent": "echo", "input": {"value": 1}, "on_failure": spec}))
        .await;
    let later = chrono::Utc::now() + chrono::Duration::seconds(60);
    let cancelled = app
        .create(
            json!({"agent": "echo", "input": {"value": 1}, "on_failure": spec, "run_at": later}),
        )
        .await;
    app.cancel(&cancelled).await;
    let ok = app
        .wait_for_status(&ok, "succeeded", Duration::from_secs(5))
        .await;
    assert!(ok["compensation_run_id"].is_null());
    assert!(app.get_run(&cancelled).await["compensation_run_id"].is_null());
    let runs = app.get_json("/v1/runs").await;
    assert_eq!(
        runs["runs"].as_array().unwrap().len(),
        2,
        "no compensation runs exist"
    );
}

#[tokio::test]
async fn a_run_compensates_once_even_if_retried_and_failed_again() {
    let app = TestApp::spawn().await;
    app.probe.failing.store(true, Ordering::SeqCst);
    let id = app
        .create(json!({"agent": "switch", "on_failure": {"agent": "undo"}}))
        .await;
    let first = app
        .wait_for(&id, Duration::from_secs(5), |r| {
            r["compensation_run_id"].is_string()
        })
        .await;
    app.client
        .post(app.url(&format!("/v1/runs/{id}/retry")))
        .send()
        .await
        .unwrap();
    let again = app
        .wait_for(&id, Duration::from_secs(5), |r| {
            r["status"] == "failed" && r["attempt"] == 1
        })
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(again["compensation_run_id"], first["compensation_run_id"]);
    let undo_runs: Vec<Value> = app.get_json("/v1/runs?agent=undo").await["runs"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(undo_runs.len(), 1);
}

#[tokio::test]
async fn a_compensation_the_agent_cannot_take_is_refused_at_creation() {
    let app = TestApp::spawn().await;
    let response = app
        .post_run(json!({"agent": "echo", "input": {"value": 1}, "on_failure": {"agent": "nope"}}))
        .await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["field"], "on_failure/agent");
    // echo's schema does not accept the compensation envelope
    let response = app
        .post_run(json!({"agent": "echo", "input": {"value": 1}, "on_failure": {"agent": "echo"}}))
        .await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["errors"][0]["field"]
            .as_str()
            .unwrap()
            .starts_with("on_failure")
    );
}

#[tokio::test]
async fn a_lost_last_attempt_is_compensated_too() {
    let (store, _dir) = temp_store().await;
    let spec = Compensation {
        agent: "undo".into(),
        input: json!(null),
    };
    let run = insert(
        &store,
        NewRun {
            max_attempts: 1,
            on_failure: Some(spec),
            ..new_run()
        },
    )
    .await;
    store
        .claim("gone".into(), echo_only(), 1, Duration::ZERO, None, None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(store.sweep_expired().await.unwrap().failed, 1);
    let failed = store.get_run(run.id).await.unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    let compensation = store
        .get_run(failed.compensation_run_id.expect("linked"))
        .await
        .unwrap();
    assert_eq!(compensation.compensates_run_id, Some(run.id));
    assert_eq!(
        compensation.input["failed_run"]["error"]["kind"],
        "lost_worker"
    );
}
