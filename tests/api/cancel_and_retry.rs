//! Cancelling runs and retrying failed ones.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, event_types};

async fn post(app: &TestApp, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = app.client.post(app.url(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn cancelling_a_queued_run_ends_it_at_once_and_it_never_runs() {
    let app = TestApp::spawn().await;
    let later = chrono::Utc::now() + chrono::Duration::milliseconds(300);
    let id = app
        .create(json!({"agent": "patient", "input": {"ms": 1}, "run_at": later}))
        .await;
    let (status, run) = post(&app, &format!("/v1/runs/{id}/cancel"), None).await;
    assert_eq!(status, 200);
    assert_eq!(run["status"], "cancelled");
    assert_eq!(run["error"]["kind"], "cancelled");
    assert!(run["finished_at"].is_string());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(app.get_run(&id).await["status"], "cancelled");
    assert_eq!(app.probe.started.load(Ordering::SeqCst), 0);
    assert_eq!(
        event_types(&app.events(&id).await),
        ["created", "cancelled"]
    );
}

#[tokio::test]
async fn cancelling_a_retrying_run_stops_its_retries() {
    let app = TestApp::spawn().await;
    let id = app
        .create(
            json!({"agent": "echo", "input": {"value": 1, "fail_attempts": 1},
                       "backoff_base_ms": 60000, "backoff_cap_ms": 60000}),
        )
        .await;
    app.wait_for_status(&id, "retrying", Duration::from_secs(5))
        .await;
    let (status, run) = post(&app, &format!("/v1/runs/{id}/cancel"), None).await;
    assert_eq!((status, run["status"].as_str()), (200, Some("cancelled")));
    assert!(run["next_attempt_at"].is_null());
}

#[tokio::test]
async fn cancelling_a_running_run_stops_its_agent_within_a_second() {
    cancel_stops_the_agent_within_a_second(Duration::ZERO).await;
}

#[tokio::test]
async fn cancelling_a_run_covered_by_its_workers_lease_stops_its_agent_within_a_second() {
    // running for a while, the run is covered by its worker's lease (renewed every 500 ms at
    // most): the cancel reaches the worker as a notice read at its next renewal
    cancel_stops_the_agent_within_a_second(Duration::from_millis(1500)).await;
}

async fn cancel_stops_the_agent_within_a_second(running_for: Duration) {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"agent": "patient", "input": {"ms": 30000}}))
        .await;
    app.wait_for_status(&id, "running", Duration::from_secs(5))
        .await;
    tokio::time::sleep(running_for).await;
    // The API does not signal the worker: the worker learns it at its next lease renewal,
    // exactly as a worker in another process would.
    let asked = std::time::Instant::now();
    let (status, run) = post(&app, &format!("/v1/runs/{id}/cancel"), None).await;
    assert_eq!((status, run["status"].as_str()), (200, Some("cancelled")));
    while app.probe.cancelled.load(Ordering::SeqCst) == 0 {
        // within a lease renewal period (500 ms) by design; the bound here only allows for
        // a loaded test machine
        assert!(
            asked.elapsed() < Duration::from_secs(3),
            "the agent was not told to stop"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let run = app.get_run(&id).await;
    assert_eq!(
        run["status"], "cancelled",
        "the stopped attempt cannot overwrite the cancel"
    );
    let types = event_types(&app.events(&id).await);
    assert_eq!(types, ["created", "started", "cancelled"]);
}

#[tokio::test]
async fn cancelling_a_finished_or_unknown_run_is_refused() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"agent": "echo", "input": {"value": 1}}))
        .await;
    app.wait_for_status(&id, "succeeded", Duration::from_secs(5))
        .await;
    let (status, body) = post(&app, &format!("/v1/runs/{id}/cancel"), None).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("run_finished")));
    assert_eq!(body["detail"], "cannot cancel a run that is succeeded");
    let missing = uuid::Uuid::now_v7();
    let (status, _) = post(&app, &format!("/v1/runs/{missing}/cancel"), None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn retrying_a_failed_run_requeues_it_with_attempts_reset_and_history_kept() {
    let app = TestApp::spawn().await;
    app.probe.failing.store(true, Ordering::SeqCst);
    let id = app.create(json!({"agent": "switch"})).await;
    app.wait_for_status(&id, "failed", Duration::from_secs(5))
        .await;
    app.probe.failing.store(false, Ordering::SeqCst);
    let (status, run) = post(&app, &format!("/v1/runs/{id}/retry"), None).await;
    assert_eq!(status, 200);
    // an idle worker may claim it in the very transaction that requeued it
    assert!(["queued", "running", "succeeded"].contains(&run["status"].as_str().unwrap()));
    assert!(run["attempt"].as_u64().unwrap() <= 1, "attempts were reset");
    assert!(run["error"].is_null());
    let run = app
        .wait_for_status(&id, "succeeded", Duration::from_secs(5))
        .await;
    assert_eq!(run["attempt"], 1);
    let types = event_types(&app.events(&id).await);
    assert_eq!(
        types,
        [
            "created",
            "started",
            "failed",
            "requeued",
            "started",
            "succeeded"
        ]
    );
}

#[tokio::test]
async fn retrying_a_run_that_did_not_fail_is_refused() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"agent": "echo", "input": {"value": 1}}))
        .await;
    app.wait_for_status(&id, "succeeded", Duration::from_secs(5))
        .await;
    let (status, body) = post(&app, &format!("/v1/runs/{id}/retry"), None).await;
    assert_eq!(status, 409);
    assert_eq!(
        body["detail"],
        "cannot retry a run that is succeeded (only failed runs can be retried)"
    );
}

#[tokio::test]
async fn bulk_retry_requeues_every_failed_run_matching_the_filter() {
    let app = TestApp::spawn().await;
    app.probe.failing.store(true, Ordering::SeqCst);
    let mut switched = Vec::new();
    for _ in 0..3 {
        switched.push(app.create(json!({"agent": "switch"})).await);
    }
    let echo = app
        .create(json!({"agent": "echo", "input": {"value": 1, "fail_permanently": true}}))
        .await;
    for id in switched.iter().chain([&echo]) {
        app.wait_for_status(id, "failed", Duration::from_secs(5))
            .await;
    }
    app.probe.failing.store(false, Ordering::SeqCst);
    let (status, body) = post(&app, "/v1/runs/retry", Some(json!({"agent": "switch"}))).await;
    assert_eq!((status, body["requeued"].as_u64()), (200, Some(3)));
    for id in &switched {
        app.wait_for_status(id, "succeeded", Duration::from_secs(5))
            .await;
    }
    assert_eq!(app.get_run(&echo).await["status"], "failed");
    let (status, body) = post(&app, "/v1/runs/retry", Some(json!({"colour": "red"}))).await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (400, Some("colour"))
    );
}

#[tokio::test]
async fn bulk_retry_goes_on_past_a_chunk_of_runs_it_cannot_retry() {
    // in chunks of 2: the first failed runs by id are a dependency and its dependent, which
    // cannot be retried while the dependency is failed; the chunking stopped there
    let app = TestApp::spawn().await;
    // `switch` fails while the probe says so: once requeued, runs succeed and are not
    // failed again, and so counted again, while the chunks go on
    app.probe.failing.store(true, Ordering::SeqCst);
    let failing = json!({"agent": "switch", "max_attempts": 1});
    let mut first_body = failing.clone();
    // due a little later, so its dependent can still be created
    first_body["run_at"] = json!(chrono::Utc::now() + chrono::Duration::milliseconds(300));
    let first = app.create(first_body).await;
    let dependent = app
        .create(json!({"agent": "echo", "input": {"value": 2}, "depends_on": [first]}))
        .await;
    app.wait_for_status(&dependent, "failed", Duration::from_secs(5))
        .await;
    let mut later = Vec::new();
    for _ in 0..3 {
        later.push(app.create(failing.clone()).await);
    }
    for id in &later {
        app.wait_for_status(id, "failed", Duration::from_secs(5))
            .await;
    }
    app.probe.failing.store(false, Ordering::SeqCst);
    let store = agentq::store::Store::connect(&app.db_url, &Default::default())
        .await
        .unwrap();
    let filter = agentq::store::RequeueFilter {
        limit: 2,
        ..Default::default()
    };
    // the dependency and a later run, then the dependent (its dependency queued again by
    // then) and another, then the last
    assert_eq!(store.requeue_failed(filter, None).await.unwrap(), 5);
    for id in later.iter().chain([&first, &dependent]) {
        let events = event_types(&app.events(id).await);
        assert!(events.contains(&"requeued".to_owned()), "{id}: {events:?}");
    }
}

#[tokio::test]
async fn each_kind_of_conflict_has_its_own_code() {
    let app = TestApp::spawn().await;
    let done = app
        .create(json!({"agent": "echo", "input": {"value": 1}}))
        .await;
    app.wait_for_status(&done, "succeeded", Duration::from_secs(5))
        .await;
    let (status, body) = post(&app, &format!("/v1/runs/{done}/retry"), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("run_not_failed")),
        "{body}"
    );
    let running = app
        .create(json!({"agent": "patient", "input": {"ms": 10_000}}))
        .await;
    app.wait_for_status(&running, "running", Duration::from_secs(5))
        .await;
    let changed = app
        .client
        .patch(app.url(&format!("/v1/runs/{running}")))
        .json(&json!({"priority": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 409);
    let body: Value = changed.json().await.unwrap();
    assert_eq!(body["code"], "run_started", "{body}");
    let changed = app
        .client
        .patch(app.url(&format!("/v1/runs/{done}")))
        .json(&json!({"priority": 5}))
        .send()
        .await
        .unwrap();
    let body: Value = changed.json().await.unwrap();
    assert_eq!(body["code"], "run_finished", "{body}");
    assert_eq!(app.cancel(&running).await.status(), 200);
}
