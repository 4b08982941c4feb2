//! Per-tenant request rate and active-runs cap (429 with Retry-After), and the result
//! size cap.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::TestApp;
use crate::support::eventually::eventually;

#[tokio::test]
async fn a_tenant_over_its_request_rate_gets_429_with_retry_after_then_gets_through() {
    let app = TestApp::spawn_with(|c| c.http.tenant_rate_limit = Some(5)).await;
    let mut limited = None;
    for _ in 0..30 {
        let response = app.client.get(app.url("/v1/agents")).send().await.unwrap();
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
        assert_eq!(response.status(), 200);
    }
    let response = limited.expect("30 requests at once exceed 5 per second");
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "rate_limited");
    assert_eq!(problem["status"], 429);
    // health is never limited
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let again = app.client.get(app.url("/v1/agents")).send().await.unwrap();
    assert_eq!(again.status(), 200);
}

#[tokio::test]
async fn a_tenant_at_its_cap_of_active_runs_cannot_add_more_until_some_finish() {
    let app = TestApp::spawn_with(|c| c.http.tenant_max_active_runs = Some(2)).await;
    let first = app.create(json!({"agent": "waiter"})).await;
    app.create(json!({"agent": "waiter"})).await;
    let refused = app.post_run(json!({"agent": "waiter"})).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], "too_many_active_runs");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("most allowed is 2")
    );
    // one finishes: within about a second a new run is accepted
    let cancelled = app.cancel(&first).await;
    assert_eq!(cancelled.status(), 200);
    eventually(Duration::from_secs(5), "the cap frees up", || async {
        let status = app.post_run(json!({"agent": "waiter"})).await.status();
        assert!(status == 202 || status == 429, "{status}");
        if status == 202 { Ok(()) } else { Err(status) }
    })
    .await;
}

#[tokio::test]
async fn a_retry_with_its_idempotency_key_gets_its_run_even_at_the_cap() {
    let app = TestApp::spawn_with(|c| c.http.tenant_max_active_runs = Some(1)).await;
    let post = |key: &'static str, body: Value| {
        let request = app
            .client
            .post(app.url("/v1/runs"))
            .header("idempotency-key", key)
            .json(&body);
        async move { request.send().await.unwrap() }
    };
    let first = post("k1", json!({"agent": "waiter"})).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    // the tenant is at its cap: the same request again is answered with its run
    let again = post("k1", json!({"agent": "waiter"})).await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    // but the key with another body, or a new key, is refused by the cap
    let other_body = post("k1", json!({"agent": "waiter", "priority": 1})).await;
    assert_eq!(other_body.status(), 429);
    assert_eq!(post("k2", json!({"agent": "waiter"})).await.status(), 429);
}

#[tokio::test]
async fn a_result_over_the_size_cap_fails_the_run_for_good_and_says_why() {
    // the test config caps results at 512 KiB
    let app = TestApp::spawn().await;
    let big = "x".repeat(600 * 1024);
    let id = app
        .create(json!({"agent": "echo", "input": {"value": big}}))
        .await;
    let run = app
        .wait_for_status(&id, "failed", Duration::from_secs(5))
        .await;
    assert_eq!(run["attempt"], 1, "not retried: {run:#}");
    let message = run["error"]["message"].as_str().unwrap();
    assert!(message.contains("--max-result-bytes"), "{message}");
    assert!(run["result"].is_null());
}

#[tokio::test]
async fn concurrent_creates_never_pass_the_cap_of_active_runs_together() {
    let app = TestApp::spawn_with(|c| c.http.tenant_max_active_runs = Some(5)).await;
    let posts = (0..20).map(|_| app.post_run(json!({"agent": "waiter"})));
    let statuses: Vec<u16> = futures::future::join_all(posts)
        .await
        .into_iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 202).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        15,
        "{statuses:?}"
    );
}
