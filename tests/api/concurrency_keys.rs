//! Concurrency keys: at most `concurrency_limit` runs of one key hold it at once, over
//! every process and backend, while other keys' runs go on; and what a run finding its
//! key full does (`queue`, `reject`, `cancel_running`, `drop_queued`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::agent_limits::max_overlap;
use crate::helpers::TestApp;

fn keyed(key: &str, ms: u64, policy: &str) -> Value {
    json!({"agent": "patient", "input": {"ms": ms}, "concurrency_key": key,
           "concurrency_policy": policy})
}

fn at(event: &Value) -> DateTime<Utc> {
    event["at"].as_str().unwrap().parse().unwrap()
}

async fn first_event(app: &TestApp, id: &str, kind: &str) -> Option<Value> {
    app.events(id).await.into_iter().find(|e| e["type"] == kind)
}

async fn of_key(app: &TestApp, key: &str, status: &str) -> Vec<Value> {
    app.get_json(&format!("/v1/runs?concurrency_key={key}&status={status}"))
        .await["runs"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_never_run_two_runs_of_one_key_at_once_while_other_keys_flow() {
    let first = TestApp::spawn().await;
    let second = TestApp::spawn_on(&first.db_url, |_| {}).await;
    let mut busy = Vec::new();
    for _ in 0..4 {
        busy.push(first.create(keyed("user:1", 300, "queue")).await);
    }
    // the key's later runs wait their turn, blocked
    let waiting = first.get_run(&busy[3]).await;
    assert_eq!(waiting["status"], "blocked", "{waiting}");
    assert_eq!(waiting["waiting_for_key"], true, "{waiting}");
    assert_eq!(waiting["concurrency_key"], "user:1");
    assert_eq!(waiting["concurrency_limit"], 1);
    // other keys are not held up by the busy one
    let mut others = Vec::new();
    for i in 0..12 {
        let app = if i % 2 == 0 { &first } else { &second };
        others.push(
            app.create(keyed(&format!("user:{}", i + 2), 10, "queue"))
                .await,
        );
    }
    for id in &others {
        first
            .wait_for_status(id, "succeeded", Duration::from_secs(10))
            .await;
    }
    let last = first.get_run(&busy[3]).await;
    assert_ne!(
        last["status"], "succeeded",
        "the others waited behind user:1"
    );
    let mut started = Vec::new();
    for id in &busy {
        first
            .wait_for_status(id, "succeeded", Duration::from_secs(20))
            .await;
        started.push(at(&first_event(&first, id, "started").await.unwrap()));
    }
    assert_eq!(
        max_overlap(&first, &busy).await,
        1,
        "runs of user:1 overlapped"
    );
    assert!(
        started.windows(2).all(|w| w[0] < w[1]),
        "let in oldest first: {started:?}"
    );
    // each later run was let in by an `unblocked` event naming its key
    let unblocked = first_event(&first, &busy[1], "unblocked").await.unwrap();
    assert_eq!(
        unblocked["data"]["concurrency_key"], "user:1",
        "{unblocked}"
    );
    let listed = of_key(&first, "user:1", "succeeded").await;
    assert_eq!(listed.len(), 4);
    second.shutdown().await;
}

#[tokio::test]
async fn a_limit_above_one_lets_that_many_in_and_keys_are_per_agent() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        let mut body = keyed("team:7", 250, "queue");
        body["concurrency_limit"] = json!(2);
        ids.push(app.create(body).await);
    }
    // the same key on another agent is another key
    let echo = app
        .create(json!({"agent": "echo", "input": {"value": 1}, "concurrency_key": "team:7"}))
        .await;
    app.wait_for_status(&echo, "succeeded", Duration::from_secs(5))
        .await;
    for id in &ids {
        app.wait_for_status(id, "succeeded", Duration::from_secs(20))
            .await;
    }
    assert_eq!(
        max_overlap(&app, &ids).await,
        2,
        "two at once, no more, no fewer"
    );
}

#[tokio::test]
async fn reject_refuses_a_run_while_its_key_is_full_and_takes_one_after() {
    let app = TestApp::spawn().await;
    let first = app.create(keyed("chat:1", 10_000, "reject")).await;
    let refused = app.post_run(keyed("chat:1", 10, "reject")).await;
    assert_eq!(refused.status(), 409);
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], "concurrency_key_busy", "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("chat:1"),
        "{problem}"
    );
    // nothing was stored
    assert_eq!(
        app.get_json("/v1/runs?concurrency_key=chat:1").await["runs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(app.cancel(&first).await.status(), 200);
    let next = app.create(keyed("chat:1", 10, "reject")).await;
    app.wait_for_status(&next, "succeeded", Duration::from_secs(10))
        .await;
}

#[tokio::test]
async fn cancel_running_leaves_exactly_one_run_of_the_key_running() {
    let app = TestApp::spawn().await;
    let mut previous = app
        .create(keyed("thread:9", 30_000, "cancel_running"))
        .await;
    app.wait_for_status(&previous, "running", Duration::from_secs(10))
        .await;
    for _ in 0..3 {
        let next = app
            .create(keyed("thread:9", 30_000, "cancel_running"))
            .await;
        let cancelled = app.get_run(&previous).await;
        assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
        let event = first_event(&app, &previous, "cancelled").await.unwrap();
        assert_eq!(event["data"]["reason"], "concurrency_key", "{event}");
        assert_eq!(event["data"]["policy"], "cancel_running");
        assert_eq!(event["data"]["by_run_id"], next.as_str());
        app.wait_for_status(&next, "running", Duration::from_secs(10))
            .await;
        let running = of_key(&app, "thread:9", "running").await;
        assert_eq!(running.len(), 1, "{running:?}");
        assert_eq!(running[0]["id"], next.as_str());
        previous = next;
    }
    assert_eq!(app.cancel(&previous).await.status(), 200);
}

#[tokio::test]
async fn drop_queued_keeps_only_the_newest_waiting_run() {
    let app = TestApp::spawn().await;
    let running = app.create(keyed("doc:3", 1_000, "drop_queued")).await;
    app.wait_for_status(&running, "running", Duration::from_secs(10))
        .await;
    let mut waiting = Vec::new();
    for _ in 0..3 {
        waiting.push(app.create(keyed("doc:3", 10, "drop_queued")).await);
    }
    for dropped in &waiting[..2] {
        let run = app.get_run(dropped).await;
        assert_eq!(run["status"], "cancelled", "{run}");
        let event = first_event(&app, dropped, "cancelled").await.unwrap();
        assert_eq!(event["data"]["policy"], "drop_queued", "{event}");
    }
    let newest = app.get_run(&waiting[2]).await;
    assert_eq!(newest["status"], "blocked", "{newest}");
    // the running one is left to finish; then the newest runs
    app.wait_for_status(&running, "succeeded", Duration::from_secs(10))
        .await;
    app.wait_for_status(&waiting[2], "succeeded", Duration::from_secs(10))
        .await;
}

#[tokio::test]
async fn a_batch_is_checked_against_its_keys_as_a_whole() {
    let app = TestApp::spawn().await;
    let post = |body: Value| {
        app.client
            .post(app.url("/v1/runs/batch"))
            .json(&body)
            .send()
    };
    // three runs of one key in one batch: one holds it, two wait, in order
    let response = post(json!({"runs": [
        keyed("batch:1", 150, "queue"), keyed("batch:1", 150, "queue"), keyed("batch:1", 150, "queue"),
    ]}))
    .await
    .unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    let ids: Vec<String> = body["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    let statuses: Vec<&str> = body["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["queued", "blocked", "blocked"], "{body}");
    // a batch whose `reject` run finds its key full stores nothing
    let refused = post(json!({"runs": [
        {"agent": "echo", "input": {"value": 1}},
        keyed("batch:1", 10, "reject"),
    ]}))
    .await
    .unwrap();
    assert_eq!(refused.status(), 409);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], "concurrency_key_busy", "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().starts_with("runs/1:"),
        "{problem}"
    );
    for id in &ids {
        app.wait_for_status(id, "succeeded", Duration::from_secs(10))
            .await;
    }
    assert_eq!(max_overlap(&app, &ids).await, 1);
    let all = app.get_json("/v1/runs?limit=500").await["runs"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(all, 3, "the refused batch stored nothing");
}

#[tokio::test]
async fn a_failed_run_retried_by_hand_waits_for_its_key_again() {
    let app = TestApp::spawn().await;
    let failed = app
        .create(
            json!({"agent": "patient", "input": {"ms": 5_000}, "concurrency_key": "k",
                       "max_attempts": 1, "timeout_ms": 50}),
        )
        .await;
    app.wait_for_status(&failed, "failed", Duration::from_secs(10))
        .await;
    let holder = app.create(keyed("k", 600, "queue")).await;
    app.wait_for_status(&holder, "running", Duration::from_secs(10))
        .await;
    let retried = app
        .client
        .post(app.url(&format!("/v1/runs/{failed}/retry")))
        .send()
        .await
        .unwrap();
    assert_eq!(retried.status(), 200, "{:?}", retried.text().await);
    let run = app.get_run(&failed).await;
    assert_eq!(run["status"], "blocked", "{run}");
    assert_eq!(run["waiting_for_key"], true, "{run}");
    app.wait_for_status(&holder, "succeeded", Duration::from_secs(10))
        .await;
    // let in once the key has room; it times out again
    app.wait_for_status(&failed, "failed", Duration::from_secs(10))
        .await;
}

#[tokio::test]
async fn bad_key_settings_are_refused_with_the_field_named() {
    let app = TestApp::spawn().await;
    for (body, field) in [
        (
            json!({"agent": "echo", "input": {"value": 1}, "concurrency_limit": 2}),
            "concurrency_limit",
        ),
        (
            json!({"agent": "echo", "input": {"value": 1}, "concurrency_policy": "reject"}),
            "concurrency_policy",
        ),
        (
            json!({"agent": "echo", "input": {"value": 1}, "concurrency_key": ""}),
            "concurrency_key",
        ),
        (
            json!({"agent": "echo", "input": {"value": 1}, "concurrency_key": "x".repeat(256)}),
            "concurrency_key",
        ),
        (
            json!({"agent": "echo", "input": {"value": 1}, "concurrency_key": "k", "concurrency_limit": 0}),
            "concurrency_limit",
        ),
    ] {
        let response = app.post_run(body.clone()).await;
        assert_eq!(response.status(), 422, "{body}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], field, "{body}: {problem}");
    }
    let response = app
        .post_run(
            json!({"agent": "echo", "input": {"value": 1}, "concurrency_key": "k",
                         "concurrency_policy": "later"}),
        )
        .await;
    assert!(
        matches!(response.status().as_u16(), 400 | 422),
        "{}",
        response.status()
    );
}

#[tokio::test]
async fn an_agents_key_settings_apply_where_a_run_sets_none() {
    let app = TestApp::spawn_with(|c| {
        c.defaults.key_concurrency = std::sync::Arc::new(
            [(
                "patient".to_owned(),
                "1:reject".parse::<agentq::domain::KeySettings>().unwrap(),
            )]
            .into(),
        )
    })
    .await;
    let body = json!({"agent": "patient", "input": {"ms": 5_000}, "concurrency_key": "u"});
    let first = app.create(body.clone()).await;
    assert_eq!(app.post_run(body.clone()).await.status(), 409);
    // the run's own setting wins
    let mut queued = body.clone();
    queued["concurrency_policy"] = json!("queue");
    assert_eq!(app.post_run(queued).await.status(), 202);
    assert_eq!(app.cancel(&first).await.status(), 200);
}

#[tokio::test]
async fn a_run_let_in_for_its_key_still_waits_for_its_dependencies() {
    let app = TestApp::spawn().await;
    let holder = app.create(keyed("k", 300, "queue")).await;
    let dependency = app
        .create(json!({"agent": "patient", "input": {"ms": 800}}))
        .await;
    let mut body = keyed("k", 10, "queue");
    body["depends_on"] = json!([dependency]);
    let waiting = app.create(body).await;
    let run = app.get_run(&waiting).await;
    assert_eq!(
        (&run["status"], &run["waiting_for_key"]),
        (&json!("blocked"), &json!(true))
    );
    // the holder finishes first: the run holds the key now, but its dependency runs on
    app.wait_for_status(&holder, "succeeded", Duration::from_secs(10))
        .await;
    let run = app
        .wait_for(&waiting, Duration::from_secs(5), |r| {
            r["waiting_for_key"] == false
        })
        .await;
    assert_eq!(run["status"], "blocked", "{run}");
    let done = app
        .wait_for_status(&waiting, "succeeded", Duration::from_secs(10))
        .await;
    let finished: DateTime<Utc> = app.get_run(&dependency).await["finished_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let started: DateTime<Utc> = done["started_at"].as_str().unwrap().parse().unwrap();
    assert!(
        started >= finished,
        "started before its dependency finished"
    );
}

#[tokio::test]
async fn a_batch_is_decided_without_effect_first_exactly_as_it_then_is() {
    let app = TestApp::spawn().await;
    let with_limit = |ms: u64, policy: &str| {
        let mut body = keyed("two", ms, policy);
        body["concurrency_limit"] = json!(2);
        body
    };
    let running = app.create(with_limit(30_000, "queue")).await;
    app.wait_for_status(&running, "running", Duration::from_secs(10))
        .await;
    // holds the key's second place, not started
    let mut later = with_limit(10, "queue");
    later["run_at"] = json!("2999-01-01T00:00:00Z");
    let later = app.create(later).await;
    // the first two drop `later` (once: the second finds it gone) and each other; the third
    // then finds the key full: the whole batch is refused, and nothing was cancelled
    let response = app
        .client
        .post(app.url("/v1/runs/batch"))
        .json(&json!({"runs": [
            with_limit(10, "drop_queued"), with_limit(10, "drop_queued"), with_limit(10, "reject"),
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().starts_with("runs/2:"),
        "{problem}"
    );
    assert_eq!(app.get_run(&later).await["status"], "queued");
    assert_eq!(app.cancel(&running).await.status(), 200);
    // cancelled while it waited: no longer waiting for the key
    let mut waits = keyed("gone", 10_000, "queue");
    waits["concurrency_key"] = json!("solo");
    let first = app.create(waits.clone()).await;
    let second = app.create(waits).await;
    assert_eq!(app.get_run(&second).await["waiting_for_key"], true);
    assert_eq!(app.cancel(&second).await.status(), 200);
    let cancelled = app.get_run(&second).await;
    assert_eq!(
        (&cancelled["status"], &cancelled["waiting_for_key"]),
        (&json!("cancelled"), &json!(false))
    );
    assert_eq!(app.cancel(&first).await.status(), 200);
}
