//! `GET /v1/runs/{id}/events` as a live `text/event-stream`.
//!
//! The stream replays the events after `Last-Event-ID` (or `after`), then sends each new
//! event as it is committed, with its `seq` as the SSE id so a reconnecting client resumes
//! without gaps or repeats. It ends after the run's terminal event (a `succeeded` event
//! carries the run's `result` there); a reconnect after it is answered `204`, which tells a
//! browser's EventSource to stop. Changes made in this
//! process arrive at once through the store's event hub; changes made by workers in other
//! processes are found by one read of every followed run's newest seq each quarter second
//! (`store::engine::heads`), which wakes the streams of the runs that moved.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};

use crate::domain::{EventKind, RunEvent, RunId, RunStatus};
use crate::store::{EventBounds, EventFollower, Store};

use super::error::ApiError;

/// A stream reads again after this long without being told of a change: a safety net
/// only. Its own process's commits are told at once, other processes' within a quarter
/// second (`store::engine::heads`, one read for every stream of the process).
const POLL: Duration = Duration::from_secs(30);

/// Whether the client asked for a live stream.
pub(super) fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

/// Where to resume: `Last-Event-ID` wins over the `after` query parameter.
pub(super) fn resume_after(headers: &HeaderMap, after: Option<i64>) -> Result<i64, ApiError> {
    match headers.get("last-event-id") {
        None => Ok(after.unwrap_or(0)),
        Some(raw) => raw
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .filter(|seq| *seq >= 0)
            .ok_or_else(|| ApiError::BadRequest("Last-Event-ID must be an event seq".into())),
    }
}

/// What one read of a stream's events from the database may hold: the stream's replay of
/// a long run goes page by page, never all of it in memory at once.
const READ_BOUNDS: EventBounds = EventBounds {
    limit: super::runs::MAX_EVENTS_PAGE,
    bytes: super::runs::EVENTS_PAGE_BYTES,
};

/// The live streams this process serves, and the most it may (`--max-streams`).
#[derive(Debug)]
pub struct StreamSlots {
    open: AtomicUsize,
    max: usize,
}

/// One stream's place, given back when the stream ends.
pub(super) struct StreamSlot(Arc<StreamSlots>);

impl StreamSlots {
    pub fn new(max: usize) -> Self {
        Self {
            open: AtomicUsize::new(0),
            max,
        }
    }

    /// A place for one more stream, or `503 too_many_streams`.
    pub(super) fn take(self: &Arc<Self>) -> Result<StreamSlot, ApiError> {
        let taken = self
            .open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |open| {
                (open < self.max).then_some(open + 1)
            });
        match taken {
            Ok(_) => Ok(StreamSlot(self.clone())),
            Err(_) => Err(ApiError::Overloaded {
                code: "too_many_streams",
                detail: format!(
                    "this server serves as many live streams as it may ({}, --max-streams): try again shortly, or poll the run",
                    self.max
                ),
                retry_after: 5,
            }),
        }
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Follow {
    /// Held while the stream lasts.
    _slot: StreamSlot,
    store: Store,
    id: RunId,
    after: i64,
    pending: VecDeque<RunEvent>,
    /// The last read stopped at its bounds: more events wait in the database.
    more: bool,
    heads: EventFollower,
    heads_open: bool,
    /// The run has ended (seen at the start, or a terminal event was sent): the stream ends
    /// once the events already read are sent.
    ended: bool,
}

/// `finished`: the run had finished when the caller read it. If it finished since, its
/// terminal event is among those read here (it comes after `after`: the client cannot
/// have seen it yet) and ends the stream in its turn.
pub(super) async fn stream_events(
    store: Store,
    slot: StreamSlot,
    id: RunId,
    after: i64,
    finished: bool,
) -> Result<Response, ApiError> {
    let start = start(store.clone(), slot, id, after, finished).await?;
    // a browser's EventSource reconnects after the stream ended: `204` tells it to stop
    if finished && start.pending.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    // the success carries the result, so a follower needs no GET for it (a failure carries
    // its error already); null when the run cannot be read (retention took it)
    let events = events(start).then(move |mut event| {
        let store = store.clone();
        async move {
            if event.kind == EventKind::Succeeded.as_str()
                && let Some(data) = event.data.as_object_mut()
            {
                let result = store.get_run(id).await.ok().and_then(|run| run.result);
                data.insert("result".into(), result.unwrap_or(serde_json::Value::Null));
            }
            event
        }
    });
    Ok(
        Sse::new(events.map(|event| Ok::<_, Infallible>(to_sse(&event))))
            .keep_alive(KeepAlive::default())
            .into_response(),
    )
}

/// The run's events after `after`, then each new one as it is committed, until the
/// run's terminal event (and those written with it). `finished` as for `stream_events`.
pub(super) async fn follow(
    store: Store,
    slot: StreamSlot,
    id: RunId,
    after: i64,
    finished: bool,
) -> Result<impl Stream<Item = RunEvent> + Send + 'static, ApiError> {
    Ok(events(start(store, slot, id, after, finished).await?))
}

/// Follows the run, then reads its events after `after`: the stream's start.
async fn start(
    store: Store,
    slot: StreamSlot,
    id: RunId,
    after: i64,
    finished: bool,
) -> Result<Follow, ApiError> {
    // follow before reading, so nothing committed in between is missed
    let heads = store.follow_events(id);
    let page = store.list_events_within(id, after, READ_BOUNDS).await?;
    // what was read needs no waking for (the watcher wakes streams whose runs move past it)
    if let Some(last) = page.events.last() {
        heads.seen(last.seq);
    }
    Ok(Follow {
        _slot: slot,
        pending: page.events.into(),
        more: page.more,
        ended: finished,
        store,
        id,
        after,
        heads,
        heads_open: true,
    })
}

fn events(follow: Follow) -> impl Stream<Item = RunEvent> {
    futures::stream::unfold(follow, |mut f| async move {
        loop {
            if let Some(event) = f.pending.pop_front() {
                f.after = event.seq;
                // events written with or after the terminal one (compensation, webhooks)
                // are still sent; then the stream ends
                // (a terminal event is named after the status it leaves the run in)
                f.ended |= event
                    .kind
                    .parse::<RunStatus>()
                    .is_ok_and(RunStatus::is_terminal);
                // a failed run put back in the queue goes on
                if event.kind == EventKind::Requeued.as_str() {
                    f.ended = false;
                }
                return Some((event, f));
            }
            // the rest of a read cut by its bounds comes at once, ended or not
            if f.more {
                if !f.read_page().await {
                    return None;
                }
                continue;
            }
            if f.ended {
                return None;
            }
            let mut woken = false;
            tokio::select! {
                changed = f.heads.changed(), if f.heads_open => {
                    f.heads_open = changed;
                    woken = changed;
                }
                _ = tokio::time::sleep(POLL) => {}
            }
            // what this process committed is in memory; what others did, in the database
            if woken && let Some(events) = f.heads.recent_after(f.after) {
                f.pending.extend(events);
                continue;
            }
            if !f.read_page().await {
                return None;
            }
        }
    })
}

impl Follow {
    /// Reads the events after the last one sent, within the bounds; false when the read
    /// failed (the stream ends).
    async fn read_page(&mut self) -> bool {
        match self
            .store
            .list_events_within(self.id, self.after, READ_BOUNDS)
            .await
        {
            Ok(page) => {
                self.more = page.more;
                self.pending.extend(page.events);
                true
            }
            Err(e) => {
                tracing::warn!(run.id = %self.id, error = %e, "event stream ended: reading events failed");
                false
            }
        }
    }
}

fn to_sse(event: &RunEvent) -> Event {
    Event::default()
        .id(event.seq.to_string())
        .event(&event.kind)
        .json_data(event)
        .expect("an event serialises")
}
