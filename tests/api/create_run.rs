use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, event_types};

#[tokio::test]
async fn create_run_returns_202_with_location_and_the_queued_run() {
    let app = TestApp::spawn().await;
    let response = app
        .post_run(
            json!({"agent": "echo", "input": {"value": 1}, "priority": 5,
                         "metadata": {"user": "u1"}}),
        )
        .await;
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let run: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/v1/runs/{}", run["id"].as_str().unwrap())
    );
    assert_eq!(run["status"], "queued");
    assert_eq!(run["agent"], "echo");
    assert_eq!(run["attempt"], 0);
    assert_eq!(run["max_attempts"], 3);
    assert_eq!(run["priority"], 5);
    assert_eq!(run["metadata"]["user"], "u1");
    assert!(run["created_at"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn echo_run_succeeds_with_its_value_and_an_ordered_event_log() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"agent": "echo", "input": {"value": {"a": [1, 2]}}}))
        .await;
    let run = app
        .wait_for_status(&id, "succeeded", Duration::from_secs(5))
        .await;
    assert_eq!(run["result"], json!({"value": {"a": [1, 2]}}));
    assert_eq!(run["attempt"], 1);
    assert!(run["error"].is_null());
    assert!(run["started_at"].is_string() && run["finished_at"].is_string());
    let events = app.events(&id).await;
    assert_eq!(event_types(&events), ["created", "started", "succeeded"]);
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3]);
}

async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert_eq!(body["request_id"], request_id.as_str());
    body
}

fn fields(problem: &Value) -> Vec<(String, String)> {
    problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap().into(),
                e["code"].as_str().unwrap().into(),
            )
        })
        .collect()
}

#[tokio::test]
async fn create_run_returns_422_when_agent_is_unknown() {
    let app = TestApp::spawn().await;
    let body = problem(
        app.post_run(json!({"agent": "nope", "input": {}})).await,
        422,
    )
    .await;
    assert_eq!(body["code"], "validation_failed");
    assert_eq!(fields(&body), [("agent".into(), "unknown_agent".into())]);
}

#[tokio::test]
async fn create_run_returns_422_naming_the_input_fields_that_break_the_schema() {
    let app = TestApp::spawn().await;
    let response = app
        .post_run(json!({"agent": "echo", "input": {"valu": 1, "delay_ms": -5}}))
        .await;
    let body = problem(response, 422).await;
    let mut found = fields(&body);
    found.sort();
    assert_eq!(
        found,
        [
            ("input/delay_ms".into(), "schema".into()),
            ("input/valu".into(), "schema".into()),
        ]
    );
}

#[tokio::test]
async fn create_run_returns_422_listing_every_out_of_range_field() {
    let app = TestApp::spawn().await;
    let response = app
        .post_run(
            json!({"agent": "echo", "input": {"value": 1}, "max_attempts": 0,
                         "timeout_ms": 0, "priority": 5000}),
        )
        .await;
    let body = problem(response, 422).await;
    let names: Vec<String> = fields(&body).into_iter().map(|(f, _)| f).collect();
    assert_eq!(names, ["max_attempts", "priority", "timeout_ms"]);
}

#[tokio::test]
async fn create_run_returns_400_naming_a_field_of_the_wrong_type_or_unknown() {
    let app = TestApp::spawn().await;
    let body = problem(app.post_run(json!({"agent": 5})).await, 400).await;
    assert_eq!(fields(&body), [("agent".into(), "invalid_type".into())]);
    let body = problem(app.post_run(json!({"input": {}})).await, 400).await;
    assert_eq!(fields(&body), [("agent".into(), "required".into())]);
    let body = problem(
        app.post_run(json!({"agent": "echo", "colour": 1})).await,
        400,
    )
    .await;
    assert_eq!(fields(&body), [("colour".into(), "unknown_field".into())]);
    let response = app
        .post_run(json!({"agent": "echo", "run_at": "tomorrow"}))
        .await;
    let body = problem(response, 400).await;
    assert_eq!(fields(&body)[0].0, "run_at");
}

#[tokio::test]
async fn create_run_returns_400_for_malformed_json() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .post(app.url("/v1/runs"))
        .header("content-type", "application/json")
        .body(r#"{"agent": "echo", "input": "#)
        .send()
        .await
        .unwrap();
    let body = problem(response, 400).await;
    assert_eq!(body["code"], "malformed_body");
    assert_eq!(fields(&body), [("body".into(), "malformed_json".into())]);
}

#[tokio::test]
async fn create_run_returns_415_when_the_body_is_not_json() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .post(app.url("/v1/runs"))
        .header("content-type", "text/plain")
        .body(r#"{"agent": "echo"}"#)
        .send()
        .await
        .unwrap();
    let body = problem(response, 415).await;
    assert_eq!(body["code"], "unsupported_media_type");
}

#[tokio::test]
async fn create_run_returns_413_when_the_body_is_over_the_limit() {
    let app = TestApp::spawn_with(|c| c.http.body_limit = 4096).await;
    let big = "x".repeat(5000);
    let body = problem(
        app.post_run(json!({"agent": "echo", "input": {"value": big}}))
            .await,
        413,
    )
    .await;
    assert_eq!(body["code"], "payload_too_large");
    // chunked, without a Content-Length, the limit holds too
    let chunks = futures::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1000])));
    let response = app
        .client
        .post(app.url("/v1/runs"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    problem(response, 413).await;
}

#[tokio::test]
async fn text_holding_a_nul_character_is_refused_naming_its_field_in_every_body() {
    // PostgreSQL stores no U+0000; it was a 503 there (retried forever by clients)
    let app = TestApp::spawn().await;
    let nul = "a\u{0}b";
    let body = problem(
        app.post_run(json!({"agent": "echo", "input": {"value": [1, nul]}}))
            .await,
        422,
    )
    .await;
    assert_eq!(
        fields(&body),
        [("input/value/1".into(), "nul_character".into())]
    );
    let body = problem(
        app.post_run(json!({"agent": "echo", "input": {"value": 1}, "metadata": {nul: "v"}}))
            .await,
        422,
    )
    .await;
    assert_eq!(
        fields(&body),
        [("metadata/a\\u0000b".into(), "nul_character".into())]
    );
    let id = app
        .create(json!({"agent": "echo", "input": {"value": 1}}))
        .await;
    let post = |path: String, body: Value| {
        let request = app.client.post(app.url(&path)).json(&body);
        async move { request.send().await.unwrap() }
    };
    let signal = json!({"name": "go", "payload": {"note": nul}});
    let body = problem(post(format!("/v1/runs/{id}/signals"), signal).await, 422).await;
    assert_eq!(
        fields(&body),
        [("payload/note".into(), "nul_character".into())]
    );
    let retry = json!({"agent": nul});
    let body = problem(post("/v1/runs/retry".into(), retry).await, 422).await;
    assert_eq!(fields(&body), [("agent".into(), "nul_character".into())]);
    // an escaped backslash before "u0000" is plain text, and accepted
    let id = app
        .create(json!({"agent": "echo", "input": {"value": "\\u0000"}}))
        .await;
    let run = app
        .wait_for_status(&id, "succeeded", Duration::from_secs(5))
        .await;
    assert_eq!(run["result"]["value"], "\\u0000");
}

#[tokio::test]
async fn a_body_cut_off_mid_chunk_is_a_bad_request_not_a_large_one() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn().await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    // a chunk whose size line is not hexadecimal
    let request = format!(
        "POST /v1/runs HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\n\r\n5\r\n{{\"a\":\r\nzz\r\n",
        app.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("an answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}

#[tokio::test]
async fn rejected_requests_leave_no_run_behind() {
    let app = TestApp::spawn().await;
    app.post_run(json!({"agent": "nope"})).await;
    app.post_run(json!({"agent": "echo", "input": {"valu": 1}}))
        .await;
    app.post_run(json!({"agent": "echo", "input": {"value": 1}, "max_attempts": 0}))
        .await;
    let list: Value = app.get_json("/v1/runs").await;
    assert_eq!(list["runs"], json!([]));
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_with_problems() {
    let app = TestApp::spawn().await;
    let response = app.client.get(app.url("/v2/nothing")).send().await.unwrap();
    assert_eq!(problem(response, 404).await["code"], "not_found");
    let response = app.client.delete(app.url("/v1/runs")).send().await.unwrap();
    assert_eq!(problem(response, 405).await["code"], "method_not_allowed");
    let response = app
        .client
        .get(app.url("/v1/runs/not-a-uuid"))
        .send()
        .await
        .unwrap();
    problem(response, 404).await;
    let missing = uuid::Uuid::now_v7();
    let response = app
        .client
        .get(app.url(&format!("/v1/runs/{missing}")))
        .send()
        .await
        .unwrap();
    problem(response, 404).await;
    let response = app
        .client
        .get(app.url(&format!("/v1/runs/{missing}/events")))
        .send()
        .await
        .unwrap();
    problem(response, 404).await;
}

#[tokio::test]
async fn delayed_run_waits_for_its_run_at() {
    let app = TestApp::spawn().await;
    let at = chrono::Utc::now() + chrono::Duration::milliseconds(700);
    let id = app
        .create(json!({"agent": "echo", "input": {"value": 1}, "run_at": at}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.get_run(&id).await["status"], "queued");
    let run = app
        .wait_for_status(&id, "succeeded", Duration::from_secs(5))
        .await;
    let started: chrono::DateTime<chrono::Utc> =
        run["started_at"].as_str().unwrap().parse().unwrap();
    assert!(started >= at, "started {started} before run_at {at}");
}

#[tokio::test]
async fn higher_priority_runs_start_first() {
    let app = TestApp::spawn_with(|c| {
        c.worker.concurrency = 1;
        // with Redis delivery, priority orders runs when they are sent to Redis: a window
        // of one keeps both runs below in the table until there is room
        if let Some(redis) = &mut c.worker.redis {
            redis.dispatch_window = 1;
        }
    })
    .await;
    // occupy the only slot (and, with Redis, the window), then queue low before high
    let blocker = app
        .create(json!({"agent": "patient", "input": {"ms": 300}}))
        .await;
    app.wait_for_status(&blocker, "running", Duration::from_secs(5))
        .await;
    let filler = app
        .create(json!({"agent": "echo", "input": {"value": 0}}))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let low = app
        .create(json!({"agent": "echo", "input": {"value": 1}, "priority": -1}))
        .await;
    let high = app
        .create(json!({"agent": "echo", "input": {"value": 2}, "priority": 10}))
        .await;
    let low = app
        .wait_for_status(&low, "succeeded", Duration::from_secs(5))
        .await;
    let high = app.get_run(&high).await;
    assert!(high["started_at"].as_str().unwrap() <= low["started_at"].as_str().unwrap());
    app.wait_for_status(&filler, "succeeded", Duration::from_secs(5))
        .await;
}
