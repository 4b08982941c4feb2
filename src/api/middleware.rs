//! Request-scoped middleware: the request id for problem bodies, problem+json for every
//! error response (including those produced below the handlers), the trace span, and the
//! HTTP metrics.

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Span;

use super::error::ApiError;
use super::request_id;

pub(super) async fn problems(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // a write cut short by the time limit may still be committed after the answer
    let writes = !req.method().is_safe();
    request_id::scope(id, async move {
        let response = next.run(req).await;
        let status = response.status();
        // problem+json from the handlers, and JSON bodies an endpoint documents for its
        // errors (`/readyz`'s checks), are kept as they are
        let has_body = response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| {
                let v = v.as_bytes();
                v.starts_with(b"application/problem+json") || v.starts_with(b"application/json")
            });
        if (status.is_client_error() || status.is_server_error()) && !has_body {
            // a bare error from routing, extraction, the body limit or the timeout layer
            let allow = response.headers().get(header::ALLOW).cloned();
            if status == StatusCode::SERVICE_UNAVAILABLE && writes {
                return ApiError::TimedOutWrite.into_response();
            }
            let detail = match status {
                StatusCode::PAYLOAD_TOO_LARGE => "the body is larger than the limit".to_owned(),
                StatusCode::SERVICE_UNAVAILABLE => "the request took too long".to_owned(),
                StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this path".to_owned(),
                _ => body_text(response).await,
            };
            let mut problem = ApiError::Status(status, detail).into_response();
            // a 405 says which methods the path has
            if let Some(allow) = allow {
                problem.headers_mut().insert(header::ALLOW, allow);
            }
            return problem;
        }
        response
    })
    .await
}

async fn body_text(response: Response) -> String {
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).trim().to_owned();
    if text.is_empty() || status.is_server_error() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    }
}

/// Counts the request and times it to its response head, by route template (`/v1/runs/{id}`,
/// never the raw path; `unmatched` for a path no route has) and final status.
pub(super) async fn record_metrics(
    State(metrics): State<crate::telemetry::Metrics>,
    req: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().clone();
    let response = next.run(req).await;
    let status = response.status().as_u16();
    metrics.http_request(method.as_str(), &route, status, started.elapsed());
    response
}

pub(super) async fn not_found() -> ApiError {
    ApiError::Status(StatusCode::NOT_FOUND, "no such path".into())
}

pub(super) fn span(req: &Request<Body>) -> Span {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let span = tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id);
    // with tracing on, a caller's `traceparent` makes this span a part of its trace
    crate::telemetry::continue_request(&span, req.headers());
    span
}
