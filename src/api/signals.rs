//! `POST /v1/runs/{id}/signals`: a human's answer, an approval, an outside system's event.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use validator::Validate;

use std::time::Duration;

use crate::domain::{Run, verify_request};
use crate::store::NewSignal;

use super::auth::Caller;
use super::error::{ApiError, Problem};
use super::extract::parse_run_id;
use super::extract::{RawJson, parse};
use super::{ApiState, Secret};

const SIGNATURE_HEADER: &str = "x-agentq-signature";

/// A signal to a run.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendSignalRequest {
    /// The signal's name, as the agent waits for it (`plan_approved`, …).
    #[validate(length(min = 1, max = 64))]
    #[schema(min_length = 1, max_length = 64)]
    pub name: String,
    /// Anything the agent should receive with it.
    #[serde(default)]
    pub payload: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SendSignalResponse {
    /// Whether the signal resumed a run that was waiting for it (otherwise it is kept until
    /// the run waits for it).
    pub resumed: bool,
    pub run: Run,
}

/// Send a signal to a run. A run waiting for it is queued again at once; a signal the run
/// does not wait for yet is kept until it does. With `--signal-secret` set, a request
/// made with an API key (or none) must be signed:
/// `X-Agentq-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<run id>.<body>">`,
/// with `t` within `--signature-tolerance` (default 5 min) of the server's time; the same
/// signed request is taken once (a replay is a `409`). A run token needs no signature.
#[utoipa::path(post, path = "/v1/runs/{id}/signals", tag = "runs", operation_id = "send_signal",
    params(("id" = String, Path, description = "Run id"),
           ("X-Agentq-Signature" = Option<String>, Header, description = "t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<run id>.<body>\">, required when the server has a signal secret")),
    request_body = SendSignalRequest,
    responses(
        (status = 202, description = "Stored (and the run resumed if it waited for it)", body = SendSignalResponse),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, stale or wrong signature, or no valid API key or run token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks runs:write, or a run token sends a signal the run does not wait for", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such run (or another tenant's)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The run has finished, or this signed request was taken before (a replay)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid signal", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn send_signal(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawJson(body): RawJson,
) -> Result<(StatusCode, Json<SendSignalResponse>), ApiError> {
    // a run token is its own proof (a browser cannot hold the signing secret); keys and
    // outside systems sign with --signal-secret when it is set
    let signature = match &state.signal_secret {
        Some(secret) if !matches!(caller, Caller::Token(_)) => Some(verify_signature(
            secret,
            state.signature_tolerance,
            &headers,
            &id,
            &body,
        )?),
        _ => None,
    };
    let request: SendSignalRequest = parse(&body)?;
    request.validate()?;
    let id = parse_run_id(&id)?;
    caller.may_signal(&state.store.get_run(id).await?, &request.name)?;
    let signal = NewSignal {
        name: request.name,
        payload: request.payload,
        actor: Some(caller.actor()),
        signature,
    };
    let resumed = state.store.signal(id, signal).await?;
    let run = caller.shown(state.store.get_run(id).await?);
    Ok((
        StatusCode::ACCEPTED,
        Json(SendSignalResponse { resumed, run }),
    ))
}

/// Checks the request's signature; answers its `v1`, which the store keeps so the same
/// signed request is taken once.
fn verify_signature(
    secret: &Secret,
    tolerance: Duration,
    headers: &HeaderMap,
    run_id: &str,
    body: &[u8],
) -> Result<String, ApiError> {
    let header = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::BadSignature(
                "signals must carry X-Agentq-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<run id>.<body>\">".into(),
            )
        })?;
    verify_request(
        secret.0.as_bytes(),
        header,
        run_id,
        body,
        chrono::Utc::now().timestamp(),
        tolerance.as_secs() as i64,
    )
    .map_err(|e| ApiError::BadSignature(e.to_string()))
}
