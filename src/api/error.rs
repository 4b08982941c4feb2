//! `ApiError`: the only error that becomes an HTTP response, as RFC 9457
//! `application/problem+json` with a stable snake_case `code` and the request id.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::StoreError;

use super::request_id;

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// The field, as a JSON path in the body (`input/value`) or a query parameter name.
    pub field: String,
    /// A stable snake_case code (`required`, `range`, `schema`, `unknown_agent`, …).
    pub code: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, code: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request is invalid")]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    BadRequest(String),
    #[error("the body is not valid JSON for this request: {}", .0.message)]
    MalformedBody(FieldError),
    #[error("the body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("the body is larger than the limit")]
    PayloadTooLarge,
    #[error("no such {0}")]
    NotFound(&'static str),
    /// A conflict with its own stable code (`agent_name_taken`, …).
    #[error("{detail}")]
    ConflictCode { code: &'static str, detail: String },
    /// A signal's signature is missing, malformed, stale or wrong.
    #[error("{0}")]
    BadSignature(String),
    /// No valid credential (API key or run token).
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// A valid credential that does not allow this.
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("the service is not available right now; try again shortly")]
    Unavailable(#[source] StoreError),
    /// A write whose commit may or may not have happened (the connection broke during it).
    #[error("{OUTCOME_UNKNOWN}")]
    OutcomeUnknown(#[source] StoreError),
    /// A write answered by the request time limit: the writer may still commit it.
    #[error("{TIMED_OUT_WRITE}")]
    TimedOutWrite,
    #[error("internal error")]
    Internal(#[source] StoreError),
    /// A per-tenant limit: try again after `retry_after` seconds.
    #[error("{detail}")]
    TooManyRequests {
        code: &'static str,
        detail: String,
        retry_after: u64,
    },
    /// This process is at one of its limits (connections, memory for bodies, disk): try
    /// again after `retry_after` seconds.
    #[error("{detail}")]
    Overloaded {
        code: &'static str,
        detail: String,
        retry_after: u64,
    },
    /// A response produced below the handlers (routing, timeouts) turned into a problem.
    #[error("{1}")]
    Status(StatusCode, String),
}

/// What a client is told when its change may or may not have been stored.
const OUTCOME_UNKNOWN: &str = "outcome unknown: the database connection broke while the change was being committed, so it may have been stored or not. Read the run to see; a create retried with the same Idempotency-Key returns the run if it was stored (200), never a second one";

/// When a client refused for a full storage tries again, in seconds.
const STORAGE_FULL_RETRY_AFTER: u64 = 10;

/// A write answered `503` by the request time limit.
const TIMED_OUT_WRITE: &str = "outcome unknown: the request took too long, and the change it asked for may still be stored. Read the run to see; a create retried with the same Idempotency-Key returns the run if it was stored (200), never a second one";

/// The problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable, machine-readable error code.
    pub code: String,
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl ApiError {
    /// The one table from error to status and code.
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::MalformedBody(_) => (StatusCode::BAD_REQUEST, "malformed_body"),
            Self::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::ConflictCode { code, .. } => (StatusCode::CONFLICT, code),
            Self::BadSignature(_) => (StatusCode::UNAUTHORIZED, "bad_signature"),
            Self::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::TooManyRequests { code, .. } => (StatusCode::TOO_MANY_REQUESTS, code),
            Self::Overloaded { code, .. } => (StatusCode::SERVICE_UNAVAILABLE, code),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::OutcomeUnknown(_) | Self::TimedOutWrite => {
                (StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown")
            }
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            Self::Status(status, _) => (*status, status_code_name(*status)),
        }
    }

    fn into_problem(self) -> Problem {
        let (status, code) = self.status_and_code();
        let detail = self.to_string();
        let errors = match self {
            Self::Validation(errors) => errors,
            Self::MalformedBody(error) => vec![error],
            _ => Vec::new(),
        };
        Problem {
            kind: format!("urn:agentq:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            code: code.to_owned(),
            request_id: request_id::current(),
            errors,
        }
    }
}

fn status_code_name(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        StatusCode::NOT_ACCEPTABLE => "not_acceptable",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound("run"),
            StoreError::Conflict(code, detail) => Self::ConflictCode { code, detail },
            StoreError::KeyBusy(detail) => Self::ConflictCode {
                code: "concurrency_key_busy",
                detail,
            },
            StoreError::BadDependencies(problems) => Self::Validation(
                problems
                    .into_iter()
                    .map(|(i, code, message)| {
                        FieldError::new(format!("depends_on/{i}"), code, message)
                    })
                    .collect(),
            ),
            StoreError::Unavailable(_) | StoreError::Closed => Self::Unavailable(e),
            StoreError::Uncertain(_) => Self::OutcomeUnknown(e),
            StoreError::StorageFull(_) => Self::Overloaded {
                code: "storage_full",
                detail: "the database's storage is full: nothing of this request was stored; try again once space is freed".into(),
                retry_after: STORAGE_FULL_RETRY_AFTER,
            },
            other => Self::Internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Unavailable(cause) | Self::OutcomeUnknown(cause) | Self::Internal(cause) =
            &self
        {
            // the cause chain is logged once, here, inside the request's span; never sent
            tracing::error!(error = %cause, "request failed");
        }
        let retry = match &self {
            Self::Unavailable(_) | Self::OutcomeUnknown(_) | Self::TimedOutWrite => Some(1),
            Self::TooManyRequests { retry_after, .. } | Self::Overloaded { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        };
        let challenge = matches!(self, Self::Unauthenticated(_));
        let problem = self.into_problem();
        let status =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&problem).expect("a problem serialises");
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = retry {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"agentq\""),
            );
        }
        response
    }
}

impl From<validator::ValidationErrors> for ApiError {
    fn from(errors: validator::ValidationErrors) -> Self {
        let mut fields: Vec<FieldError> = errors
            .field_errors()
            .into_iter()
            .flat_map(|(field, errs)| {
                errs.iter().map(move |e| {
                    let message = e
                        .message
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_else(|| describe(&field, e));
                    FieldError::new(field.to_string(), &e.code, message)
                })
            })
            .collect();
        fields.sort_by(|a, b| a.field.cmp(&b.field));
        Self::Validation(fields)
    }
}

fn describe(field: &str, e: &validator::ValidationError) -> String {
    let bound = |k: &str| e.params.get(k).map(|v| v.to_string());
    match (bound("min"), bound("max")) {
        (Some(min), Some(max)) => format!("{field} must be between {min} and {max}"),
        (Some(min), None) => format!("{field} must be at least {min}"),
        (None, Some(max)) => format!("{field} must be at most {max}"),
        _ => format!("{field} is invalid ({})", e.code),
    }
}
