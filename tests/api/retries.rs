use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use crate::helpers::{TestApp, event_types};

#[tokio::test]
async fn retryable_failures_are_retried_until_the_run_succeeds() {
    let app = TestApp::spawn().await;
    let id = app
        .create(
            json!({"agent": "echo", "input": {"value": 1, "fail_attempts": 2}, "max_attempts": 3}),
        )
        .await;
    let run = app
        .wait_for_status(&id, "succeeded", Duration::from_secs(5))
        .await;
    assert_eq!(run["attempt"], 3);
    assert!(run["error"].is_null());
    let events = app.events(&id).await;
    assert_eq!(
        event_types(&events),
        [
            "created",
            "started",
            "retry_scheduled",
            "started",
            "retry_scheduled",
            "started",
            "succeeded"
        ]
    );
    assert_eq!(events[2]["data"]["error"]["kind"], "agent_error");
    assert_eq!(
        events[2]["data"]["error"]["message"],
        "planned failure on attempt 1 of 2"
    );
    assert_eq!(events[4]["attempt"], 2);
}

#[tokio::test]
async fn a_run_fails_for_good_when_its_attempts_are_used_up() {
    let app = TestApp::spawn().await;
    let id = app
        .create(
            json!({"agent": "echo", "input": {"value": 1, "fail_attempts": 9}, "max_attempts": 2}),
        )
        .await;
    let run = app
        .wait_for_status(&id, "failed", Duration::from_secs(5))
        .await;
    assert_eq!(run["attempt"], 2);
    assert_eq!(run["error"]["kind"], "agent_error");
    assert_eq!(run["error"]["message"], "planned failure on attempt 2 of 9");
    let types = event_types(&app.events(&id).await);
    assert_eq!(
        types,
        ["created", "started", "retry_scheduled", "started", "failed"]
    );
}

#[tokio::test]
async fn a_permanent_error_fails_the_run_at_once() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"agent": "echo", "input": {"value": 1, "fail_permanently": true}}))
        .await;
    let run = app
        .wait_for_status(&id, "failed", Duration::from_secs(5))
        .await;
    assert_eq!(run["attempt"], 1);
    assert_eq!(run["error"]["message"], "failed permanently, as asked");
}

#[tokio::test]
async fn a_retrying_run_waits_out_its_backoff_holding_no_slot_and_survives_a_restart() {
    let app = TestApp::spawn_with(|c| c.worker.concurrency = 1).await;
    let id = app
        .create(
            json!({"agent": "echo", "input": {"value": 1, "fail_attempts": 1},
                       "backoff_base_ms": 60000, "backoff_cap_ms": 60000}),
        )
        .await;
    let before = chrono::Utc::now();
    let run = app
        .wait_for_status(&id, "retrying", Duration::from_secs(5))
        .await;
    let next: chrono::DateTime<chrono::Utc> =
        run["next_attempt_at"].as_str().unwrap().parse().unwrap();
    assert!(next >= before - chrono::Duration::seconds(1));
    assert!(next <= chrono::Utc::now() + chrono::Duration::seconds(60));
    assert!(
        run["worker_id"].is_null(),
        "a waiting retry is held by no worker"
    );
    // the only slot is free for other work meanwhile
    let other = app
        .create(json!({"agent": "echo", "input": {"value": 2}}))
        .await;
    app.wait_for_status(&other, "succeeded", Duration::from_secs(5))
        .await;

    let db = app.shutdown().await.unwrap();
    let app = TestApp::spawn_on(&db.url, |_| {}).await;
    let after = app.get_run(&id).await;
    assert_eq!(after["status"], "retrying");
    assert_eq!(after["next_attempt_at"], run["next_attempt_at"]);
    drop(db);
}

#[tokio::test]
async fn a_timed_out_attempt_fires_the_agents_token_and_counts_as_a_retryable_timeout() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"agent": "patient", "input": {"ms": 10000}, "timeout_ms": 100, "max_attempts": 2}))
        .await;
    let run = app
        .wait_for_status(&id, "failed", Duration::from_secs(5))
        .await;
    assert_eq!(run["attempt"], 2);
    assert_eq!(run["error"]["kind"], "timeout");
    assert_eq!(run["error"]["message"], "attempt timed out after 100 ms");
    assert_eq!(app.probe.cancelled.load(Ordering::SeqCst), 2);
    let events = app.events(&id).await;
    assert_eq!(events[2]["type"], "retry_scheduled");
    assert_eq!(events[2]["data"]["error"]["kind"], "timeout");
}

#[tokio::test]
async fn a_panicking_agent_is_recorded_and_retried_without_hurting_the_worker() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"agent": "panicker", "max_attempts": 2}))
        .await;
    let run = app
        .wait_for_status(&id, "failed", Duration::from_secs(5))
        .await;
    assert_eq!(run["error"]["kind"], "panicked");
    assert_eq!(
        run["error"]["message"],
        "agent panicked: the agent fell over"
    );
    assert_eq!(run["attempt"], 2);
    let after = app
        .create(json!({"agent": "echo", "input": {"value": 1}}))
        .await;
    app.wait_for_status(&after, "succeeded", Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn a_retried_attempt_resumes_from_the_saved_checkpoint_without_redoing_steps() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"agent": "stepper", "input": {"steps": 3}, "max_attempts": 5}))
        .await;
    let run = app
        .wait_for_status(&id, "succeeded", Duration::from_secs(5))
        .await;
    assert_eq!(run["attempt"], 3);
    assert_eq!(run["result"], json!({"done": 3, "resumed_from": 2}));
    assert_eq!(run["checkpoint"], json!({"done": 3}));
    assert_eq!(
        app.probe.steps_run.load(Ordering::SeqCst),
        3,
        "no step ran twice"
    );
    let types = event_types(&app.events(&id).await);
    assert_eq!(types.iter().filter(|t| *t == "checkpoint").count(), 3);
}

#[tokio::test]
async fn an_agent_s_text_holding_nul_characters_is_stored_or_refused_clearly() {
    // PostgreSQL keeps no U+0000: such a result failed every outcome write, and the run
    // ended as a lost worker once its attempts ran out
    let app = TestApp::spawn().await;
    let id = app.create(json!({"agent": "nul_writer"})).await;
    let run = app
        .wait_for_status(&id, "failed", Duration::from_secs(10))
        .await;
    assert_eq!(run["attempt"], 1, "{run:#}");
    assert_eq!(run["error"]["kind"], "agent_error");
    assert_eq!(
        run["error"]["message"],
        "the result holds a NUL character (U+0000) at `text`, which the database cannot store"
    );
    // free text keeps its words, the NUL replaced
    let events = app.events(&id).await;
    let data = |kind: &str| {
        events
            .iter()
            .find(|e| e["type"] == kind)
            .map(|e| e["data"].clone())
            .unwrap_or_else(|| panic!("no {kind} event: {events:?}"))
    };
    assert_eq!(data("progress")["message"], "half\u{FFFD}way");
    assert_eq!(data("log")["message"], "a\u{FFFD}b");
    let id = app
        .create(json!({"agent": "nul_writer", "input": {"fail": true}}))
        .await;
    let run = app
        .wait_for_status(&id, "failed", Duration::from_secs(10))
        .await;
    assert_eq!(
        run["error"]["message"],
        "broke\u{FFFD}here; checkpoint: checkpoint holds a NUL character (U+0000) at `note`, \
         which the database cannot store"
    );
}
