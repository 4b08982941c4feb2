//! `depends_on`: runs that wait for other runs.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, event_types};

fn later(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() + chrono::Duration::milliseconds(ms)
}

#[tokio::test]
async fn a_run_stays_blocked_until_its_dependencies_succeed_and_reads_their_results() {
    let app = TestApp::spawn().await;
    let slow = app
        .create(json!({"agent": "patient", "input": {"ms": 300}}))
        .await;
    let fast = app
        .create(json!({"agent": "echo", "input": {"value": "b"}}))
        .await;
    let response = app
        .post_run(json!({"agent": "gather", "depends_on": [slow, fast]}))
        .await;
    assert_eq!(response.status(), 202);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["status"], "blocked");
    assert_eq!(created["depends_on"], json!([slow, fast]));
    let id = created["id"].as_str().unwrap().to_owned();
    let run = app
        .wait_for_status(&id, "succeeded", Duration::from_secs(5))
        .await;
    assert_eq!(run["result"][&slow], json!({"waited_ms": 300}));
    assert_eq!(run["result"][&fast], json!({"value": "b"}));
    assert_eq!(run["depends_on"], json!([slow, fast]));
    let types = event_types(&app.events(&id).await);
    assert_eq!(types, ["created", "unblocked", "started", "succeeded"]);
}

#[tokio::test]
async fn dependencies_that_already_succeeded_do_not_block() {
    let app = TestApp::spawn().await;
    let done = app
        .create(json!({"agent": "echo", "input": {"value": 1}}))
        .await;
    app.wait_for_status(&done, "succeeded", Duration::from_secs(5))
        .await;
    let response = app
        .post_run(json!({"agent": "gather", "depends_on": [done]}))
        .await;
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["status"], "queued");
}

#[tokio::test]
async fn a_failed_dependency_fails_its_dependents_down_the_chain() {
    let app = TestApp::spawn().await;
    let first = app
        .create(
            json!({"agent": "echo", "input": {"value": 1, "fail_permanently": true},
                       "run_at": later(1500)}),
        )
        .await;
    let second = app
        .create(json!({"agent": "gather", "depends_on": [first]}))
        .await;
    let third = app
        .create(json!({"agent": "gather", "depends_on": [second]}))
        .await;
    let run = app
        .wait_for_status(&third, "failed", Duration::from_secs(5))
        .await;
    assert_eq!(run["error"]["kind"], "dependency_failed");
    assert_eq!(
        run["error"]["message"],
        format!("dependency {second} failed")
    );
    assert!(run["started_at"].is_null(), "it never ran");
    let second = app.get_run(&second).await;
    assert_eq!(
        (second["status"].as_str(), second["error"]["kind"].as_str()),
        (Some("failed"), Some("dependency_failed"))
    );
}

#[tokio::test]
async fn cancelling_a_run_cancels_the_runs_that_depend_on_it() {
    let app = TestApp::spawn().await;
    let first = app
        .create(json!({"agent": "patient", "input": {"ms": 30000}}))
        .await;
    let dependent = app
        .create(json!({"agent": "gather", "depends_on": [first]}))
        .await;
    app.cancel(&first).await;
    let run = app
        .wait_for_status(&dependent, "cancelled", Duration::from_secs(5))
        .await;
    assert_eq!(
        run["error"]["message"],
        format!("dependency {first} was cancelled")
    );
}

#[tokio::test]
async fn unknown_invalid_or_failed_dependencies_are_refused() {
    let app = TestApp::spawn().await;
    let failed = app
        .create(json!({"agent": "echo", "input": {"value": 1, "fail_permanently": true}}))
        .await;
    app.wait_for_status(&failed, "failed", Duration::from_secs(5))
        .await;
    let unknown = uuid::Uuid::now_v7().to_string();
    // a duplicate entry does not shift the positions named
    let ok = app
        .create(json!({"agent": "echo", "input": {"value": 2}}))
        .await;
    let response = app
        .post_run(json!({"agent": "gather", "depends_on": [unknown, ok, ok, failed]}))
        .await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    let errors: Vec<(&str, &str)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["field"].as_str().unwrap(), e["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        errors,
        [
            ("depends_on/0", "unknown_run"),
            ("depends_on/3", "dependency_failed")
        ]
    );
    let response = app
        .post_run(json!({"agent": "gather", "depends_on": ["nope"]}))
        .await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["field"], "depends_on/0");
    let runs = app.get_json("/v1/runs?agent=gather").await;
    assert_eq!(runs["runs"], json!([]), "refused runs leave nothing behind");
}

#[tokio::test]
async fn a_run_failed_by_its_dependency_cannot_be_retried_before_the_dependency() {
    let app = TestApp::spawn().await;
    let first = app
        .create(
            json!({"agent": "echo", "input": {"value": 1, "fail_permanently": true},
                       "run_at": later(1500)}),
        )
        .await;
    let dependent = app
        .create(json!({"agent": "gather", "depends_on": [first]}))
        .await;
    app.wait_for_status(&dependent, "failed", Duration::from_secs(5))
        .await;
    let response = app
        .client
        .post(app.url(&format!("/v1/runs/{dependent}/retry")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "dependency_failed");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("retry that run first")
    );
    assert_eq!(app.get_run(&dependent).await["status"], "failed");
}
