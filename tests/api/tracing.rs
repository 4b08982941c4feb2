//! Tracing: spans exported over OTLP/HTTP to a collector (a tiny receiver here), and the
//! trace of `POST /v1/runs` carried through the runs table into the worker's attempts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentq::app::Role;
use agentq::store::Store;
use axum::body::Bytes;
use axum::extract::State;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::{Metric, NumberDataPoint, number_data_point};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, echo_only, insert, new_run, open_store, temp_store};
use crate::process::Agentq;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{TRACE_ID}-{CALLER_SPAN}-01")
}

/// An OTLP/HTTP collector that keeps every span it is sent, with its service name, and
/// every metrics export.
#[derive(Clone, Default)]
struct Receiver(
    Arc<Mutex<Vec<(String, Span)>>>,
    Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
);

impl Receiver {
    /// Listens on 127.0.0.1:0; returns the base URL for `--otlp-endpoint`.
    async fn start(&self) -> String {
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(receive))
            .route("/v1/metrics", axum::routing::post(receive_metrics))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    fn spans(&self) -> Vec<(String, Span)> {
        self.0.lock().unwrap().clone()
    }

    /// Every data point received, as (metric, attributes as `k=v` sorted, value), the
    /// latest last.
    fn points(&self) -> Vec<(String, Vec<String>, f64)> {
        let mut points = Vec::new();
        for request in self.1.lock().unwrap().iter() {
            for resource in &request.resource_metrics {
                for scope in &resource.scope_metrics {
                    for metric in &scope.metrics {
                        collect_points(metric, &mut points);
                    }
                }
            }
        }
        points
    }
}

fn collect_points(metric: &Metric, points: &mut Vec<(String, Vec<String>, f64)>) {
    let attributes = |kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue]| {
        let mut out: Vec<String> = kvs
            .iter()
            .map(|kv| {
                let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(AnyValue::StringValue(s)) => s.clone(),
                    Some(AnyValue::IntValue(i)) => i.to_string(),
                    other => format!("{other:?}"),
                };
                format!("{}={value}", kv.key)
            })
            .collect();
        out.sort();
        out
    };
    let number = |p: &NumberDataPoint| match p.value {
        Some(number_data_point::Value::AsInt(i)) => i as f64,
        Some(number_data_point::Value::AsDouble(d)) => d,
        None => f64::NAN,
    };
    match &metric.data {
        Some(Data::Sum(sum)) => {
            for p in &sum.data_points {
                points.push((metric.name.clone(), attributes(&p.attributes), number(p)));
            }
        }
        Some(Data::Gauge(gauge)) => {
            for p in &gauge.data_points {
                points.push((metric.name.clone(), attributes(&p.attributes), number(p)));
            }
        }
        Some(Data::Histogram(h)) => {
            for p in &h.data_points {
                points.push((
                    metric.name.clone(),
                    attributes(&p.attributes),
                    p.count as f64,
                ));
            }
        }
        _ => {}
    }
}

async fn receive_metrics(
    State(receiver): State<Receiver>,
    body: Bytes,
) -> impl axum::response::IntoResponse {
    let request = ExportMetricsServiceRequest::decode(body).expect("an OTLP protobuf body");
    receiver.1.lock().unwrap().push(request);
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
        Vec::<u8>::new(),
    )
}

/// The latest value of `metric` whose attributes include all of `with`.
fn latest(points: &[(String, Vec<String>, f64)], metric: &str, with: &[&str]) -> Option<f64> {
    points
        .iter()
        .rev()
        .find(|(name, attributes, _)| {
            name == metric && with.iter().all(|w| attributes.iter().any(|a| a == w))
        })
        .map(|(_, _, value)| *value)
}

#[tokio::test]
async fn the_metrics_reach_the_collector_over_otlp_too() {
    let receiver = Receiver::default();
    let endpoint = receiver.start().await;
    let db = TestDb::new().await;
    // an export every 300 ms while it runs (the queue's gauges are read then), one more
    // at shutdown
    let agentq = Agentq::start_role_with_env(
        "serve",
        &db.url,
        &["--otlp-endpoint", &endpoint],
        &[("OTEL_METRIC_EXPORT_INTERVAL", "300")],
    )
    .await;
    let id = agentq
        .create(json!({"agent": "echo", "input": {"value": 1}}))
        .await;
    agentq.wait_for_status(&id, "succeeded").await;
    let failed = agentq
        .create(json!({"agent": "echo", "input": {"value": 2, "fail_permanently": true}}))
        .await;
    agentq.wait_for_status(&failed, "failed").await;
    // failed for another reason: the two kinds add up in `agentq_runs_finished`
    let timed_out = agentq
        .create(
            json!({"agent": "echo", "input": {"value": 4, "delay_ms": 5000},
                       "timeout_ms": 50, "max_attempts": 1}),
        )
        .await;
    agentq.wait_for_status(&timed_out, "failed").await;
    // a run due much later: scheduled, in the gauges
    agentq
        .create(json!({"agent": "echo", "input": {"value": 3}, "run_at": "2999-01-01T00:00:00Z"}))
        .await;
    let mut points = Vec::new();
    for _ in 0..100 {
        points = receiver.points();
        if latest(&points, "agentq_runs_scheduled", &["agent=echo"]) == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agentq.signal("TERM");
    assert_eq!(agentq.exit_code(Duration::from_secs(15)).await, Some(0));
    let last = receiver.points();
    for (metric, with, value) in [
        ("agentq_runs_created", &["agent=echo"][..], 4.0),
        ("agentq_attempts", &["agent=echo", "outcome=succeeded"], 1.0),
        ("agentq_attempt_duration_seconds", &["agent=echo"], 3.0),
        (
            "agentq_runs_finished",
            &["agent=echo", "status=succeeded"],
            1.0,
        ),
        (
            "agentq_runs_finished",
            &["agent=echo", "status=failed"],
            2.0,
        ),
        (
            "agentq_runs_failed",
            &["agent=echo", "error_kind=agent_error"],
            1.0,
        ),
        (
            "agentq_runs_failed",
            &["agent=echo", "error_kind=timeout"],
            1.0,
        ),
        (
            "agentq_http_requests",
            &["method=POST", "route=/v1/runs", "status=202"],
            4.0,
        ),
    ] {
        assert_eq!(
            latest(&last, metric, with),
            Some(value),
            "{metric} {with:?}: {last:#?}"
        );
    }
    // read from the database while it ran
    assert_eq!(
        latest(&points, "agentq_runs_scheduled", &["agent=echo"]),
        Some(1.0)
    );
    assert_eq!(latest(&points, "agentq_workers_alive", &[]), Some(1.0));
}

async fn receive(
    State(receiver): State<Receiver>,
    body: Bytes,
) -> impl axum::response::IntoResponse {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
    let mut spans = receiver.0.lock().unwrap();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for scope in resource.scope_spans {
            spans.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
        }
    }
    // an empty ExportTraceServiceResponse
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
        Vec::<u8>::new(),
    )
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|a| a.key == key)?
        .value
        .as_ref()?;
    match value.value.as_ref()? {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        other => Some(format!("{other:?}")),
    }
}

#[tokio::test]
async fn the_trace_of_post_runs_continues_in_the_worker_and_reaches_the_collector() {
    let receiver = Receiver::default();
    let endpoint = receiver.start().await;
    let db = TestDb::new().await;
    let agentq = Agentq::start(
        &db.url,
        &[
            "--otlp-endpoint",
            &endpoint,
            "--otlp-service-name",
            "agentq-test",
        ],
    )
    .await;
    // attempt 1 fails on purpose, so the retry must continue the same trace too
    let response = reqwest::Client::new()
        .post(format!("{}/v1/runs", agentq.base))
        .header("traceparent", traceparent())
        .json(
            &json!({"agent": "echo", "input": {"value": 1, "fail_attempts": 1},
                      "backoff_base_ms": 10, "backoff_cap_ms": 10}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = agentq.wait_for_status(&id, "succeeded").await;
    assert_eq!(run["attempt"], 2);
    // the batch is flushed by the graceful shutdown, not by a timer
    agentq.signal("TERM");
    assert_eq!(agentq.exit_code(Duration::from_secs(15)).await, Some(0));

    let mut spans = Vec::new();
    for _ in 0..100 {
        spans = receiver.spans();
        let attempts = spans.iter().filter(|(_, s)| s.name == "attempt").count();
        if attempts >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let in_trace: Vec<&Span> = spans
        .iter()
        .filter(|(_, s)| hex(&s.trace_id) == TRACE_ID)
        .map(|(_, s)| s)
        .collect();
    assert!(spans.iter().all(|(service, _)| service == "agentq-test"));
    let request = in_trace
        .iter()
        .find(|s| s.name == "request" && attribute(s, "method").as_deref() == Some("POST"))
        .unwrap_or_else(|| panic!("the POST's span is in the caller's trace: {spans:#?}"));
    assert_eq!(hex(&request.parent_span_id), CALLER_SPAN);
    let mut attempts: Vec<&&Span> = in_trace.iter().filter(|s| s.name == "attempt").collect();
    attempts.sort_by_key(|s| attribute(s, "run.attempt"));
    assert_eq!(
        attempts.len(),
        2,
        "both attempts are in the trace: {spans:#?}"
    );
    for (n, attempt) in attempts.iter().enumerate() {
        assert_eq!(
            attempt.parent_span_id, request.span_id,
            "the POST is the parent"
        );
        assert_eq!(attribute(attempt, "run.id").as_deref(), Some(id.as_str()));
        assert_eq!(attribute(attempt, "run.attempt"), Some((n + 1).to_string()));
        assert_eq!(attribute(attempt, "agent").as_deref(), Some("echo"));
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn claim_one(store: &Store) -> agentq::store::ClaimedRun {
    let mut claimed = store
        .claim(
            "w".into(),
            echo_only(),
            1,
            Duration::from_secs(10),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    claimed.remove(0)
}

#[tokio::test]
async fn a_claimed_run_carries_the_trace_parent_it_was_inserted_with() {
    let (store, _db) = temp_store().await;
    insert(
        &store,
        agentq::domain::NewRun {
            trace_parent: Some(traceparent()),
            ..new_run()
        },
    )
    .await;
    assert_eq!(claim_one(&store).await.trace_parent, Some(traceparent()));
    insert(&store, new_run()).await;
    assert_eq!(claim_one(&store).await.trace_parent, None);
}

#[tokio::test]
async fn without_tracing_a_run_keeps_only_a_valid_traceparent_from_its_caller() {
    let app = TestApp::spawn_with(|c| c.role = Role::Api).await;
    let store = open_store(&app.db_url).await;
    let post = |traceparent: Option<&str>| {
        let mut request = reqwest::Client::new()
            .post(app.url("/v1/runs"))
            .json(&json!({"agent": "echo", "input": {"value": 1}}));
        if let Some(t) = traceparent {
            request = request.header("traceparent", t);
        }
        async move { assert_eq!(request.send().await.unwrap().status(), 202) }
    };
    post(Some(&traceparent())).await;
    assert_eq!(claim_one(&store).await.trace_parent, Some(traceparent()));
    post(Some("00-not-a-trace")).await;
    assert_eq!(claim_one(&store).await.trace_parent, None);
    post(None).await;
    assert_eq!(claim_one(&store).await.trace_parent, None);
}
