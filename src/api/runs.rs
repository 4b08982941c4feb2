//! `/v1/runs`: create, read, list, and a run's events.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use serde_json::Value;

use crate::domain::{Inserted, Run, RunEvent, RunStatus, Scope, StatusCounts};
use crate::store::EventBounds;

use super::ApiState;
use super::auth::Caller;
use super::conditional::{etag_of, if_none_match};
use super::create::{CreateRunRequest, KnownAgents, at_given_positions, idempotency_key};
use super::error::{ApiError, FieldError, Problem};
use super::extract::parse_run_id;
use super::extract::{JsonBody, QueryParams, from_value};
use super::list::{CountRunsParams, ListRunsParams, METADATA_PARAM};
use super::stream;

/// A run just accepted, with a token a browser may use for it.
#[derive(Serialize, ToSchema)]
pub struct CreatedRun {
    #[serde(flatten)]
    pub run: Run,
    /// Lets its holder read this run, follow its events (also as `?access_token=`, for
    /// `EventSource`) and send the signals it waits for; nothing else. Short-lived
    /// (`--run-token-ttl`), so a frontend never needs the tenant's API key.
    pub run_token: String,
    #[serde(serialize_with = "crate::domain::time::ms")]
    pub run_token_expires_at: chrono::DateTime<chrono::Utc>,
}

impl CreatedRun {
    /// The run with a fresh token for it.
    pub(super) fn new(run: Run, auth: &super::auth::Auth) -> Self {
        let (run_token, run_token_expires_at) = auth.run_token(&run);
        Self {
            run,
            run_token,
            run_token_expires_at,
        }
    }
}

/// A page of runs, newest first.
#[derive(Serialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<Run>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A run's events, oldest first: a page of at most `limit` events and about 4 MiB.
#[derive(Serialize, ToSchema)]
pub struct EventList {
    pub events: Vec<RunEvent>,
    /// More events follow: pass this as `after` for the next page (the last event's
    /// `seq`); null on the last page.
    pub next_after: Option<i64>,
}

/// The most events one page holds, and its default size.
pub const MAX_EVENTS_PAGE: u32 = 1000;
/// About the most bytes of event data one page (or one read of a live stream) holds; a
/// page holds at least one event whatever its size.
pub const EVENTS_PAGE_BYTES: usize = 4 * 1024 * 1024;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Only events with a greater `seq`.
    pub after: Option<i64>,
    /// 1 to 1000 (default 1000); a page also ends once it holds about 4 MiB of data.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// Submit a run. Validated, stored and queued before the answer.
#[utoipa::path(post, path = "/v1/runs", tag = "runs", operation_id = "create_run",
    request_body = CreateRunRequest,
    responses(
        (status = 202, description = "Accepted and queued", body = CreatedRun,
         headers(("Location" = String, description = "The run's URL"))),
        (status = 200, description = "The run this Idempotency-Key already created (same request)", body = CreatedRun,
         headers(("Location" = String, description = "The run's URL"))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks runs:write", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The Idempotency-Key was used with a different request, or the run's concurrency key is full and its policy is `reject` (`concurrency_key_busy`)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the tenant's request rate or its cap on runs not finished (see Retry-After)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same key with the same body returns the run it created (200); with another body, 409. Keys live 24 h (--idempotency-ttl)."),
        ("traceparent" = Option<String>, Header, description = "W3C trace context: with --otlp-endpoint the request's span, and every attempt of the run, join the caller's trace.")))]
pub async fn create_run(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    caller.require(Scope::RunsWrite)?;
    let tenant = caller.tenant();
    // keys are per tenant: another tenant's same key names another run
    let key = idempotency_key(&headers, &body, state.defaults.idempotency_ttl)?.map(|mut k| {
        k.key = format!("{tenant}:{}", k.key);
        k
    });
    let request: CreateRunRequest = from_value(body)?;
    let given_dependencies = request.depends_on.clone().unwrap_or_default();
    // the declared agents are looked at only for a name this process does not hold
    let declared = if request.agents_named().all(|a| state.registry.contains(a)) {
        Default::default()
    } else {
        state.declared.current().await?
    };
    let agents = KnownAgents {
        registry: &state.registry,
        declared: &declared,
        secrets: &state.secrets,
    };
    let mut new_run = request.into_new_run(&agents, &state.defaults, key, tenant.clone())?;
    // the trace its attempts continue (see `telemetry::attempt_span`)
    new_run.trace_parent = crate::telemetry::trace_parent_for_new_run(&headers);
    new_run.created_by = Some(caller.actor());
    let inserted = match state.limits.admit_run(&state.store, tenant.as_str()).await {
        Ok(()) => {
            let kept_dependencies = new_run.depends_on.clone();
            let inserted = state
                .store
                .insert_run(new_run)
                .await
                .map_err(|e| at_given_positions(e, &kept_dependencies, &given_dependencies));
            if !matches!(inserted, Ok(Inserted::New(_))) {
                state.limits.unreserve(tenant.as_str()).await;
            }
            inserted?
        }
        // at the cap, the retry of a request that created its run is still answered with it
        Err(refused) => match &new_run.idempotency {
            Some(key) => Inserted::Existing(state.store.idempotent_run(key).await?.ok_or(refused)?),
            None => return Err(refused),
        },
    };
    let (status, run) = match inserted {
        Inserted::New(run) => {
            state.metrics.run_created(&run.agent);
            (StatusCode::ACCEPTED, *run)
        }
        // the same request again: the run it created, as it is now (keys are per tenant;
        // a run of another tenant is never handed out, whatever the key)
        Inserted::Existing(id) => {
            let run = state.store.get_run(id).await?;
            if !caller.sees(run.id, &run.tenant) {
                return Err(ApiError::ConflictCode {
                    code: "idempotency_key_reused",
                    detail: "this Idempotency-Key is taken; use another".into(),
                });
            }
            (StatusCode::OK, run)
        }
    };
    let location = HeaderValue::from_str(&format!("/v1/runs/{}", run.id))
        .expect("a UUID path is a valid header value");
    let created = CreatedRun::new(run, &state.auth);
    Ok((status, [(header::LOCATION, location)], Json(created)).into_response())
}

/// Read a run. Supports `If-None-Match` for cheap polling.
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs", operation_id = "get_run",
    params(("id" = String, Path, description = "Run id"),
           ("If-None-Match" = Option<String>, Header, description = "The ETag of the run as last read: a 304 with no body while it is unchanged")),
    responses(
        (status = 200, description = "The run", body = Run,
         headers(("ETag" = String, description = "Changes when the run does, but not when only its lease is renewed"), ("Retry-After" = String, description = "Seconds to wait before polling again, only while the run is not finished: 1 while it runs, up to 60 until it is due, its next attempt or the end of its wait, 5 while blocked"))),
        (status = 304, description = "Unchanged since the given ETag"),
        (status = 401, description = "No valid API key or run token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such run (or another tenant's)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_run(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let run = state.store.get_run(parse_run_id(&id)?).await?;
    caller.may_read(&run)?;
    let body = serde_json::to_vec(&run).expect("a run serialises");
    // the tag leaves out the lease, which its worker renews every second or so: a poll
    // while the run runs is a cheap 304 until something a client reads changes
    let etag = {
        let mut tagged = run.clone();
        tagged.lease_until = None;
        etag_of(&serde_json::to_vec(&tagged).expect("a run serialises"))
    };
    // weak: a 304 may stand for a body whose lease moved
    let mut response = if if_none_match(&headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    };
    let out = response.headers_mut();
    out.insert(
        header::ETAG,
        HeaderValue::from_str(&format!("W/{etag}")).expect("hex is a valid header"),
    );
    if let Some(seconds) = poll_again_in(&run, chrono::Utc::now()) {
        out.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    Ok(response)
}

/// How long a client polling the run may wait before it looks again (`Retry-After`, in
/// seconds): 1 while it runs; until it is due, its next attempt or its wait's end (at most a
/// minute) while it waits for one of those; 5 while it is blocked; nothing once finished.
fn poll_again_in(run: &Run, now: chrono::DateTime<chrono::Utc>) -> Option<u64> {
    let until = |at: chrono::DateTime<chrono::Utc>| ((at - now).num_seconds()).clamp(1, 60) as u64;
    Some(match run.status {
        s if s.is_terminal() => return None,
        RunStatus::Running => 1,
        RunStatus::Blocked => 5,
        RunStatus::Waiting => run.waiting_for.as_ref().map_or(30, |w| until(w.until)),
        RunStatus::Retrying => run.next_attempt_at.map_or(1, until),
        _ => until(run.run_at),
    })
}

/// List runs, newest first, with filters and cursor paging. The runs are summaries: their
/// `input`, `result`, `checkpoint` and `on_failure` are null unless `include` names them,
/// and a page ends early (with a `next_cursor`) once its bodies and metadata reach about
/// 8 MiB.
#[utoipa::path(get, path = "/v1/runs", tag = "runs", operation_id = "list_runs",
    params(ListRunsParams,
           ("metadata" = Option<Vec<String>>, Query, style = Form, explode, description = METADATA_PARAM)),
    responses(
        (status = 200, description = "A page of the caller's tenant's runs", body = RunList),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks runs:read", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid filter", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_runs(
    State(state): State<ApiState>,
    caller: Caller,
    uri: Uri,
    QueryParams(params): QueryParams<ListRunsParams>,
) -> Result<Json<RunList>, ApiError> {
    caller.require(Scope::RunsRead)?;
    let mut filter = params.into_filter(uri.query().unwrap_or_default())?;
    filter.tenant = caller.tenant_filter();
    let page = state.store.list_runs(&filter).await?;
    Ok(Json(RunList {
        runs: page.runs,
        next_cursor: page.next_cursor.map(|id| id.to_string()),
    }))
}

/// How many runs match, by status: the caller's tenant's runs with the same filters as
/// listing (status, cursor and limit aside). Counting reads every matching run: on a
/// large table, narrow it with `created_after` or keep the table bounded with retention.
#[utoipa::path(get, path = "/v1/runs/counts", tag = "runs", operation_id = "count_runs",
    params(CountRunsParams,
           ("metadata" = Option<Vec<String>>, Query, style = Form, explode, description = METADATA_PARAM)),
    responses(
        (status = 200, description = "The counts; every status is present", body = StatusCounts),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks runs:read", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid filter", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn count_runs(
    State(state): State<ApiState>,
    caller: Caller,
    uri: Uri,
    QueryParams(params): QueryParams<CountRunsParams>,
) -> Result<Json<StatusCounts>, ApiError> {
    caller.require(Scope::RunsRead)?;
    let mut filter = params.into_filter(uri.query().unwrap_or_default())?;
    filter.tenant = caller.tenant_filter();
    Ok(Json(state.store.count_runs(&filter).await?))
}

/// A run's events in order: created, started, progress, retry_scheduled, succeeded, ….
/// With `Accept: text/event-stream`, a live stream that resumes after `Last-Event-ID` and
/// ends after the run's terminal event.
#[utoipa::path(get, path = "/v1/runs/{id}/events", tag = "runs", operation_id = "list_run_events",
    params(("id" = String, Path, description = "Run id"), EventParams,
           ("Last-Event-ID" = Option<String>, Header, description = "Resume a stream after this event seq"),
           ("access_token" = Option<String>, Query, description = "The run's token, for clients that cannot send an Authorization header (EventSource)")),
    responses(
        (status = 200, description = "The events: a JSON list, or a server-sent event stream whose events carry the seq as id, the type as event name and the event as JSON data",
         content((EventList = "application/json"), (String = "text/event-stream"))),
        (status = 204, description = "A stream asked for after the run's last event, once it finished: nothing more will come (an EventSource stops)"),
        (status = 400, description = "Invalid Last-Event-ID", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid after", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key or run token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such run (or another tenant's)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A stream asked for while this process serves as many as it may (`too_many_streams`, --max-streams)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_run_events(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    QueryParams(params): QueryParams<EventParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_run_id(&id)?;
    let run = state.store.get_run(id).await?;
    caller.may_read(&run)?;
    if stream::wants_stream(&headers) {
        let after = stream::resume_after(&headers, params.after)?;
        let finished = run.status.is_terminal();
        let slot = state.streams.take()?;
        return stream::stream_events(state.store.clone(), slot, id, after, finished).await;
    }
    let limit = match params.limit {
        None => MAX_EVENTS_PAGE,
        Some(n) if (1..=MAX_EVENTS_PAGE).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::Validation(vec![FieldError::new(
                "limit",
                "range",
                format!("limit must be an integer from 1 to {MAX_EVENTS_PAGE}"),
            )]));
        }
    };
    let bounds = EventBounds {
        limit,
        bytes: EVENTS_PAGE_BYTES,
    };
    let page = state
        .store
        .list_events_within(id, params.after.unwrap_or(0), bounds)
        .await?;
    let next_after = page
        .more
        .then(|| page.events.last().map(|e| e.seq))
        .flatten();
    Ok(Json(EventList {
        events: page.events,
        next_after,
    })
    .into_response())
}
