//! `deadline` (the whole run) and `expires_at` (the start).

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;

use crate::helpers::TestApp;

/// An app whose only worker slot is taken for 3 s, so new runs wait in the queue.
async fn busy_app() -> TestApp {
    let app = TestApp::spawn_with(|c| c.worker.concurrency = 1).await;
    let blocker = app
        .create(json!({"agent": "patient", "input": {"ms": 3000}}))
        .await;
    app.wait_for_status(&blocker, "running", Duration::from_secs(5))
        .await;
    app
}

fn in_ms(ms: i64) -> chrono::DateTime<Utc> {
    Utc::now() + chrono::Duration::milliseconds(ms)
}

#[tokio::test]
async fn no_retry_is_scheduled_to_start_after_the_deadline() {
    let app = TestApp::spawn().await;
    let deadline = in_ms(2000);
    let id = app
        .create(
            json!({"agent": "echo", "input": {"value": 1, "fail_attempts": 5},
                       "max_attempts": 5, "backoff_base_ms": 60000, "backoff_cap_ms": 60000,
                       "deadline": deadline}),
        )
        .await;
    let run = app
        .wait_for_status(&id, "failed", Duration::from_secs(5))
        .await;
    assert_eq!(run["error"]["kind"], "deadline_exceeded");
    // full jitter draws each backoff from 0-60 s: mostly past the deadline, so the run
    // fails after one attempt; sometimes (about 1 in 30) early enough to retry first.
    // Either way, no retry is scheduled, and no attempt starts, after the deadline.
    let events = app.events(&id).await;
    for e in &events {
        let at: chrono::DateTime<Utc> = match e["type"].as_str().unwrap() {
            "retry_scheduled" => e["data"]["next_attempt_at"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap(),
            "started" => e["at"].as_str().unwrap().parse().unwrap(),
            _ => continue,
        };
        assert!(
            at < deadline,
            "{} after the deadline: {events:?}",
            e["type"]
        );
    }
    let last = &events[events.len() - 1];
    assert_eq!(last["type"], "failed", "{events:?}");
}

#[tokio::test]
async fn a_running_attempt_is_stopped_at_the_deadline() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"agent": "patient", "input": {"ms": 30000}, "deadline": in_ms(4000)}))
        .await;
    // room to start first, even on a loaded machine with Redis delivery's pickup
    app.wait_for_status(&id, "running", Duration::from_secs(4))
        .await;
    let run = app
        .wait_for_status(&id, "failed", Duration::from_secs(8))
        .await;
    assert_eq!(run["error"]["kind"], "deadline_exceeded");
    assert_eq!(
        app.probe.cancelled.load(Ordering::SeqCst),
        1,
        "the agent was told to stop"
    );
}

#[tokio::test]
async fn a_due_run_that_cannot_start_before_its_deadline_fails() {
    // the only slot is busy, so the run waits in the queue past its deadline
    let app = busy_app().await;
    let id = app
        .create(json!({"agent": "echo", "input": {"value": 1}, "deadline": in_ms(300)}))
        .await;
    let run = app
        .wait_for_status(&id, "failed", Duration::from_secs(5))
        .await;
    assert_eq!(run["error"]["kind"], "deadline_exceeded");
    assert_eq!(run["attempt"], 0);
    assert!(run["started_at"].is_null());
}

#[tokio::test]
async fn a_run_not_started_before_it_expires_fails_as_expired() {
    let app = busy_app().await;
    let id = app
        .create(json!({"agent": "echo", "input": {"value": 1}, "expires_at": in_ms(300)}))
        .await;
    let run = app
        .wait_for_status(&id, "failed", Duration::from_secs(5))
        .await;
    assert_eq!(run["error"]["kind"], "expired");
    let events = app.events(&id).await;
    assert_eq!(events.last().unwrap()["data"]["error"]["kind"], "expired");
}

#[tokio::test]
async fn a_run_that_started_in_time_is_not_expired_by_a_retry() {
    let app = TestApp::spawn().await;
    let id = app
        .create(
            json!({"agent": "echo", "input": {"value": 1, "fail_attempts": 1},
                       "backoff_base_ms": 8000, "backoff_cap_ms": 8000, "expires_at": in_ms(3000)}),
        )
        .await;
    // it must start within 3 s (room for a loaded machine); its retry comes 4–8 s after
    // the first attempt, past expires_at
    let run = app
        .wait_for_status(&id, "succeeded", Duration::from_secs(15))
        .await;
    assert_eq!(run["attempt"], 2);
}

#[tokio::test]
async fn time_limits_must_lie_after_now_and_after_run_at() {
    let app = TestApp::spawn().await;
    let response = app
        .post_run(
            json!({"agent": "echo", "input": {"value": 1}, "deadline": in_ms(-1000),
                         "run_at": in_ms(5000), "expires_at": in_ms(1000)}),
        )
        .await;
    assert_eq!(response.status(), 422);
    let body: serde_json::Value = response.json().await.unwrap();
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["deadline", "expires_at"]);
}

#[tokio::test]
async fn a_deadline_already_past_is_refused_even_with_an_earlier_run_at() {
    let app = TestApp::spawn().await;
    let response = app
        .post_run(json!({"agent": "echo", "input": {"value": 1},
                         "run_at": in_ms(-60_000), "deadline": in_ms(-1000)}))
        .await;
    assert_eq!(response.status(), 422);
}
