//! W3C trace context across the queue: the `traceparent` of the request that created a
//! run is stored with it, and every attempt's span continues that trace.

use axum::http::HeaderMap;
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::otlp::enabled;

const TRACEPARENT: &str = "traceparent";

/// The caller's context from its `traceparent` header, if it sent a valid one.
fn from_headers(headers: &HeaderMap) -> Option<Context> {
    let raw = headers.get(TRACEPARENT)?.to_str().ok()?;
    from_traceparent(raw)
}

/// The context a `traceparent` string names; `None` when it is malformed.
pub fn from_traceparent(traceparent: &str) -> Option<Context> {
    struct One<'a>(&'a str);
    impl Extractor for One<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            (key == TRACEPARENT).then_some(self.0)
        }
        fn keys(&self) -> Vec<&str> {
            vec![TRACEPARENT]
        }
    }
    let cx = TraceContextPropagator::new().extract(&One(traceparent));
    cx.span().span_context().is_valid().then_some(cx)
}

/// The `traceparent` string of a context; `None` when it holds no valid span.
pub fn to_traceparent(cx: &Context) -> Option<String> {
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut fields = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut fields);
    fields.remove(TRACEPARENT)
}

/// Makes an HTTP request's span continue the caller's trace (its `traceparent` header).
/// Without tracing this does nothing, not even read the header.
pub fn continue_request(span: &Span, headers: &HeaderMap) {
    if !enabled() {
        return;
    }
    if let Some(parent) = from_headers(headers) {
        let _ = span.set_parent(parent);
    }
}

/// The trace context to store with a run created by the current request: the request
/// span's, which continues the caller's trace or starts one. Without tracing, the caller's
/// valid `traceparent` as it came (a worker that traces can still continue it); `None`
/// when there is neither, so nothing is written.
pub fn for_new_run(headers: &HeaderMap) -> Option<String> {
    if enabled() {
        return to_traceparent(&Span::current().context());
    }
    from_headers(headers).and_then(|cx| to_traceparent(&cx))
}

/// The span one attempt runs in, a child of the trace its run was created in. Without
/// tracing, a disabled span: attempts cost and log exactly what they did before.
pub fn attempt_span(
    run_id: &dyn std::fmt::Display,
    attempt: u32,
    agent: &str,
    parent: Option<&str>,
) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span =
        tracing::info_span!("attempt", run.id = %run_id, run.attempt = attempt, agent = %agent);
    if let Some(parent) = parent.and_then(from_traceparent) {
        let _ = span.set_parent(parent);
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_traceparent_survives_the_round_trip() {
        let cx = from_traceparent(SAMPLED).expect("a valid traceparent");
        assert_eq!(to_traceparent(&cx).as_deref(), Some(SAMPLED));
    }

    #[test]
    fn an_unsampled_traceparent_keeps_its_flags() {
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let cx = from_traceparent(unsampled).expect("a valid traceparent");
        assert_eq!(to_traceparent(&cx).as_deref(), Some(unsampled));
    }

    #[test]
    fn a_malformed_traceparent_names_no_context() {
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert!(from_traceparent(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn without_tracing_a_run_keeps_the_callers_valid_traceparent_only() {
        let mut headers = HeaderMap::new();
        assert_eq!(for_new_run(&headers), None);
        headers.insert(TRACEPARENT, "nonsense".parse().unwrap());
        assert_eq!(for_new_run(&headers), None);
        headers.insert(TRACEPARENT, SAMPLED.parse().unwrap());
        assert_eq!(for_new_run(&headers).as_deref(), Some(SAMPLED));
    }
}
