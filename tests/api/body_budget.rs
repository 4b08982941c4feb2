//! What request bodies may cost: a body with too many JSON values, or nested too deep, is
//! refused before it is parsed, and bodies in flight share `--max-inflight-bytes`, past
//! which a request is answered `503 too_busy`.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::helpers::TestApp;

#[tokio::test]
async fn a_body_with_too_many_values_or_nested_too_deep_is_refused_before_it_is_parsed() {
    let app = TestApp::spawn_with(|c| c.http.max_body_values = 1000).await;
    let keys: serde_json::Map<String, Value> =
        (0..1000).map(|i| (format!("k{i}"), json!(i))).collect();
    let response = app
        .post_run(json!({"agent": "echo", "input": {"value": keys}}))
        .await;
    assert_eq!(response.status(), 413);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "payload_too_large", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("1000 JSON values"),
        "{problem}"
    );
    // within the count it is taken
    let keys: serde_json::Map<String, Value> =
        (0..900).map(|i| (format!("k{i}"), json!(i))).collect();
    let response = app
        .post_run(json!({"agent": "echo", "input": {"value": keys}}))
        .await;
    assert_eq!(response.status(), 202);
    let mut deep = json!(1);
    for _ in 0..70 {
        deep = json!([deep]);
    }
    let response = app
        .post_run(json!({"agent": "echo", "input": {"value": deep}}))
        .await;
    assert_eq!(response.status(), 413);
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("deeper than 64"),
        "{problem}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn bodies_in_flight_share_a_budget_past_which_requests_are_answered_503_too_busy() {
    let app = TestApp::spawn_with(|c| {
        // a quarter of the budget reads bodies: 64 KiB
        c.http.body_limit = 64 * 1024;
        c.http.max_inflight_bytes = 256 * 1024;
    })
    .await;
    // a slow upload holds most of the budget while its body is read
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(
        b"POST /v1/runs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n{\"agent\": \"echo\", ",
    )
    .await
    .unwrap();
    let body = json!({"agent": "echo", "input": {"value": "x".repeat(10_000)}});
    // (once the server has taken the slow upload's share)
    let response = crate::support::eventually::eventually(
        Duration::from_secs(5),
        "a POST is refused while the slow upload holds the budget",
        || async {
            let response = app.post_run(body.clone()).await;
            match response.status().as_u16() {
                503 => Ok(response),
                s => Err(s),
            }
        },
    )
    .await;
    assert_eq!(response.headers()["retry-after"], "1");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "too_busy", "{problem}");
    // a request without a body is not held up
    let health = app.client.get(app.url("/v1/runs")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    // once the slow upload ends, its share comes back
    drop(slow);
    let accepted = crate::support::eventually::eventually(
        Duration::from_secs(5),
        "the POST is taken again",
        || async {
            let response = app.post_run(body.clone()).await;
            match response.status().as_u16() {
                202 => Ok(()),
                s => Err(s),
            }
        },
    )
    .await;
    let () = accepted;
    app.shutdown().await;
}
