//! `GET /v1/runs/{id}/stream`: a run's output stream as Server-Sent Events in the Vercel AI
//! SDK's UI message stream protocol (`x-vercel-ai-ui-message-stream: v1`), so `useChat`
//! (`DefaultChatTransport` with `api` set to `<base>/v1/runs`) resumes a run's answer with
//! `reconnectToStream({chatId: runId})`.
//!
//! The chunks are made from the run's events, replayed from the start and then followed
//! live: each attempt is one message (`start` … `finish`), its `stream` events become text,
//! reasoning, tool and data parts, its progress a `data-progress` part; the run's end is
//! `finish` (succeeded), `error` (failed) or `abort` (cancelled), then `[DONE]`. Every chunk
//! has an SSE id of its own, `<seq>.<k>`: the k-th chunk (from 0) made of the event with
//! that seq, so a client resuming with `Last-Event-ID` gets exactly the chunks after it.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::domain::{EventKind, RunEvent, RunId};

use super::ApiState;
use super::auth::Caller;
use super::error::{ApiError, Problem};
use super::extract::parse_run_id;
use super::stream::follow;

/// A run's output stream in the Vercel AI SDK UI message stream protocol.
///
/// Server-Sent Events, each a UI message chunk as JSON with the id `<seq>.<k>` (the k-th
/// chunk made of the run event with that seq): replayed from the start (or after
/// `Last-Event-ID`), then live until the run ends, closed by `data: [DONE]`. Each attempt of the run is one message
/// (`start` with a `messageId` of its own, its parts, `finish`); the run's end is `finish`
/// (succeeded), `error` (failed) or `abort` (cancelled). A run that ended without streaming
/// anything answers `204`.
#[utoipa::path(get, path = "/v1/runs/{id}/stream", tag = "runs", operation_id = "stream_run",
    params(("id" = String, Path, description = "Run id"),
           ("Last-Event-ID" = Option<String>, Header, description = "Resume after this chunk (`<seq>.<k>`), or after every chunk of event `<seq>`"),
           ("access_token" = Option<String>, Query, description = "The run's token, for clients that cannot send an Authorization header")),
    responses(
        (status = 200, description = "UI message chunks as server-sent events (header `x-vercel-ai-ui-message-stream: v1`)",
         content((String = "text/event-stream"))),
        (status = 204, description = "The run ended without streaming anything"),
        (status = 400, description = "Invalid Last-Event-ID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key or run token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such run (or another tenant's)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "This process serves as many live streams as it may (`too_many_streams`, --max-streams)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn stream_run(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_run_id(&id)?;
    let after = resume_after_chunk(&headers)?;
    let run = state.store.get_run(id).await?;
    caller.may_read(&run)?;
    let finished = run.status.is_terminal();
    let slot = state.streams.take()?;
    let mut events = Box::pin(
        follow(state.store.clone(), slot, id, 0, finished)
            .await?
            .fuse(),
    );
    let mut chunks = Chunks::new(id);
    // what was already written is read now: a run that ended without streaming is a 204
    let mut replayed = Vec::new();
    if finished {
        while let Some(event) = events.next().await {
            replayed.push(event);
        }
        if !replayed
            .iter()
            .any(|e| e.kind == EventKind::Stream.as_str())
        {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    }
    let sse = futures::stream::iter(replayed)
        .chain(events)
        .flat_map(move |event| {
            let seq = event.seq;
            // the chunks of events the client has are made (they set the state later
            // chunks follow from) but not sent
            let was_ended = chunks.ended;
            let made = chunks.feed(&event);
            let mut out: Vec<Event> = made
                .iter()
                .enumerate()
                .filter(|(k, _)| after.wants(seq, *k))
                .map(|(k, chunk)| {
                    Event::default()
                        .id(format!("{seq}.{k}"))
                        .json_data(chunk)
                        .expect("a chunk serialises")
                })
                .collect();
            // `[DONE]` once, after the chunks of the event that ended the run
            if chunks.ended && !was_ended && after.wants(seq, made.len()) {
                out.push(Event::default().data("[DONE]"));
            }
            futures::stream::iter(out.into_iter().map(Ok::<_, Infallible>))
        });
    let mut response = Sse::new(sse)
        .keep_alive(KeepAlive::default())
        .into_response();
    let headers = response.headers_mut();
    headers.insert(
        "x-vercel-ai-ui-message-stream",
        HeaderValue::from_static("v1"),
    );
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// Where a client resumes: after chunk `k` of event `seq` (`None`: after all its chunks).
#[derive(Clone, Copy)]
struct After {
    seq: i64,
    k: Option<usize>,
}

impl After {
    fn wants(self, seq: i64, k: usize) -> bool {
        seq > self.seq || (seq == self.seq && self.k.is_some_and(|after| k > after))
    }
}

/// `Last-Event-ID` as `<seq>.<k>` or `<seq>`; from the start without one.
fn resume_after_chunk(headers: &HeaderMap) -> Result<After, ApiError> {
    let Some(raw) = headers.get("last-event-id") else {
        return Ok(After { seq: 0, k: None });
    };
    let bad = || {
        ApiError::BadRequest(
            "Last-Event-ID must be a chunk id (`<seq>.<k>`) or an event seq".into(),
        )
    };
    let text = raw.to_str().map_err(|_| bad())?.trim();
    let (seq, k) = match text.split_once('.') {
        Some((seq, k)) => (seq, Some(k.parse::<usize>().map_err(|_| bad())?)),
        None => (text, None),
    };
    let seq = seq
        .parse::<i64>()
        .ok()
        .filter(|s| *s >= 0)
        .ok_or_else(bad)?;
    Ok(After { seq, k })
}

/// Turns a run's events, in order from the first, into UI message chunks.
struct Chunks {
    run_id: RunId,
    /// An attempt's message is open (`start` sent, no `finish` yet).
    open: bool,
    /// The id of the text part, and of the reasoning part, being appended to.
    text: Option<String>,
    /// The tool calls of the open message, which results may answer.
    calls: std::collections::HashSet<String>,
    reasoning: Option<String>,
    /// The run's end was sent: nothing follows but `[DONE]`.
    ended: bool,
}

impl Chunks {
    fn new(run_id: RunId) -> Self {
        Self {
            run_id,
            open: false,
            text: None,
            reasoning: None,
            calls: Default::default(),
            ended: false,
        }
    }

    /// The chunks `event` makes.
    fn feed(&mut self, event: &RunEvent) -> Vec<Value> {
        let mut out = Vec::new();
        if event.kind == "requeued" {
            // a failed run put back in the queue: its next attempts follow
            self.ended = false;
            return out;
        }
        if self.ended {
            return out;
        }
        match event.kind.as_str() {
            "started" => {
                self.end_message(&mut out, "other");
                self.start(&mut out, event.seq);
            }
            "stream" => {
                if !self.open {
                    self.start(&mut out, event.seq);
                }
                self.part(&mut out, event);
            }
            "progress" if self.open => out.push(json!({
                "type": "data-progress",
                "id": "progress",
                "data": event.data,
            })),
            "retry_scheduled" | "attempt_lost" => self.end_message(&mut out, "error"),
            "released" | "waiting" => self.end_message(&mut out, "other"),
            "succeeded" => {
                self.end_message(&mut out, "stop");
                self.ended = true;
            }
            "failed" => {
                self.close_parts(&mut out);
                self.open = false;
                let message = event.data["error"]["message"]
                    .as_str()
                    .unwrap_or("the run failed");
                out.push(json!({ "type": "error", "errorText": message }));
                self.ended = true;
            }
            "cancelled" => {
                self.close_parts(&mut out);
                self.open = false;
                out.push(json!({ "type": "abort", "reason": "cancelled" }));
                self.ended = true;
            }
            _ => {}
        }
        out
    }

    fn start(&mut self, out: &mut Vec<Value>, seq: i64) {
        self.open = true;
        self.calls.clear();
        out.push(json!({ "type": "start", "messageId": format!("{}-{seq}", self.run_id) }));
    }

    fn end_message(&mut self, out: &mut Vec<Value>, reason: &str) {
        if self.open {
            self.close_parts(out);
            out.push(json!({ "type": "finish", "finishReason": reason }));
            self.open = false;
        }
    }

    fn close_parts(&mut self, out: &mut Vec<Value>) {
        if let Some(id) = self.text.take() {
            out.push(json!({ "type": "text-end", "id": id }));
        }
        if let Some(id) = self.reasoning.take() {
            out.push(json!({ "type": "reasoning-end", "id": id }));
        }
    }

    fn part(&mut self, out: &mut Vec<Value>, event: &RunEvent) {
        let part = &event.data;
        let text = || part["text"].as_str().unwrap_or_default();
        match part["type"].as_str().unwrap_or_default() {
            "text" => {
                if let Some(id) = self.reasoning.take() {
                    out.push(json!({ "type": "reasoning-end", "id": id }));
                }
                let id = self.text.get_or_insert_with(|| {
                    let id = format!("text-{}", event.seq);
                    out.push(json!({ "type": "text-start", "id": id }));
                    id
                });
                out.push(json!({ "type": "text-delta", "id": id, "delta": text() }));
            }
            "reasoning" => {
                if let Some(id) = self.text.take() {
                    out.push(json!({ "type": "text-end", "id": id }));
                }
                let id = self.reasoning.get_or_insert_with(|| {
                    let id = format!("reasoning-{}", event.seq);
                    out.push(json!({ "type": "reasoning-start", "id": id }));
                    id
                });
                out.push(json!({ "type": "reasoning-delta", "id": id, "delta": text() }));
            }
            // the agent ran the tool (`providerExecuted`), whatever tools the page knows
            // (`dynamic`): a page's own tool handlers are not called for it
            "tool_call" => {
                self.close_parts(out);
                let id = part["tool_call_id"].as_str().unwrap_or_default();
                self.calls.insert(id.to_owned());
                out.push(json!({
                    "type": "tool-input-available",
                    "toolCallId": id,
                    "toolName": part["tool_name"],
                    "input": part["input"],
                    "providerExecuted": true,
                    "dynamic": true,
                }));
            }
            "tool_result" => {
                self.close_parts(out);
                let id = part["tool_call_id"].as_str().unwrap_or_default();
                if self.calls.contains(id) {
                    out.push(json!({
                        "type": "tool-output-available",
                        "toolCallId": id,
                        "output": part["output"],
                        "providerExecuted": true,
                        "dynamic": true,
                    }));
                } else {
                    // a result of no call in this message (an earlier attempt's, say): a
                    // client would refuse it as a tool output, so it comes as data
                    out.push(json!({
                        "type": "data-tool-result",
                        "id": id,
                        "data": { "toolCallId": id, "output": part["output"] },
                    }));
                }
            }
            "data" => {
                let name = part["name"].as_str().unwrap_or_default();
                out.push(json!({
                    "type": format!("data-{name}"),
                    "id": name,
                    "data": part["data"],
                }));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn event(seq: i64, kind: &str, attempt: u32, data: Value) -> RunEvent {
        RunEvent {
            seq,
            at: Utc::now(),
            kind: kind.into(),
            attempt,
            data,
            actor: None,
        }
    }

    fn types(chunks: &[Value]) -> Vec<&str> {
        chunks.iter().map(|c| c["type"].as_str().unwrap()).collect()
    }

    #[test]
    fn attempts_are_messages_and_the_run_ends_the_stream() {
        let id = RunId::new();
        let mut chunks = Chunks::new(id);
        let mut all = Vec::new();
        let events = [
            event(1, "created", 0, json!({})),
            event(2, "started", 1, json!({})),
            event(3, "stream", 1, json!({"type": "text", "text": "Hel"})),
            event(4, "stream", 1, json!({"type": "text", "text": "lo"})),
            event(5, "retry_scheduled", 1, json!({})),
            event(6, "started", 2, json!({})),
            event(7, "stream", 2, json!({"type": "reasoning", "text": "hmm"})),
            event(8, "stream", 2, json!({"type": "text", "text": "Hi"})),
            event(9, "progress", 2, json!({"percent": 50, "message": null})),
            event(
                10,
                "stream",
                2,
                json!({"type": "tool_call", "tool_call_id": "c", "tool_name": "t", "input": {}}),
            ),
            event(11, "succeeded", 2, json!({})),
            event(12, "webhook_delivered", 2, json!({})),
        ];
        for e in &events {
            all.extend(chunks.feed(e));
        }
        assert!(chunks.ended);
        assert_eq!(
            types(&all),
            vec![
                "start",
                "text-start",
                "text-delta",
                "text-delta",
                "text-end",
                "finish",
                "start",
                "reasoning-start",
                "reasoning-delta",
                "reasoning-end",
                "text-start",
                "text-delta",
                "data-progress",
                "text-end",
                "tool-input-available",
                "finish",
            ]
        );
        assert_eq!(all[0]["messageId"], format!("{id}-2"));
        assert_eq!(all[6]["messageId"], format!("{id}-6"));
        assert_eq!(all[2]["id"], all[3]["id"]);
        assert_eq!(all[5]["finishReason"], "error");
        assert_eq!(all[15]["finishReason"], "stop");
    }

    #[test]
    fn a_failed_run_ends_with_an_error_and_a_cancelled_one_with_an_abort() {
        let mut chunks = Chunks::new(RunId::new());
        chunks.feed(&event(1, "started", 1, json!({})));
        let tail = chunks.feed(&event(2, "stream", 1, json!({"type": "text", "text": "x"})));
        assert_eq!(types(&tail), vec!["text-start", "text-delta"]);
        let error = json!({"error": {"kind": "agent", "message": "boom"}});
        let end = chunks.feed(&event(3, "failed", 1, error));
        assert_eq!(types(&end), vec!["text-end", "error"]);
        assert_eq!(end[1]["errorText"], "boom");
        let mut chunks = Chunks::new(RunId::new());
        assert_eq!(
            types(&chunks.feed(&event(1, "cancelled", 0, json!({})))),
            vec!["abort"]
        );
        assert!(chunks.ended);
    }

    #[test]
    fn a_requeued_run_goes_on_and_tool_results_answer_calls_of_their_message() {
        let mut chunks = Chunks::new(RunId::new());
        chunks.feed(&event(1, "started", 1, json!({})));
        let error = json!({"error": {"kind": "agent", "message": "boom"}});
        chunks.feed(&event(2, "failed", 1, error));
        assert!(chunks.ended);
        assert!(
            chunks
                .feed(&event(3, "webhook_delivered", 1, json!({})))
                .is_empty()
        );
        chunks.feed(&event(4, "requeued", 0, json!({})));
        assert!(!chunks.ended);
        assert_eq!(
            types(&chunks.feed(&event(5, "started", 1, json!({})))),
            vec!["start"]
        );
        let call =
            json!({"type": "tool_call", "tool_call_id": "c1", "tool_name": "t", "input": {}});
        let made = chunks.feed(&event(6, "stream", 1, call));
        assert_eq!(made[0]["providerExecuted"], true);
        let answer = json!({"type": "tool_result", "tool_call_id": "c1", "output": 1});
        assert_eq!(
            types(&chunks.feed(&event(7, "stream", 1, answer))),
            vec!["tool-output-available"]
        );
        let orphan = json!({"type": "tool_result", "tool_call_id": "c0", "output": 2});
        assert_eq!(
            types(&chunks.feed(&event(8, "stream", 1, orphan))),
            vec!["data-tool-result"]
        );
    }

    #[test]
    fn a_resume_point_names_a_chunk_or_a_whole_event() {
        let at = |v: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("last-event-id", HeaderValue::from_str(v).unwrap());
            resume_after_chunk(&headers)
        };
        let after = at("7.1").ok().unwrap();
        assert!(!after.wants(7, 1) && after.wants(7, 2) && after.wants(8, 0) && !after.wants(6, 5));
        let after = at("7").ok().unwrap();
        assert!(!after.wants(7, 9) && after.wants(8, 0));
        assert!(at("x").is_err() && at("7.x").is_err() && at("-1").is_err());
        assert!(
            resume_after_chunk(&HeaderMap::new())
                .ok()
                .unwrap()
                .wants(1, 0)
        );
    }
}
