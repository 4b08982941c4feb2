//! `GET /v1/runs/{id}/events` as a server-sent event stream.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, sse_blocks};

/// One server-sent event: its id, name and JSON data.
#[derive(Debug)]
struct Sse {
    id: i64,
    name: String,
    data: Value,
}

/// Reads the whole stream (it must end within 10 s).
async fn read_stream(app: &TestApp, run_id: &str, last_event_id: Option<i64>) -> Vec<Sse> {
    let mut request = app
        .client
        .get(app.url(&format!("/v1/runs/{run_id}/events")))
        .header("accept", "text/event-stream");
    if let Some(seq) = last_event_id {
        request = request.header("last-event-id", seq.to_string());
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    sse_blocks(response, Duration::from_secs(10))
        .await
        .into_iter()
        .map(|block| Sse {
            id: block.id.unwrap().parse().unwrap(),
            name: block.event.unwrap_or_default(),
            data: serde_json::from_str(&block.data).unwrap(),
        })
        .collect()
}

#[tokio::test]
async fn the_stream_sends_each_event_as_it_happens_and_ends_after_the_terminal_one() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"agent": "echo", "input": {"value": 1, "steps": 3, "delay_ms": 600}}))
        .await;
    let events = read_stream(&app, &id, None).await;
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "created",
            "started",
            "progress",
            "progress",
            "progress",
            "succeeded"
        ]
    );
    let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5, 6]);
    assert_eq!(events[4].data["data"]["percent"], 100);
    assert_eq!(events[5].data["seq"], 6);
}

#[tokio::test]
async fn a_stream_resumes_after_last_event_id_without_gaps_or_repeats() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"agent": "echo", "input": {"value": 1, "steps": 2, "delay_ms": 200}}))
        .await;
    let first = read_stream(&app, &id, None).await;
    let resumed = read_stream(&app, &id, Some(2)).await;
    let ids: Vec<i64> = resumed.iter().map(|e| e.id).collect();
    let expected: Vec<i64> = first.iter().map(|e| e.id).filter(|seq| *seq > 2).collect();
    assert_eq!(ids, expected);
    // nothing left: 204, which tells an EventSource to stop reconnecting
    let done = app
        .client
        .get(app.url(&format!("/v1/runs/{id}/events")))
        .header("accept", "text/event-stream")
        .header("last-event-id", first.last().unwrap().id.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 204);
}

#[tokio::test]
async fn a_cancelled_run_ends_its_stream() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"agent": "patient", "input": {"ms": 30000}}))
        .await;
    app.wait_for_status(&id, "running", Duration::from_secs(5))
        .await;
    let reader = {
        let url = app.url(&format!("/v1/runs/{id}/events"));
        let client = app.client.clone();
        tokio::spawn(async move {
            let response = client
                .get(url)
                .header("accept", "text/event-stream")
                .send()
                .await
                .unwrap();
            tokio::time::timeout(Duration::from_secs(10), response.text()).await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let cancel = app.cancel(&id).await;
    assert_eq!(cancel.status(), 200);
    let body = reader.await.unwrap().expect("the stream ended").unwrap();
    assert!(body.contains("event: cancelled"), "{body}");
}

#[tokio::test]
async fn streams_of_unknown_runs_and_bad_resume_points_are_refused() {
    let app = TestApp::spawn().await;
    let missing = uuid::Uuid::now_v7();
    let response = app
        .client
        .get(app.url(&format!("/v1/runs/{missing}/events")))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let id = app
        .create(json!({"agent": "echo", "input": {"value": 1}}))
        .await;
    let response = app
        .client
        .get(app.url(&format!("/v1/runs/{id}/events")))
        .header("accept", "text/event-stream")
        .header("last-event-id", "soon")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}

#[tokio::test]
async fn events_after_the_terminal_one_are_sent_and_a_resumed_stream_ends() {
    let app = TestApp::spawn().await;
    app.probe
        .failing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let id = app
        .create(json!({"agent": "switch", "on_failure": {"agent": "undo"}}))
        .await;
    app.wait_for(&id, Duration::from_secs(5), |r| {
        r["compensation_run_id"].is_string()
    })
    .await;
    let events = read_stream(&app, &id, None).await;
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        ["created", "started", "failed", "compensation_created"]
    );
    // resuming right after the terminal event gets what followed it, then the stream ends
    let rest = read_stream(&app, &id, Some(events[2].id)).await;
    let names: Vec<&str> = rest.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["compensation_created"]);
}

#[tokio::test]
async fn a_finished_runs_stream_carries_its_result_and_a_reconnect_after_it_is_told_to_stop() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"agent": "echo", "input": {"value": "done"}}))
        .await;
    app.wait_for_status(&id, "succeeded", Duration::from_secs(5))
        .await;
    let events = read_stream(&app, &id, None).await;
    let last = events.last().unwrap();
    assert_eq!(last.name, "succeeded");
    let data = &last.data;
    assert_eq!(
        data["data"]["result"],
        app.get_run(&id).await["result"],
        "{data}"
    );
    // an EventSource reconnecting after the end gets 204: the standard's "stop"
    let again = app
        .client
        .get(app.url(&format!("/v1/runs/{id}/events")))
        .header("accept", "text/event-stream")
        .header("last-event-id", last.id.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 204);
}

/// A worker in another process writes the events: the API process's stream is told of
/// them by its one read for every followed run, well within the streams' own 30 s
/// safety net, and sends every one.
#[tokio::test]
async fn a_stream_follows_events_another_process_writes() {
    let db = crate::support::db::TestDb::new().await;
    let api = crate::process::Agentq::start_role("api", &db.url, &[]).await;
    let _worker = crate::process::Agentq::start_role("worker", &db.url, &[]).await;
    let id = api
        .create(json!({"agent": "echo", "input": {"value": 1, "steps": 4, "delay_ms": 2000}}))
        .await;
    let started = std::time::Instant::now();
    let response = reqwest::Client::new()
        .get(format!("{}/v1/runs/{id}/events", api.base))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let blocks = sse_blocks(response, Duration::from_secs(15)).await;
    let names: Vec<&str> = blocks
        .iter()
        .map(|b| b.event.as_deref().unwrap_or_default())
        .collect();
    assert_eq!(names.first(), Some(&"created"));
    assert!(names.contains(&"started"), "{names:?}");
    assert_eq!(
        names.iter().filter(|n| **n == "progress").count(),
        4,
        "{names:?}"
    );
    assert_eq!(names.last(), Some(&"succeeded"));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the stream ended after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn past_max_streams_a_stream_is_refused_until_one_ends() {
    let app = TestApp::spawn_with(|c| c.http.max_streams = 2).await;
    let waiting = json!({"agent": "echo", "input": {"value": 1, "wait_for": ["go"]}});
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(app.create(waiting.clone()).await);
    }
    let open = |id: String| {
        app.client
            .get(app.url(&format!("/v1/runs/{id}/events")))
            .header("accept", "text/event-stream")
            .send()
    };
    let first = open(ids[0].clone()).await.unwrap();
    let second = open(ids[1].clone()).await.unwrap();
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = open(ids[2].clone()).await.unwrap();
    assert_eq!(third.status(), 503);
    assert_eq!(third.headers()["retry-after"], "5");
    let problem: Value = third.json().await.unwrap();
    assert_eq!(problem["code"], "too_many_streams", "{problem}");
    // the output stream counts too
    let output = app
        .client
        .get(app.url(&format!("/v1/runs/{}/stream", ids[2])))
        .send()
        .await
        .unwrap();
    assert_eq!(output.status(), 503);
    // a stream that ends gives its place back
    drop(first);
    crate::support::eventually::eventually(
        Duration::from_secs(5),
        "a third stream is served",
        || async {
            match open(ids[2].clone()).await.unwrap().status().as_u16() {
                200 => Ok(()),
                s => Err(s),
            }
        },
    )
    .await;
    drop(second);
}

/// A finished run with more events than one read holds: the stream reads on page by page
/// and sends every one before it ends.
#[tokio::test]
async fn a_finished_runs_stream_replays_every_page_of_its_events() {
    use sqlx::Connection;
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"agent": "echo", "input": {"value": 1}}))
        .await;
    app.wait_for_status(&id, "succeeded", Duration::from_secs(10))
        .await;
    // 1,200 events written after its end (as a webhook's deliveries would be)
    let (sqlite, postgres) = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1200) \
         INSERT INTO run_events (run_id, seq, at, type, attempt, data, actor) \
         SELECT ?1, 100 + i, 0, 'log', 1, '{\"message\":\"x\"}', NULL FROM n",
        "INSERT INTO run_events (run_id, seq, at, type, attempt, data, actor) \
         SELECT $1, 100 + i, 0, 'log', 1, '{\"message\":\"x\"}', NULL \
         FROM generate_series(1, 1200) AS i",
    );
    if app.db_url.starts_with("sqlite") {
        let mut conn = sqlx::SqliteConnection::connect(&app.db_url).await.unwrap();
        sqlx::query(sqlite)
            .bind(&id)
            .execute(&mut conn)
            .await
            .unwrap();
    } else {
        let mut conn = sqlx::PgConnection::connect(&app.db_url).await.unwrap();
        sqlx::query(postgres)
            .bind(&id)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let first: Value = app.get_json(&format!("/v1/runs/{id}/events")).await;
    // more than one page of them
    assert!(first["next_after"].is_i64(), "{}", first["next_after"]);
    let streamed = read_stream(&app, &id, None).await;
    assert!(streamed.len() > 1200, "{}", streamed.len());
    assert_eq!(streamed.last().unwrap().id, 1300);
    assert_eq!(streamed.last().unwrap().name, "log");
}
