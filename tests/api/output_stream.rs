//! A run's output stream: `GET /v1/runs/{id}/stream` in the UI message stream protocol, the
//! `stream` events it is made of, and the echo agent that streams.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, create_key, sse_blocks};

/// One server-sent event of the message stream: its id (`<seq>.<k>`, as read) and data
/// (`[DONE]` as a string).
#[derive(Debug)]
pub struct Chunk {
    pub id: Option<String>,
    pub data: Value,
}

/// Reads a whole message stream (it must end within 20 s); the response's status and
/// `x-vercel-ai-ui-message-stream` header are checked.
pub async fn read_chunks(request: reqwest::RequestBuilder) -> Vec<Chunk> {
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-vercel-ai-ui-message-stream"], "v1");
    sse_blocks(response, Duration::from_secs(20))
        .await
        .into_iter()
        .map(|block| Chunk {
            id: block.id,
            data: serde_json::from_str(&block.data).unwrap_or(Value::String(block.data)),
        })
        .collect()
}

pub fn types(chunks: &[Chunk]) -> Vec<&str> {
    chunks
        .iter()
        .map(|c| c.data["type"].as_str().or(c.data.as_str()).unwrap())
        .collect()
}

/// The text of every `text-delta`, joined.
pub fn text_of(chunks: &[Chunk]) -> String {
    chunks
        .iter()
        .filter(|c| c.data["type"] == "text-delta")
        .map(|c| c.data["delta"].as_str().unwrap())
        .collect()
}

const TEXT: &str = "The quick brown fox jumps over the lazy dog, twice.";

#[tokio::test]
async fn an_echo_run_streams_its_text_live_and_again_after_it_ended() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"agent": "echo", "input": {"text": TEXT, "delay_ms": 600, "steps": 2}}))
        .await;
    // followed live from the moment it was created
    let live = read_chunks(app.client.get(app.url(&format!("/v1/runs/{id}/stream")))).await;
    assert_eq!(text_of(&live), TEXT);
    let kinds = types(&live);
    assert_eq!(kinds[0], "start");
    assert_eq!(&kinds[kinds.len() - 2..], ["finish", "[DONE]"]);
    assert_eq!(kinds.iter().filter(|k| **k == "text-start").count(), 1);
    assert!(kinds.contains(&"data-progress"), "{kinds:?}");
    let run = app.get_run(&id).await;
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["result"]["text"], TEXT);

    // read again after the end: the same chunks
    let again = read_chunks(app.client.get(app.url(&format!("/v1/runs/{id}/stream")))).await;
    assert_eq!(types(&again), kinds);
    assert_eq!(text_of(&again), TEXT);

    // the run's events carry the parts too, each with its seq
    let events = app.events(&id).await;
    let streamed: String = events
        .iter()
        .filter(|e| e["type"] == "stream")
        .map(|e| e["data"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, TEXT);

    // every chunk has an id of its own; resuming after one sends exactly the chunks after it
    let ids: Vec<&str> = live.iter().filter_map(|c| c.id.as_deref()).collect();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
    for cut in [1, 2, live.len() / 2] {
        let resumed = read_chunks(
            app.client
                .get(app.url(&format!("/v1/runs/{id}/stream")))
                .header("last-event-id", live[cut - 1].id.clone().unwrap()),
        )
        .await;
        let rest: Vec<&Value> = live[cut..].iter().map(|c| &c.data).collect();
        let got: Vec<&Value> = resumed.iter().map(|c| &c.data).collect();
        assert_eq!(got, rest, "resumed after chunk {cut}");
    }
    // after a whole event: the chunks of later events
    let whole = read_chunks(
        app.client
            .get(app.url(&format!("/v1/runs/{id}/stream")))
            .header("last-event-id", "2"),
    )
    .await;
    assert!(
        whole
            .iter()
            .all(|c| c.id.as_deref().is_none_or(|id| !id.starts_with("2.")))
    );
    assert_eq!(types(&whole).last(), Some(&"[DONE]"));
}

#[tokio::test]
async fn a_run_that_streamed_nothing_answers_no_content_and_a_bad_resume_point_is_refused() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"agent": "echo", "input": {"value": 1}}))
        .await;
    app.wait_for_status(&id, "succeeded", Duration::from_secs(10))
        .await;
    let response = app
        .client
        .get(app.url(&format!("/v1/runs/{id}/stream")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let response = app
        .client
        .get(app.url(&format!("/v1/runs/{id}/stream")))
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
async fn each_attempt_is_a_message_and_a_failed_run_ends_with_its_error() {
    let app = TestApp::spawn().await;
    // streams its text, then fails: retried once, then for good
    let id = app
        .create(
            json!({"agent": "echo", "input": {"text": "again and", "fail_attempts": 1,
                       "fail_permanently": true}, "max_attempts": 2, "backoff_base_ms": 10}),
        )
        .await;
    let chunks = read_chunks(app.client.get(app.url(&format!("/v1/runs/{id}/stream")))).await;
    let kinds = types(&chunks);
    assert_eq!(
        kinds,
        [
            "start",
            "text-start",
            "text-delta",
            "text-delta",
            "text-end",
            "finish",
            "start",
            "text-start",
            "text-delta",
            "text-delta",
            "text-end",
            "error",
            "[DONE]"
        ]
    );
    assert_ne!(chunks[0].data["messageId"], chunks[6].data["messageId"]);
    assert_eq!(chunks[5].data["finishReason"], "error");
    assert_eq!(chunks[11].data["errorText"], "failed permanently, as asked");
    assert_eq!(text_of(&chunks), "again andagain and");
}

#[tokio::test]
async fn a_run_token_reads_the_stream_and_nothing_else_does_without_a_key() {
    let (app, keys) = TestApp::spawn_with_keys(&[("acme", "runs:read,runs:write")]).await;
    let response = app
        .client
        .post(app.url("/v1/runs"))
        .bearer_auth(&keys[0])
        .json(&json!({"agent": "echo", "input": {"text": "for the page", "delay_ms": 100}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let created: Value = response.json().await.unwrap();
    let (id, token) = (
        created["id"].as_str().unwrap(),
        created["run_token"].as_str().unwrap(),
    );
    // as a bearer token, and as `?access_token=` (what a page without headers sends)
    let chunks = read_chunks(
        app.client
            .get(app.url(&format!("/v1/runs/{id}/stream")))
            .bearer_auth(token),
    )
    .await;
    assert_eq!(text_of(&chunks), "for the page");
    let chunks = read_chunks(
        app.client
            .get(app.url(&format!("/v1/runs/{id}/stream?access_token={token}"))),
    )
    .await;
    assert_eq!(text_of(&chunks), "for the page");
    let response = app
        .client
        .get(app.url(&format!("/v1/runs/{id}/stream")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // another tenant's key does not see it
    let store = agentq::store::Store::connect(&app.db_url, &Default::default())
        .await
        .unwrap();
    let other = create_key(&store, "other", "runs:read").await;
    let response = app
        .client
        .get(app.url(&format!("/v1/runs/{id}/stream")))
        .bearer_auth(other)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn a_stream_past_its_limit_fails_the_run_with_a_clear_error() {
    let app = TestApp::spawn_with(|config| config.store.max_stream_bytes = 10).await;
    let id = app
        .create(json!({"agent": "echo", "input": {"text": "one two three four five"}}))
        .await;
    let run = app
        .wait_for_status(&id, "failed", Duration::from_secs(10))
        .await;
    let message = run["error"]["message"].as_str().unwrap();
    assert!(message.contains("output stream is full"), "{message}");
    assert!(message.contains("10 bytes"), "{message}");
    // what fitted was kept
    let streamed: String = app
        .events(&id)
        .await
        .iter()
        .filter(|e| e["type"] == "stream")
        .map(|e| e["data"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(streamed, "one two ");
}
