//! The shape of an event's `data`, per event type, for the OpenAPI document: each type's
//! schema is a component (`ProgressEventData`, …), and `RunEvent.data` names them by type in
//! its description and in `x-agentq-data-schemas` (type → `$ref`). `data` itself stays an
//! open object in `RunEvent`: a union of shapes without a tag of their own would make
//! generated clients guess, and guess wrong. `tests/api/openapi.rs` checks the events of
//! real runs against these schemas, so a change to what the engine writes fails there.
//!
//! These types are never built: the engine writes the data as JSON where the event is made.
#![allow(dead_code)]

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::domain::{EventKind, RunError, StreamPart};

/// `created`, `requeued`: nothing more.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmptyEventData {}

/// `started`, `released`: the worker process the attempt ran (or runs) on.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerEventData {
    pub worker_id: String,
}

/// `progress`: as the agent reported it.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgressEventData {
    #[schema(minimum = 0, maximum = 100)]
    pub percent: u8,
    pub message: Option<String>,
}

/// `log`: a line the agent wrote.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogEventData {
    /// `debug`, `info`, `warn` or `error`.
    pub level: String,
    pub message: String,
}

/// `failed`, `attempt_lost`, and `cancelled` when a run it depended on was cancelled.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorEventData {
    pub error: RunError,
}

/// `retry_scheduled`: why the attempt failed, and when the next one is due.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryEventData {
    pub error: RunError,
    #[schema(format = DateTime)]
    pub next_attempt_at: String,
}

/// `succeeded`: empty in the log; on a live stream (`Accept: text/event-stream`) it
/// carries the run's `result`, so a client needs no read after it.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SucceededEventData {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

/// `cancelled`: empty when cancelled by request (the event's `actor` says by whom); with
/// `reason: concurrency_key` when a newer run's key policy cancelled it; with `error` when
/// a run it depended on was cancelled.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelledEventData {
    /// `concurrency_key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The key policy that cancelled it: `cancel_running` or `drop_queued`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The run whose key policy cancelled it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_run_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<RunError>,
}

/// `checkpoint`: the size of the state saved (the state is on the run).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointEventData {
    pub bytes: u64,
}

/// `compensation_created`: the compensation run made for the run that failed.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompensationEventData {
    pub run_id: String,
}

/// `unblocked`: the key whose turn came, or nothing when every run it depended on
/// succeeded.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnblockedEventData {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
}

/// `waiting`: the signals that resume the run and when the wait ends.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitingEventData {
    pub signals: Vec<String>,
    #[schema(format = DateTime)]
    pub until: String,
}

/// `signal_received`: the signal's name and payload (the event's `actor` says who sent it).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalEventData {
    pub name: String,
    /// Any JSON (`null` when the signal had none).
    pub payload: Value,
}

/// `resumed`: the signal that resumed the run (`timed_out` when its wait ran out and the
/// agent asked to be resumed then); or, when one of the signals it began to wait for was
/// already there, those signals and `already_received`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumedEventData {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timed_out: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signals: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub already_received: Option<bool>,
}

/// `changed`: what a change by request set (only what it changed).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangedEventData {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub run_at: Option<String>,
}

/// `webhook_delivered`: the completion webhook's delivery, its try, and the status the
/// receiver answered.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookDeliveredEventData {
    pub delivery: i64,
    pub attempt: u32,
    pub status: u16,
}

/// `webhook_failed`: a try that failed, and when the next is due (`null` once given up).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookFailedEventData {
    pub delivery: i64,
    pub attempt: u32,
    pub error: String,
    #[schema(format = DateTime)]
    pub next_attempt_at: Option<String>,
    pub given_up: bool,
}

/// The schema of each event type's `data`.
pub fn schema_of(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Created | EventKind::Requeued => "EmptyEventData",
        EventKind::Started | EventKind::Released => "WorkerEventData",
        EventKind::Progress => "ProgressEventData",
        EventKind::Log => "LogEventData",
        EventKind::RetryScheduled => "RetryEventData",
        EventKind::Succeeded => "SucceededEventData",
        EventKind::Failed | EventKind::AttemptLost => "ErrorEventData",
        EventKind::Cancelled => "CancelledEventData",
        EventKind::Checkpoint => "CheckpointEventData",
        EventKind::CompensationCreated => "CompensationEventData",
        EventKind::Unblocked => "UnblockedEventData",
        EventKind::Waiting => "WaitingEventData",
        EventKind::SignalReceived => "SignalEventData",
        EventKind::Resumed => "ResumedEventData",
        EventKind::Changed => "ChangedEventData",
        EventKind::WebhookDelivered => "WebhookDeliveredEventData",
        EventKind::WebhookFailed => "WebhookFailedEventData",
        EventKind::Stream => "StreamPart",
    }
}

/// Every event type, in the order `EventKind` declares them.
pub const KINDS: [EventKind; 21] = [
    EventKind::Created,
    EventKind::Started,
    EventKind::Progress,
    EventKind::Log,
    EventKind::RetryScheduled,
    EventKind::Succeeded,
    EventKind::Failed,
    EventKind::Released,
    EventKind::AttemptLost,
    EventKind::Checkpoint,
    EventKind::CompensationCreated,
    EventKind::Unblocked,
    EventKind::Waiting,
    EventKind::SignalReceived,
    EventKind::Resumed,
    EventKind::WebhookDelivered,
    EventKind::WebhookFailed,
    EventKind::Cancelled,
    EventKind::Requeued,
    EventKind::Changed,
    EventKind::Stream,
];

/// Adds the data schemas to the document and names them, per type, on `RunEvent.data`.
pub(super) fn document(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::extensions::ExtensionsBuilder;
    use utoipa::openapi::schema::Schema;
    let components = doc.components.get_or_insert_with(Default::default);
    // each under its own name (`ToSchema::name`), the one `schema_of` gives
    fn entry<T: ToSchema>() -> (String, utoipa::openapi::RefOr<Schema>) {
        (T::name().into_owned(), T::schema())
    }
    for (name, schema) in [
        entry::<EmptyEventData>(),
        entry::<WorkerEventData>(),
        entry::<ProgressEventData>(),
        entry::<LogEventData>(),
        entry::<RetryEventData>(),
        entry::<SucceededEventData>(),
        entry::<ErrorEventData>(),
        entry::<CancelledEventData>(),
        entry::<CheckpointEventData>(),
        entry::<CompensationEventData>(),
        entry::<UnblockedEventData>(),
        entry::<WaitingEventData>(),
        entry::<SignalEventData>(),
        entry::<ResumedEventData>(),
        entry::<ChangedEventData>(),
        entry::<WebhookDeliveredEventData>(),
        entry::<WebhookFailedEventData>(),
        entry::<RunError>(),
        entry::<StreamPart>(),
    ] {
        components.schemas.entry(name).or_insert(schema);
    }
    let Some(RefOr::T(Schema::Object(event))) = components.schemas.get_mut("RunEvent") else {
        return;
    };
    let Some(RefOr::T(Schema::Object(data))) = event.properties.get_mut("data") else {
        return;
    };
    let mut by_type = serde_json::Map::new();
    let mut lines = Vec::new();
    for kind in KINDS {
        let schema = schema_of(kind);
        by_type.insert(
            kind.as_str().to_owned(),
            Value::String(format!("#/components/schemas/{schema}")),
        );
        lines.push(format!("`{}`: `{schema}`", kind.as_str()));
    }
    data.description = Some(format!(
        "What the event records; its shape depends on `type` (the schema of each, also in \
         `x-agentq-data-schemas`): {}.",
        lines.join(", ")
    ));
    let extensions = ExtensionsBuilder::new()
        .add("x-agentq-data-schemas", Value::Object(by_type))
        .build();
    match data.extensions.as_mut() {
        Some(existing) => existing.merge(extensions),
        None => data.extensions = Some(extensions),
    }
}
