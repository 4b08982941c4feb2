//! Schedules: each tick makes exactly one run, however many processes tick and across
//! restarts; missed ticks follow the schedule's catch-up policy; list, pause, resume,
//! delete; bad schedules are refused with the field named.

use std::time::Duration;

use agentq::app::{Application, Role};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::helpers::{TestApp, config, test_agents};
use crate::support::eventually::eventually;

async fn create(app: &TestApp, body: Value) -> (u16, Value) {
    let response = app
        .client
        .post(app.url("/v1/schedules"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn post(app: &TestApp, path: &str) -> (u16, Value) {
    let response = app.client.post(app.url(path)).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The ticks of the runs a schedule made, oldest first.
async fn ticks(app: &TestApp, schedule: &str) -> Vec<DateTime<Utc>> {
    let runs = app
        .get_json(&format!(
            "/v1/runs?metadata[schedule_id]={schedule}&limit=500"
        ))
        .await;
    let mut ticks: Vec<DateTime<Utc>> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r["metadata"]["schedule_tick"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    ticks.sort();
    ticks
}

/// A process with only the worker role (no HTTP), on `db_url`, until the sender is used.
async fn worker_process(db_url: &str) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let mut config = config(db_url);
    config.role = Role::Worker;
    let app = Application::build(config, test_agents(Default::default()))
        .await
        .expect("the worker builds");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        app.run_until(async move {
            let _ = stopped.await;
        })
        .await
        .expect("the worker stops cleanly")
    });
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_api_and_two_worker_processes_and_a_restart_make_one_run_per_tick() {
    let api = TestApp::spawn_with(|c| c.role = Role::Api).await;
    let other_api = TestApp::spawn_on(&api.db_url, |c| c.role = Role::Api).await;
    let first_worker = worker_process(&api.db_url).await;
    let second_worker = worker_process(&api.db_url).await;
    let (status, schedule) = create(
        &api,
        json!({"name": "every-second", "cron": "* * * * * *", "timezone": "Europe/Paris",
               "agent": "echo", "input": {"value": "tick"}, "metadata": {"team": "growth"}}),
    )
    .await;
    assert_eq!(status, 201, "{schedule}");
    let id = schedule["id"].as_str().unwrap().to_owned();
    assert_eq!(schedule["cron"], "* * * * * *");
    assert_eq!(schedule["paused"], false);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    // a restart in between: one API process and one worker stop, and come back
    other_api.shutdown().await;
    first_worker.0.send(()).unwrap();
    first_worker.1.await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let other_api = TestApp::spawn_on(&api.db_url, |c| c.role = Role::Api).await;
    let first_worker = worker_process(&api.db_url).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (status, paused) = post(&api, &format!("/v1/schedules/{id}/pause")).await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["paused"], true);
    let last = paused["last_tick_at"]
        .as_str()
        .unwrap()
        .parse::<DateTime<Utc>>()
        .unwrap();
    // every tick from the first to the last made one run: none twice, none missed
    let made = eventually(
        Duration::from_secs(5),
        "the last tick's run is listed",
        || async {
            let made = ticks(&api, &id).await;
            if made.last() == Some(&last) {
                Ok(made)
            } else {
                Err(made)
            }
        },
    )
    .await;
    assert!(made.len() >= 4, "{made:?}");
    for pair in made.windows(2) {
        assert_eq!(
            (pair[1] - pair[0]).num_milliseconds(),
            1000,
            "a tick made no run, or one made two: {made:?}"
        );
    }
    let stored = api.get_json(&format!("/v1/schedules/{id}")).await;
    assert_eq!(stored["missed_ticks"], 0, "{stored}");
    // its runs ran, carrying the schedule's metadata and creator
    let run = api
        .wait_for_status(
            stored["last_run_id"].as_str().unwrap(),
            "succeeded",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(run["metadata"]["team"], "growth");
    assert_eq!(run["metadata"]["schedule_id"], id.as_str());
    assert_eq!(run["created_by"], "open");
    // paused, it makes no more
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(ticks(&api, &id).await.len(), made.len());
    for (stop, task) in [first_worker, second_worker] {
        stop.send(()).unwrap();
        task.await.unwrap();
    }
    other_api.shutdown().await;
}

/// Sets a schedule's next tick, as if everything had been down since then.
async fn set_next_tick(app: &TestApp, id: &str, at: DateTime<Utc>) {
    use sqlx::Connection;
    let ms = at.timestamp_millis();
    let sql = "UPDATE schedules SET next_tick_at = $1 WHERE id = $2";
    if app.db_url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(&app.db_url).await.unwrap();
        let sql = "UPDATE schedules SET next_tick_at = ?1 WHERE id = ?2";
        sqlx::query(sql)
            .bind(ms)
            .bind(id)
            .execute(&mut conn)
            .await
            .unwrap();
    } else {
        let mut conn = sqlx::PgConnection::connect(&app.db_url).await.unwrap();
        sqlx::query(sql)
            .bind(ms)
            .bind(id)
            .execute(&mut conn)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn ticks_missed_while_everything_was_down_are_skipped_or_made_once() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for catch_up in ["skip", "one"] {
        let (status, schedule) = create(
            &app,
            json!({"interval": "1h", "catch_up": catch_up, "agent": "echo", "input": {"value": 1}}),
        )
        .await;
        assert_eq!(status, 201, "{schedule}");
        assert_eq!(schedule["catch_up"], catch_up);
        assert_eq!(schedule["interval_ms"], 3_600_000);
        ids.push(schedule["id"].as_str().unwrap().to_owned());
    }
    let db = app.shutdown().await.unwrap();
    // down for two hours and a half: three ticks came, the latest half an hour ago
    let now_ms = Utc::now().timestamp_millis();
    let down_since = DateTime::from_timestamp_millis(now_ms - 150 * 60_000).unwrap();
    let app = TestApp::spawn_on(&db.url, |_| {}).await;
    for id in &ids {
        set_next_tick(&app, id, down_since).await;
    }
    let moved = |id: String| {
        let app = &app;
        async move {
            let s = app.get_json(&format!("/v1/schedules/{id}")).await;
            let next: DateTime<Utc> = s["next_tick_at"].as_str().unwrap().parse().unwrap();
            if next > Utc::now() { Ok(s) } else { Err(s) }
        }
    };
    let skip = eventually(Duration::from_secs(10), "skip moves on", || {
        moved(ids[0].clone())
    })
    .await;
    let one = eventually(Duration::from_secs(10), "one moves on", || {
        moved(ids[1].clone())
    })
    .await;
    assert_eq!(skip["missed_ticks"], 3, "{skip}");
    assert_eq!(skip["last_run_id"], Value::Null, "{skip}");
    assert!(ticks(&app, &ids[0]).await.is_empty());
    assert_eq!(one["missed_ticks"], 2, "{one}");
    let made = ticks(&app, &ids[1]).await;
    assert_eq!(made, [down_since + chrono::Duration::hours(2)], "{one}");
    // both go on from the next tick after now, on their hour
    for s in [&skip, &one] {
        let next: DateTime<Utc> = s["next_tick_at"].as_str().unwrap().parse().unwrap();
        assert_eq!(next, down_since + chrono::Duration::hours(3), "{s}");
    }
    drop(db);
}

#[tokio::test]
async fn schedules_are_listed_paused_resumed_and_deleted_per_tenant() {
    let app = TestApp::spawn().await;
    let (status, made) = create(
        &app,
        json!({"name": "weekdays", "cron": "0 9 * * 1-5", "agent": "echo", "input": {"value": 1},
               "priority": 5, "concurrency_key": "report"}),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let id = made["id"].as_str().unwrap();
    assert_eq!(made["timezone"], "UTC");
    assert_eq!(made["run"]["priority"], 5);
    assert_eq!(made["run"]["concurrency"]["key"], "report");
    let next: DateTime<Utc> = made["next_tick_at"].as_str().unwrap().parse().unwrap();
    assert!(next > Utc::now());
    let (status, again) = create(
        &app,
        json!({"name": "weekdays", "interval": "5m", "agent": "echo", "input": {"value": 1}}),
    )
    .await;
    assert_eq!(status, 409, "{again}");
    assert_eq!(again["code"], "schedule_name_taken");
    let listed = app.get_json("/v1/schedules").await;
    assert_eq!(listed["schedules"].as_array().unwrap().len(), 1, "{listed}");
    let (status, paused) = post(&app, &format!("/v1/schedules/{id}/pause")).await;
    assert_eq!((status, &paused["paused"]), (200, &json!(true)), "{paused}");
    let (status, resumed) = post(&app, &format!("/v1/schedules/{id}/resume")).await;
    assert_eq!(
        (status, &resumed["paused"]),
        (200, &json!(false)),
        "{resumed}"
    );
    assert_eq!(resumed["next_tick_at"], made["next_tick_at"]);
    let deleted = app
        .client
        .delete(app.url(&format!("/v1/schedules/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let gone = app
        .client
        .get(app.url(&format!("/v1/schedules/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    assert_eq!(
        post(&app, &format!("/v1/schedules/{id}/pause")).await.0,
        404
    );
}

#[tokio::test]
async fn another_tenants_schedule_is_not_found() {
    let (app, keys) = TestApp::spawn_with_keys(&[
        ("acme", "runs:read,runs:write"),
        ("globex", "runs:read,runs:write"),
    ])
    .await;
    let response = app
        .client
        .post(app.url("/v1/schedules"))
        .bearer_auth(&keys[0])
        .json(&json!({"interval": "1h", "agent": "echo", "input": {"value": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let made: Value = response.json().await.unwrap();
    let id = made["id"].as_str().unwrap();
    assert_eq!(made["tenant"], "acme");
    assert_eq!(
        made["created_by"].as_str().unwrap().split(':').next(),
        Some("key")
    );
    for (method, path) in [
        (reqwest::Method::GET, format!("/v1/schedules/{id}")),
        (reqwest::Method::POST, format!("/v1/schedules/{id}/pause")),
        (reqwest::Method::DELETE, format!("/v1/schedules/{id}")),
    ] {
        let response = app
            .client
            .request(method.clone(), app.url(&path))
            .bearer_auth(&keys[1])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{method} {path}");
    }
    let theirs: Value = app
        .client
        .get(app.url("/v1/schedules"))
        .bearer_auth(&keys[1])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(theirs["schedules"], json!([]));
}

#[tokio::test]
async fn a_bad_schedule_is_refused_with_the_field_named() {
    let app = TestApp::spawn().await;
    let run = json!({"agent": "echo", "input": {"value": 1}});
    let with = |extra: Value| {
        let mut body = run.clone();
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    for (body, field) in [
        (run.clone(), "cron"),
        (with(json!({"cron": "* * * *"})), "cron"),
        (with(json!({"cron": "0 0 30 2 *"})), "cron"),
        (
            with(json!({"cron": "0 9 * * *", "timezone": "Mars/Olympus"})),
            "timezone",
        ),
        (
            with(json!({"cron": "0 9 * * *", "interval": "1h"})),
            "interval",
        ),
        (with(json!({"interval": "half an hour"})), "interval"),
        (with(json!({"interval": "100ms"})), "interval"),
        (
            with(json!({"interval": "1h", "catch_up": "all"})),
            "catch_up",
        ),
        (
            with(json!({"interval": "1h", "run_at": "2999-01-01T00:00:00Z"})),
            "run_at",
        ),
        (with(json!({"interval": "1h", "name": ""})), "name"),
        (
            with(json!({"interval": "1h", "metadata": {"schedule_id": "x"}})),
            "metadata",
        ),
        (
            json!({"interval": "1h", "agent": "nobody", "input": {}}),
            "agent",
        ),
        (
            json!({"interval": "1h", "agent": "patient", "input": {}}),
            "input/ms",
        ),
        (with(json!({"interval": "1h", "colour": "red"})), "colour"),
    ] {
        let (status, problem) = create(&app, body.clone()).await;
        assert_eq!(status, 422, "{body}: {problem}");
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(fields.contains(&field), "{body}: {fields:?}");
    }
    // an Idempotency-Key is refused, not ignored: a name makes creating one safe to retry
    let keyed = app
        .client
        .post(app.url("/v1/schedules"))
        .header("idempotency-key", "once")
        .json(&with(json!({"interval": "1h"})))
        .send()
        .await
        .unwrap();
    assert_eq!(keyed.status(), 400);
    assert_eq!(app.get_json("/v1/schedules").await["schedules"], json!([]));
}

#[tokio::test]
async fn a_tick_whose_key_refuses_its_run_counts_as_missed() {
    let app = TestApp::spawn().await;
    let holder = app
        .create(json!({"agent": "patient", "input": {"ms": 30_000}, "concurrency_key": "nightly"}))
        .await;
    let (status, schedule) = create(
        &app,
        json!({"interval": "1s", "agent": "patient", "input": {"ms": 10},
               "concurrency_key": "nightly", "concurrency_policy": "reject"}),
    )
    .await;
    assert_eq!(status, 201, "{schedule}");
    let id = schedule["id"].as_str().unwrap().to_owned();
    let missed = eventually(Duration::from_secs(10), "a tick is refused", || async {
        let s = app.get_json(&format!("/v1/schedules/{id}")).await;
        if s["missed_ticks"].as_u64() >= Some(1) {
            Ok(s)
        } else {
            Err(s)
        }
    })
    .await;
    assert_eq!(missed["last_run_id"], Value::Null, "{missed}");
    assert!(ticks(&app, &id).await.is_empty());
    assert_eq!(app.cancel(&holder).await.status(), 200);
    // the key free, the next tick makes its run
    let ran = eventually(Duration::from_secs(10), "a tick makes its run", || async {
        let s = app.get_json(&format!("/v1/schedules/{id}")).await;
        if s["last_run_id"].is_string() {
            Ok(s)
        } else {
            Err(s)
        }
    })
    .await;
    let run = app.get_run(ran["last_run_id"].as_str().unwrap()).await;
    assert_eq!(run["metadata"]["schedule_id"], id.as_str());
}
