use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::json;

use crate::helpers::TestApp;

async fn upstream() -> String {
    let app = Router::new()
        .route(
            "/ok",
            get(|| async { axum::Json(json!({"hello": "world"})) }),
        )
        .route("/text", get(|| async { "plain words" }))
        .route("/big", get(|| async { "y".repeat(300 * 1024) }))
        .route(
            "/broken",
            get(|| async { (StatusCode::BAD_GATEWAY, "down") }),
        )
        .route("/missing", get(|| async { (StatusCode::NOT_FOUND, "no") }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn http_agent_returns_status_headers_and_a_json_or_text_body() {
    let app = TestApp::spawn().await;
    let base = upstream().await;
    let json_run = app
        .create(json!({"agent": "http", "input": {"url": format!("{base}/ok")}}))
        .await;
    let text_run = app
        .create(json!({"agent": "http", "input": {"url": format!("{base}/text")}}))
        .await;
    let big_run = app
        .create(json!({"agent": "http", "input": {"url": format!("{base}/big")}}))
        .await;
    let run = app
        .wait_for_status(&json_run, "succeeded", Duration::from_secs(5))
        .await;
    assert_eq!(run["result"]["status"], 200);
    assert_eq!(run["result"]["body"], json!({"hello": "world"}));
    assert_eq!(run["result"]["headers"]["content-type"], "application/json");
    let run = app
        .wait_for_status(&text_run, "succeeded", Duration::from_secs(5))
        .await;
    assert_eq!(run["result"]["body"], "plain words");
    let run = app
        .wait_for_status(&big_run, "succeeded", Duration::from_secs(5))
        .await;
    assert_eq!(run["result"]["truncated"], true);
    assert_eq!(run["result"]["body"].as_str().unwrap().len(), 256 * 1024);
}

#[tokio::test]
async fn http_agent_retries_5xx_and_network_errors_but_not_4xx() {
    let app = TestApp::spawn().await;
    let base = upstream().await;
    let broken = app
        .create(
            json!({"agent": "http", "input": {"url": format!("{base}/broken")}, "max_attempts": 2}),
        )
        .await;
    let missing = app
        .create(json!({"agent": "http", "input": {"url": format!("{base}/missing")}, "max_attempts": 2}))
        .await;
    let refused = app
        .create(
            json!({"agent": "http", "input": {"url": "http://127.0.0.1:9/"}, "max_attempts": 2}),
        )
        .await;
    let run = app
        .wait_for_status(&broken, "failed", Duration::from_secs(5))
        .await;
    assert_eq!(run["attempt"], 2);
    assert!(run["error"]["message"].as_str().unwrap().contains("502"));
    let run = app
        .wait_for_status(&missing, "failed", Duration::from_secs(5))
        .await;
    assert_eq!(run["attempt"], 1);
    assert!(run["error"]["message"].as_str().unwrap().contains("404"));
    let run = app
        .wait_for_status(&refused, "failed", Duration::from_secs(5))
        .await;
    assert_eq!(run["attempt"], 2);
}
