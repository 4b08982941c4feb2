//! Schedules: `POST /v1/schedules` makes a run on a cron expression or at an interval;
//! list, read, pause, resume and delete them. Every process ticks (`jobs::tick_schedules`),
//! and each tick makes one run however many do.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::domain::{
    Cadence, CatchUp, NewSchedule, RunId, RunTemplate, SCHEDULE_ID_KEY, SCHEDULE_TICK_KEY,
    Schedule, Scope,
};

use super::ApiState;
use super::auth::Caller;
use super::create::{CreateRunRequest, KnownAgents};
use super::error::{ApiError, FieldError, Problem};
use super::extract::{JsonBody, from_value};

/// The longest schedule name, in characters.
const MAX_NAME_CHARS: usize = 100;
/// The run fields a schedule's run may not set: its times come from its ticks.
const NOT_FOR_A_SCHEDULE: [&str; 4] = ["run_at", "deadline", "expires_at", "depends_on"];

/// A schedule to create: when it ticks, and the run each tick makes (the fields of
/// `POST /v1/runs`, but `run_at`, `deadline`, `expires_at` and `depends_on`).
#[derive(ToSchema)]
#[allow(
    dead_code,
    reason = "the document's schema; the handler reads the JSON itself"
)]
pub struct CreateScheduleRequest {
    /// Unique within the tenant (1–100 characters): a second schedule of the name is a
    /// `409`.
    #[schema(example = "nightly-report", min_length = 1, max_length = 100)]
    name: Option<String>,
    /// A cron expression: 5 fields (minute hour day-of-month month day-of-week), or 6 with
    /// seconds first. Give `cron` or `interval`.
    #[schema(example = "0 9 * * 1-5")]
    cron: Option<String>,
    /// The IANA time zone `cron` is read in (default UTC).
    #[schema(example = "Europe/Paris")]
    timezone: Option<String>,
    /// A fixed interval from the schedule's creation, from 1s to 366 days: `30s`, `5m`,
    /// `1h 30m`.
    #[schema(example = "5m")]
    interval: Option<String>,
    /// What ticks missed while nothing ran (reached more than a minute late) do: `skip`
    /// (default: no run) or `one` (one run, for the latest of them).
    catch_up: Option<CatchUp>,
}

/// The schema of `CreateScheduleRequest` in the document: its own fields, and those of
/// `CreateRunRequest` a schedule's run may set (the handler reads one flat object).
pub(super) fn document_request(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{RefOr, schema::Schema};
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    let run = match components.schemas.get("CreateRunRequest") {
        Some(RefOr::T(Schema::Object(run))) => run.clone(),
        _ => return,
    };
    if let Some(RefOr::T(Schema::Object(own))) = components.schemas.get_mut("CreateScheduleRequest")
    {
        for (name, field) in run.properties {
            if !NOT_FOR_A_SCHEDULE.contains(&name.as_str()) {
                own.properties.insert(name, field);
            }
        }
        own.required = run.required;
        own.additional_properties = run.additional_properties;
    }
}

/// Schedules, newest first.
#[derive(Serialize, ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<Schedule>,
}

/// Create a schedule: from its first tick on, each tick makes one run of `agent` with
/// `input` and the run options given (validated now, as `POST /v1/runs` would). Its runs
/// carry `schedule_id` and `schedule_tick` in their metadata (`GET
/// /v1/runs?metadata[schedule_id]=…` lists them) and the schedule's creator as theirs.
#[utoipa::path(post, path = "/v1/schedules", tag = "schedules", operation_id = "create_schedule",
    request_body = CreateScheduleRequest,
    responses(
        (status = 201, description = "The schedule, with its first tick", body = Schedule,
            headers(("location" = String, description = "/v1/schedules/{id}"))),
        (status = 400, description = "Malformed JSON, or an Idempotency-Key (a schedule's `name` makes creating it safe to retry)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks runs:write", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The tenant has a schedule of that name", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, named", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_schedule(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    caller.require(Scope::RunsWrite)?;
    // refused rather than ignored: a retry would make a second schedule, and twice the runs
    if headers.contains_key("idempotency-key") {
        return Err(ApiError::BadRequest(
            "Idempotency-Key is not taken on POST /v1/schedules: give the schedule a `name` (unique in the tenant), and a retry gets 409 instead of a second schedule".into(),
        ));
    }
    let Value::Object(mut fields) = body else {
        return Err(ApiError::Validation(vec![FieldError::new(
            "body",
            "invalid_type",
            "a schedule is a JSON object",
        )]));
    };
    let mut problems = Vec::new();
    let text =
        |fields: &mut Map<String, Value>, name: &str, problems: &mut Vec<FieldError>| match fields
            .remove(name)
        {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                problems.push(FieldError::new(
                    name,
                    "invalid_type",
                    format!("{name} is a string"),
                ));
                None
            }
        };
    let name = text(&mut fields, "name", &mut problems);
    let cron = text(&mut fields, "cron", &mut problems);
    let timezone = text(&mut fields, "timezone", &mut problems);
    let interval = text(&mut fields, "interval", &mut problems);
    let catch_up = match text(&mut fields, "catch_up", &mut problems) {
        None => CatchUp::default(),
        Some(policy) => policy.parse().unwrap_or_else(|e| {
            problems.push(FieldError::new("catch_up", "invalid_value", e));
            CatchUp::default()
        }),
    };
    if let Some(name) = &name {
        let chars = name.chars().count();
        if chars == 0 || chars > MAX_NAME_CHARS || name.contains('\0') {
            problems.push(FieldError::new(
                "name",
                "invalid_value",
                format!("a schedule's name is 1 to {MAX_NAME_CHARS} characters, without NUL"),
            ));
        }
    }
    let cadence = match (&cron, &interval) {
        (Some(expression), None) => Cadence::cron(expression, timezone.as_deref()),
        (None, Some(every)) => {
            if timezone.is_some() {
                problems.push(FieldError::new(
                    "timezone",
                    "invalid_value",
                    "timezone goes with cron; an interval needs none",
                ));
            }
            Cadence::every(every)
        }
        (Some(_), Some(_)) => Err(("interval", "give cron or interval, not both".into())),
        (None, None) => Err((
            "cron",
            "give cron (an expression) or interval (like 5m)".into(),
        )),
    };
    let cadence = cadence
        .map_err(|(field, message)| {
            problems.push(FieldError::new(field, "invalid_value", message));
        })
        .ok();
    for field in NOT_FOR_A_SCHEDULE {
        if fields.remove(field).is_some() {
            problems.push(FieldError::new(
                field,
                "not_for_a_schedule",
                format!("{field} is not for a schedule's runs: they start at their ticks"),
            ));
        }
    }
    // the run each tick makes, checked as `POST /v1/runs` checks one (the declared agents
    // come from a snapshot kept a moment, not a read per request)
    let declared = state.declared.current().await?;
    let agents = KnownAgents {
        registry: &state.registry,
        declared: &declared,
        secrets: &state.secrets,
    };
    let tenant = caller.tenant();
    let run = from_value::<CreateRunRequest>(Value::Object(fields))
        .and_then(|r| r.into_new_run(&agents, &state.defaults, None, tenant.clone()));
    let template = match run {
        Ok(run) => Some(RunTemplate::of(&run)),
        Err(ApiError::Validation(found)) => {
            problems.extend(found);
            None
        }
        Err(ApiError::MalformedBody(found)) => {
            problems.push(found);
            None
        }
        Err(other) => return Err(other),
    };
    if let Some(template) = &template {
        let reserved = [SCHEDULE_ID_KEY, SCHEDULE_TICK_KEY];
        if reserved.iter().any(|k| template.metadata.contains_key(*k)) {
            problems.push(FieldError::new(
                "metadata",
                "reserved",
                "schedule_id and schedule_tick are the schedule's to set on its runs",
            ));
        } else if template.metadata.len() > 30 {
            problems.push(FieldError::new(
                "metadata",
                "too_many",
                "a schedule's runs take at most 30 keys of their own (they carry schedule_id and schedule_tick too)",
            ));
        }
    }
    let (Some(cadence), Some(template), true) = (cadence, template, problems.is_empty()) else {
        return Err(ApiError::Validation(problems));
    };
    let now = state.store.clock().now();
    let first_tick = cadence.after(now).ok_or_else(|| {
        ApiError::Validation(vec![FieldError::new(
            "cron",
            "invalid_value",
            "this cron expression matches no time to come",
        )])
    })?;
    let id = RunId::new().to_string();
    let interval_ms = match &cadence {
        Cadence::Every(every) => Some(every.as_millis() as u64),
        Cadence::Cron { .. } => None,
    };
    state
        .store
        .create_schedule(NewSchedule {
            id: id.clone(),
            name,
            tenant,
            timezone: cron
                .as_ref()
                .map(|_| timezone.unwrap_or_else(|| "UTC".into())),
            cron: cron.map(|c| c.trim().to_owned()),
            interval_ms,
            catch_up,
            template,
            first_tick,
            created_by: Some(caller.actor()),
        })
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict(code, detail) => {
                ApiError::ConflictCode { code, detail }
            }
            other => other.into(),
        })?;
    let schedule = state.store.get_schedule(&id).await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/v1/schedules/{id}"))],
        Json(schedule),
    )
        .into_response())
}

/// The caller's tenant's schedules (every tenant's without keys), newest first, each with
/// its next tick.
#[utoipa::path(get, path = "/v1/schedules", tag = "schedules", operation_id = "list_schedules",
    responses(
        (status = 200, description = "The schedules", body = ScheduleList),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks runs:read", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_schedules(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Json<ScheduleList>, ApiError> {
    caller.require(Scope::RunsRead)?;
    let tenant = caller.tenant_filter();
    let schedules = state.store.list_schedules(tenant.as_deref()).await?;
    Ok(Json(ScheduleList { schedules }))
}

/// One schedule.
#[utoipa::path(get, path = "/v1/schedules/{id}", tag = "schedules", operation_id = "get_schedule",
    params(("id" = String, Path, description = "Schedule id")),
    responses(
        (status = 200, description = "The schedule", body = Schedule),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks runs:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such schedule (or another tenant's)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_schedule(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Schedule>, ApiError> {
    caller.require(Scope::RunsRead)?;
    Ok(Json(find(&state, &caller, &id).await?))
}

/// Delete a schedule: it makes no more runs; the runs it made stay.
#[utoipa::path(delete, path = "/v1/schedules/{id}", tag = "schedules", operation_id = "delete_schedule",
    params(("id" = String, Path, description = "Schedule id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks runs:write", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such schedule (or another tenant's)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_schedule(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::RunsWrite)?;
    find(&state, &caller, &id).await?;
    if !state.store.delete_schedule(&id).await? {
        return Err(ApiError::NotFound("schedule"));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Pause a schedule: its ticks make no run until it is resumed (pausing a paused one
/// changes nothing).
#[utoipa::path(post, path = "/v1/schedules/{id}/pause", tag = "schedules", operation_id = "pause_schedule",
    params(("id" = String, Path, description = "Schedule id")),
    responses(
        (status = 200, description = "The schedule, paused", body = Schedule),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks runs:write", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such schedule (or another tenant's)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn pause_schedule(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Schedule>, ApiError> {
    caller.require(Scope::RunsWrite)?;
    find(&state, &caller, &id).await?;
    state.store.pause_schedule(&id).await?;
    Ok(Json(
        caller.shown_schedule(find(&state, &caller, &id).await?),
    ))
}

/// Resume a paused schedule from its next tick after now (an interval keeps its phase): the
/// ticks it was paused for make no run (resuming one not paused changes nothing).
#[utoipa::path(post, path = "/v1/schedules/{id}/resume", tag = "schedules", operation_id = "resume_schedule",
    params(("id" = String, Path, description = "Schedule id")),
    responses(
        (status = 200, description = "The schedule, ticking again", body = Schedule),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks runs:write", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such schedule (or another tenant's)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn resume_schedule(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Schedule>, ApiError> {
    caller.require(Scope::RunsWrite)?;
    let schedule = find(&state, &caller, &id).await?;
    let cadence = schedule
        .cadence()
        .map_err(|e| ApiError::Internal(crate::store::StoreError::Corrupt(e)))?;
    let next = cadence.resumed(schedule.next_tick_at, state.store.clock().now());
    state.store.resume_schedule(&id, next).await?;
    Ok(Json(
        caller.shown_schedule(find(&state, &caller, &id).await?),
    ))
}

/// The schedule, if the caller's tenant has it.
async fn find(state: &ApiState, caller: &Caller, id: &str) -> Result<Schedule, ApiError> {
    let schedule = match state.store.get_schedule(id).await {
        Ok(s) => s,
        Err(crate::store::StoreError::NotFound) => return Err(ApiError::NotFound("schedule")),
        Err(e) => return Err(e.into()),
    };
    match caller.tenant_filter() {
        Some(tenant) if tenant != schedule.tenant => Err(ApiError::NotFound("schedule")),
        _ => Ok(schedule),
    }
}
