//! `PATCH /v1/runs/{id}`: a run that has not started gets another priority or run_at.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::TestApp;

async fn patch(app: &TestApp, id: &str, body: Value) -> (u16, Value) {
    let response = app
        .client
        .patch(app.url(&format!("/v1/runs/{id}")))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_run_scheduled_for_later_is_brought_forward_and_the_change_is_an_event() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"agent": "echo", "input": {"value": 1}, "run_at": "2999-01-01T00:00:00Z"}))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.get_run(&id).await["status"], "queued");
    let now = chrono::Utc::now();
    let (status, run) = patch(&app, &id, json!({"run_at": now})).await;
    assert_eq!(status, 200, "{run}");
    app.wait_for_status(&id, "succeeded", Duration::from_secs(10))
        .await;
    let events = app.events(&id).await;
    let changed = events.iter().find(|e| e["type"] == "changed").unwrap();
    assert_eq!(changed["actor"], "open");
    let at: chrono::DateTime<chrono::Utc> =
        changed["data"]["run_at"].as_str().unwrap().parse().unwrap();
    assert!((at - now).num_milliseconds().abs() <= 1, "{changed}");
}

#[tokio::test]
async fn a_started_finished_unknown_or_badly_changed_run_is_refused() {
    let app = TestApp::spawn().await;
    let later = app
        .create(json!({"agent": "echo", "input": {"value": 1},
                       "run_at": "2999-01-01T00:00:00Z", "deadline": "2999-06-01T00:00:00Z"}))
        .await;
    for (body, field) in [
        (json!({}), "priority"),
        (json!({"priority": 5000}), "priority"),
        (json!({"run_at": "2999-07-01T00:00:00Z"}), "run_at"),
    ] {
        let (status, problem) = patch(&app, &later, body.clone()).await;
        assert_eq!(status, 422, "{body}: {problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let (status, problem) = patch(&app, &later, json!({"priority": 1, "colour": "red"})).await;
    assert!(status == 400 || status == 422, "{status} {problem}");

    let running = app
        .create(json!({"agent": "patient", "input": {"ms": 2000}}))
        .await;
    app.wait_for_status(&running, "running", Duration::from_secs(10))
        .await;
    let (status, problem) = patch(&app, &running, json!({"priority": 3})).await;
    assert_eq!(status, 409, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("running"),
        "{problem}"
    );
    let done = app
        .create(json!({"agent": "echo", "input": {"value": 2}}))
        .await;
    app.wait_for_status(&done, "succeeded", Duration::from_secs(10))
        .await;
    assert_eq!(patch(&app, &done, json!({"priority": 3})).await.0, 409);
    let unknown = uuid::Uuid::now_v7().to_string();
    assert_eq!(patch(&app, &unknown, json!({"priority": 3})).await.0, 404);
    // nothing changed them
    assert_eq!(app.get_run(&later).await["priority"], 0);
}

#[tokio::test]
async fn a_run_queued_again_after_it_started_is_not_changed() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"agent": "echo", "input": {"fail_permanently": true}, "max_attempts": 1}))
        .await;
    app.wait_for_status(&id, "failed", Duration::from_secs(10))
        .await;
    // retried by hand while its agent is paused, so it stays queued: it started before
    let paused = app
        .client
        .post(app.url("/v1/agents/echo/pause"))
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), 200);
    let retried = app
        .client
        .post(app.url(&format!("/v1/runs/{id}/retry")))
        .send()
        .await
        .unwrap();
    assert_eq!(retried.status(), 200);
    assert_eq!(app.get_run(&id).await["status"], "queued");
    let (status, problem) = patch(&app, &id, json!({"priority": 3})).await;
    assert_eq!(status, 409, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("started before"),
        "{problem}"
    );
}
