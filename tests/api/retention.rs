//! Retention: `--retain-succeeded`, `--retain-failed`, `--retain-cancelled` and
//! `--retain-max-runs` delete finished runs with their events; runs still needed stay.

use std::time::Duration;

use agentq::app::AppConfig;
use agentq::jobs::RetentionOptions;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::helpers::TestApp;
use crate::support::eventually::eventually;

/// A janitor that looks every 50 ms, with the given retention.
fn retain(retention: RetentionOptions) -> impl FnOnce(&mut AppConfig) {
    // the webhook receivers listen on 127.0.0.1
    let allow_local = crate::helpers::allow(&["127.0.0.1"]);
    move |c| {
        allow_local(c);
        c.worker.retention = RetentionOptions {
            every: Duration::from_millis(50),
            ..retention
        }
    }
}

async fn status_of(app: &TestApp, id: &str) -> u16 {
    let url = app.url(&format!("/v1/runs/{id}"));
    app.client.get(url).send().await.unwrap().status().as_u16()
}

/// Polls until the run is gone (404), failing after `within`.
async fn wait_deleted(app: &TestApp, id: &str, within: Duration) {
    let what = format!("run {id} is deleted");
    eventually(within, &what, || async {
        let status = status_of(app, id).await;
        if status == 404 { Ok(()) } else { Err(status) }
    })
    .await;
}

/// Creates a run and waits until it reaches `status`.
async fn finished(app: &TestApp, body: Value, status: &str) -> String {
    let id = app.create(body).await;
    app.wait_for_status(&id, status, Duration::from_secs(10))
        .await;
    id
}

async fn echo(app: &TestApp) -> String {
    finished(
        app,
        json!({"agent": "echo", "input": {"value": 1}}),
        "succeeded",
    )
    .await
}

/// One number from the app's database, by a statement for each dialect.
async fn count(app: &TestApp, sqlite: &'static str, postgres: &'static str, arg: &str) -> i64 {
    use sqlx::Connection;
    if app.db_url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(&app.db_url).await.unwrap();
        sqlx::query_scalar(sqlite)
            .bind(arg)
            .fetch_one(&mut conn)
            .await
            .unwrap()
    } else {
        let mut conn = sqlx::PgConnection::connect(&app.db_url).await.unwrap();
        sqlx::query_scalar(postgres)
            .bind(arg)
            .fetch_one(&mut conn)
            .await
            .unwrap()
    }
}

async fn event_rows(app: &TestApp, id: &str) -> i64 {
    count(
        app,
        "SELECT COUNT(*) FROM run_events WHERE run_id = ?1",
        "SELECT COUNT(*) FROM run_events WHERE run_id = $1",
        id,
    )
    .await
}

/// A webhook receiver that always answers 503, so deliveries stay pending.
async fn failing_receiver() -> String {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(|| async { StatusCode::SERVICE_UNAVAILABLE }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn old_finished_runs_are_deleted_with_their_events_while_recent_and_unfinished_ones_stay() {
    let app = TestApp::spawn_with(retain(RetentionOptions {
        succeeded: Some(Duration::from_secs(1)),
        failed: Some(Duration::from_secs(3600)),
        ..Default::default()
    }))
    .await;
    // finished before the witness, so the janitor looks at them first
    let failed = finished(
        &app,
        json!({"agent": "echo", "input": {"value": 1, "fail_permanently": true}}),
        "failed",
    )
    .await;
    let cancelled = app
        .create(json!({"agent": "echo", "input": {"value": 1}, "run_at": "2999-01-01T00:00:00Z"}))
        .await;
    let response = app.cancel(&cancelled).await;
    assert_eq!(response.status(), 200);
    let undelivered = finished(
        &app,
        json!({"agent": "echo", "input": {"value": 1}, "callback_url": failing_receiver().await}),
        "succeeded",
    )
    .await;
    let queued = app
        .create(json!({"agent": "echo", "input": {"value": 1}, "run_at": "2999-01-01T00:00:00Z"}))
        .await;
    let old = echo(&app).await;
    // `created` is read off the run's row
    assert!(event_rows(&app, &old).await >= 2, "started, succeeded");

    wait_deleted(&app, &old, Duration::from_secs(10)).await;
    assert_eq!(event_rows(&app, &old).await, 0, "its events went with it");
    let events = app
        .client
        .get(app.url(&format!("/v1/runs/{old}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 404);
    // a failed run within its retention, a cancelled run with none set, a run whose
    // webhook is still to be delivered, and a run not finished all stay
    for id in [&failed, &cancelled, &undelivered, &queued] {
        assert_eq!(status_of(&app, id).await, 200, "run {id} was deleted");
    }
    assert!(event_rows(&app, &undelivered).await > 0);
}

#[tokio::test]
async fn a_finished_run_that_a_blocked_run_depends_on_is_kept_until_that_run_finishes() {
    let app = TestApp::spawn_with(retain(RetentionOptions {
        succeeded: Some(Duration::from_secs(1)),
        ..Default::default()
    }))
    .await;
    let dependency = echo(&app).await;
    let gate = finished(&app, json!({"agent": "waiter", "input": {}}), "waiting").await;
    let dependent = app
        .create(json!({"agent": "gather", "depends_on": [dependency, gate]}))
        .await;
    assert_eq!(app.get_run(&dependent).await["status"], "blocked");
    // a run that finished after the dependency is deleted: the janitor went past it
    let witness = echo(&app).await;
    wait_deleted(&app, &witness, Duration::from_secs(10)).await;
    assert_eq!(status_of(&app, &dependency).await, 200);

    let response = app
        .client
        .post(app.url(&format!("/v1/runs/{gate}/signals")))
        .json(&json!({"name": "go", "payload": {}}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let done = app
        .wait_for_status(&dependent, "succeeded", Duration::from_secs(10))
        .await;
    assert!(done["result"][&dependency].is_object(), "{done}");
    // the dependent goes after its second of retention, then the dependency with it
    wait_deleted(&app, &dependent, Duration::from_secs(10)).await;
    wait_deleted(&app, &dependency, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn count_based_retention_keeps_the_newest_runs_of_each_status() {
    let app = TestApp::spawn_with(retain(RetentionOptions {
        max_runs: Some(2),
        ..Default::default()
    }))
    .await;
    let failed = finished(
        &app,
        json!({"agent": "echo", "input": {"value": 1, "fail_permanently": true}}),
        "failed",
    )
    .await;
    let mut succeeded = Vec::new();
    for _ in 0..5 {
        succeeded.push(echo(&app).await);
    }
    for id in &succeeded[..3] {
        wait_deleted(&app, id, Duration::from_secs(10)).await;
    }
    for id in succeeded[3..].iter().chain([&failed]) {
        assert_eq!(status_of(&app, id).await, 200, "run {id} was deleted");
    }
}

#[tokio::test]
async fn retention_off_keeps_every_run() {
    let app = TestApp::spawn_with(retain(RetentionOptions::default())).await;
    let ids = [echo(&app).await, echo(&app).await];
    // a janitor would have had twenty rounds
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    while tokio::time::Instant::now() < until {
        for id in &ids {
            assert_eq!(status_of(&app, id).await, 200);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // the index of finished runs is there all the same: the dashboard reads it
    let indexes = count(
        &app,
        "SELECT COUNT(*) FROM sqlite_master WHERE name = ?1",
        "SELECT COUNT(*) FROM pg_indexes WHERE indexname = $1 AND schemaname = current_schema()",
        "runs_finished",
    )
    .await;
    assert_eq!(indexes, 1);
}
