//! `Idempotency-Key` on `POST /v1/runs`: retries are safe.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::TestApp;

async fn post_keyed(app: &TestApp, key: &str, body: &str) -> (u16, Value) {
    let response = app
        .client
        .post(app.url("/v1/runs"))
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

const BODY: &str = r#"{"agent": "echo", "input": {"value": 1, "delay_ms": 0}}"#;
/// The same JSON as `BODY`, laid out differently.
const SAME_BODY: &str = r#"{"input":{"delay_ms":0,"value":1},"agent":"echo"}"#;

async fn run_count(app: &TestApp) -> usize {
    app.get_json("/v1/runs").await["runs"]
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test]
async fn the_same_key_and_body_return_the_run_already_created() {
    let app = TestApp::spawn().await;
    let (status, first) = post_keyed(&app, "order-42", BODY).await;
    assert_eq!(status, 202);
    let (status, again) = post_keyed(&app, "order-42", SAME_BODY).await;
    assert_eq!(status, 200);
    assert_eq!(again["id"], first["id"]);
    assert_eq!(run_count(&app).await, 1);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_a_conflict() {
    let app = TestApp::spawn().await;
    post_keyed(&app, "order-43", BODY).await;
    let other = r#"{"agent": "echo", "input": {"value": 2}}"#;
    let (status, body) = post_keyed(&app, "order-43", other).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("idempotency_key_reused"))
    );
    assert_eq!(run_count(&app).await, 1);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_create_one_run() {
    let app = TestApp::spawn().await;
    let answers = futures::future::join_all((0..12).map(|_| post_keyed(&app, "burst", BODY))).await;
    let created = answers.iter().filter(|(s, _)| *s == 202).count();
    assert_eq!(created, 1, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|(s, r)| (*s == 200 || *s == 202) && r["id"] == answers[0].1["id"])
    );
    assert_eq!(run_count(&app).await, 1);
}

#[tokio::test]
async fn requests_without_a_key_always_create_runs() {
    let app = TestApp::spawn().await;
    for _ in 0..2 {
        let response = app
            .post_run(json!({"agent": "echo", "input": {"value": 1}}))
            .await;
        assert_eq!(response.status(), 202);
    }
    assert_eq!(run_count(&app).await, 2);
}

#[tokio::test]
async fn an_invalid_key_is_rejected_naming_the_header() {
    let app = TestApp::spawn().await;
    for key in ["x".repeat(256), "with space".to_owned()] {
        let (status, body) = post_keyed(&app, &key, BODY).await;
        assert_eq!(status, 422, "{key}");
        assert_eq!(body["errors"][0]["field"], "Idempotency-Key");
    }
    assert_eq!(run_count(&app).await, 0);
}

#[tokio::test]
async fn an_expired_key_can_name_a_new_run() {
    let app =
        TestApp::spawn_with(|c| c.defaults.idempotency_ttl = Duration::from_millis(200)).await;
    let (_, first) = post_keyed(&app, "short-lived", BODY).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let other = r#"{"agent": "echo", "input": {"value": 3}}"#;
    let (status, second) = post_keyed(&app, "short-lived", other).await;
    assert_eq!(status, 202);
    assert_ne!(second["id"], first["id"]);
}

#[tokio::test]
async fn a_refused_request_does_not_take_its_key() {
    let app = TestApp::spawn().await;
    let unknown = uuid::Uuid::now_v7();
    let bad =
        format!(r#"{{"agent": "echo", "input": {{"value": 1}}, "depends_on": ["{unknown}"]}}"#);
    // sent together, so the writer takes both in one batch
    let (refused, accepted) = tokio::join!(
        post_keyed(&app, "retry-me", &bad),
        post_keyed(&app, "retry-me", BODY)
    );
    // whichever goes first, the valid request creates its run: a refused one reserves no
    // key (first, it is refused for its dependency; second, it meets the taken key)
    assert!(matches!(refused.0, 422 | 409), "{refused:?}");
    assert_eq!(accepted.0, 202, "{accepted:?}");
    let id = accepted.1["id"].as_str().unwrap();
    assert!(
        app.get_run(id).await["status"].is_string(),
        "the run exists"
    );
}
