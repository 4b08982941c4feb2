//! `JsonBody<T>`: a JSON body extractor whose every failure is a problem naming the field.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::Value;

use std::sync::Arc;

use crate::domain::{RunId, may_hold_nul, nul_in};

use super::budget::{BodyBudget, Held};

use super::error::{ApiError, FieldError};

pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let RawJson(bytes) = RawJson::from_request(req, state).await?;
        parse(&bytes).map(JsonBody)
    }
}

/// The raw bytes of a JSON body (for signature checks), with the same content-type and
/// size checks as `JsonBody`.
pub struct RawJson(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(&req) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let budget = req.extensions().get::<Arc<BodyBudget>>().cloned();
        let held = req.extensions().get::<Held>().cloned();
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| match rejection {
                BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                    ApiError::PayloadTooLarge
                }
                // a body cut off or badly chunked is not a large one
                other => ApiError::BadRequest(other.body_text()),
            })?;
        // its shape is counted, and what parsing it costs taken, before it is parsed
        if let Some(budget) = budget {
            budget.admit(&bytes, held.as_ref()).await?;
        }
        Ok(RawJson(bytes))
    }
}

fn is_json(req: &Request) -> bool {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Query parameters whose every failure to fit (a repeated parameter, a number that is not
/// one) is a 422 naming the parameter, like the endpoints' own checks of the values.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(QueryParams)
            .map_err(|e| {
                let path = e.path().to_string();
                let message = e.into_inner().to_string();
                let field = match quoted_after(&message, "duplicate field ") {
                    Some(name) => name.to_owned(),
                    None if path == "." => "query".to_owned(),
                    None => path.replace('.', "/"),
                };
                let message = format!("{field}: {message}");
                ApiError::Validation(vec![FieldError::new(field, "invalid_value", message)])
            })
    }
}

/// Parses JSON, naming the path of the first value that does not fit the type, or of the
/// first text holding a NUL character.
pub(super) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let parsed = serde_path_to_error::deserialize(de).map_err(to_problem)?;
    // a body of the wrong shape is named as such (400) before its text is looked at
    refuse_nul(bytes)?;
    Ok(parsed)
}

/// PostgreSQL stores no NUL character (U+0000) in text or jsonb, so a body holding one would
/// fail at the database; it is refused in every dialect, so a body means the same on each.
fn refuse_nul(bytes: &[u8]) -> Result<(), ApiError> {
    // bodies without the escape, nearly all, are not walked
    if !may_hold_nul(bytes) {
        return Ok(());
    }
    let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
        return Ok(()); // parsed already as the endpoint's type: cannot fail here
    };
    match nul_in(&value) {
        Some(field) => Err(ApiError::Validation(vec![FieldError::new(
            if field.is_empty() {
                "body".to_owned()
            } else {
                field
            },
            "nul_character",
            "text may not contain the NUL character (U+0000)",
        )])),
        None => Ok(()),
    }
}

/// Converts parsed JSON into `T`, naming the path of the first value that does not fit.
pub(super) fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(to_problem)
}

fn to_problem(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = strip_position(&inner.to_string());
        let at = |name: &str| match path.as_str() {
            "." => name.to_owned(),
            p => format!("{}/{name}", p.replace('.', "/")),
        };
        let (field, code) = if inner.classify() != serde_json::error::Category::Data {
            ("body".to_owned(), "malformed_json")
        } else if let Some(name) = quoted_after(&message, "missing field ") {
            (at(name), "required")
        } else if message.starts_with("unknown field ") {
            // the path already ends at the unknown field
            (path.replace('.', "/"), "unknown_field")
        } else if path == "." {
            ("body".to_owned(), "invalid_type")
        } else {
            (path.replace('.', "/"), "invalid_type")
        };
        // serde's messages name the expected type, never the offending value
        ApiError::MalformedBody(FieldError::new(field, code, message))
    }
}

/// The name in backticks right after `prefix`, as serde writes field names.
fn quoted_after<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    let rest = message.strip_prefix(prefix)?.strip_prefix('`')?;
    rest.split('`').next()
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// A run id from a path; one that cannot exist names no run: 404, like any other
/// unknown id.
pub(super) fn parse_run_id(raw: &str) -> Result<RunId, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound("run"))
}
