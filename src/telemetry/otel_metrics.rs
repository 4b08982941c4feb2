//! The metrics of `/metrics` also over OTLP, with `--otlp-endpoint`: posted to
//! `<endpoint>/v1/metrics` every 60 s (`OTEL_METRIC_EXPORT_INTERVAL`, ms, changes it) and
//! once more at shutdown, cumulative like Prometheus's counters. The same names, labels
//! as attributes (the `_total` suffix is Prometheus's, not OTLP's).
//!
//! What this process measures (runs created, attempts, HTTP requests, restarts) is
//! recorded into OTel instruments beside the Prometheus ones, where it happens; what the
//! writer counted and the queue's gauges are observed at each export from the same
//! [`Snapshot`] a scrape renders.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter};

use super::Snapshot;

/// Set once the meter provider is installed (see `otlp::tracer`).
static ENABLED: AtomicBool = AtomicBool::new(false);

pub(super) fn mark_enabled() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// The meter, when metrics are exported over OTLP.
pub(super) fn meter() -> Option<Meter> {
    ENABLED
        .load(Ordering::Relaxed)
        .then(|| opentelemetry::global::meter("agentq"))
}

/// Buckets in seconds like the Prometheus histograms': 1 ms to about 9 minutes.
fn seconds() -> Vec<f64> {
    (0..20).map(|i| 0.001 * 2f64.powi(i)).collect()
}

/// 0.5 ms to about 8 s, as `agentq_http_request_duration_seconds`.
fn http_seconds() -> Vec<f64> {
    (0..15).map(|i| 0.0005 * 2f64.powi(i)).collect()
}

/// The instruments this process records into where things happen.
pub(super) struct Instruments {
    pub(super) runs_created: Counter<u64>,
    pub(super) attempts: Counter<u64>,
    pub(super) attempt_duration: Histogram<f64>,
    pub(super) queue_wait: Histogram<f64>,
    pub(super) http_requests: Counter<u64>,
    pub(super) http_duration: Histogram<f64>,
    pub(super) worker_restarts: Counter<u64>,
}

impl Instruments {
    pub(super) fn new(meter: &Meter) -> Self {
        Self {
            runs_created: meter
                .u64_counter("agentq_runs_created")
                .with_description("Runs created through the API by this process")
                .build(),
            attempts: meter
                .u64_counter("agentq_attempts")
                .with_description("Attempts this process executed, by how they ended")
                .build(),
            attempt_duration: meter
                .f64_histogram("agentq_attempt_duration_seconds")
                .with_unit("s")
                .with_description("Execution time of the attempts this process ran")
                .with_boundaries(seconds())
                .build(),
            queue_wait: meter
                .f64_histogram("agentq_queue_wait_seconds")
                .with_unit("s")
                .with_description("Time from a run becoming ready (due and unblocked) to its claim")
                .with_boundaries(seconds())
                .build(),
            http_requests: meter
                .u64_counter("agentq_http_requests")
                .with_description("HTTP requests answered, by route template and status")
                .build(),
            http_duration: meter
                .f64_histogram("agentq_http_request_duration_seconds")
                .with_unit("s")
                .with_description("Time to answer an HTTP request (to the response head)")
                .with_boundaries(http_seconds())
                .build(),
            worker_restarts: meter
                .u64_counter("agentq_worker_restarts")
                .with_description(
                    "Times this process's worker loop stopped on its own and was started again",
                )
                .build(),
        }
    }
}

/// A snapshot and when it was taken.
type Taken = (Instant, Arc<Snapshot>);

/// How long one snapshot serves the observations of one export (each instrument's
/// callback asks for it).
const SNAPSHOT_FRESH_FOR: Duration = Duration::from_secs(2);

/// Registers the observed instruments: the writer's counts and the queue's gauges, read
/// from `snapshot` (called off the async threads, by the exporter's own thread) at most
/// once per export. Does nothing unless metrics go over OTLP.
pub fn observe(snapshot: impl Fn() -> Snapshot + Send + Sync + 'static) {
    let Some(meter) = meter() else { return };
    let cached: Arc<Mutex<Option<Taken>>> = Arc::default();
    let source = Arc::new(snapshot);
    let read = move || -> Arc<Snapshot> {
        let mut cached = cached.lock().unwrap_or_else(|e| e.into_inner());
        match &*cached {
            Some((at, s)) if at.elapsed() < SNAPSHOT_FRESH_FOR => s.clone(),
            _ => {
                let fresh = Arc::new(source());
                *cached = Some((Instant::now(), fresh.clone()));
                fresh
            }
        }
    };
    let read = Arc::new(read);
    let agent = |a: &str| KeyValue::new("agent", a.to_owned());

    let r = read.clone();
    meter
        .u64_observable_counter("agentq_runs_finished")
        .with_description(
            "Runs this process's writer moved to a final status (failed: failed for good)",
        )
        .with_callback(move |o| {
            for (a, status, runs) in &r().finished {
                o.observe(*runs, &[agent(a), KeyValue::new("status", *status)]);
            }
        })
        .build();
    let r = read.clone();
    meter
        .u64_observable_counter("agentq_runs_failed")
        .with_description("Runs this process's writer failed for good, by the run's error kind")
        .with_callback(move |o| {
            for (a, kind, runs) in &r().failed {
                o.observe(*runs, &[agent(a), KeyValue::new("error_kind", *kind)]);
            }
        })
        .build();
    let r = read.clone();
    meter
        .u64_observable_counter("agentq_run_retries")
        .with_description("Retries this process's writer scheduled")
        .with_callback(move |o| {
            for (a, runs) in &r().retried {
                o.observe(*runs, &[agent(a)]);
            }
        })
        .build();
    let r = read.clone();
    meter
        .u64_observable_counter("agentq_writer_transactions")
        .with_description("Transactions this process's writer committed")
        .with_callback(move |o| o.observe(r().writer_transactions, &[]))
        .build();
    // the queue's gauges, when the database answered
    type Gauge = fn(&super::AgentGauges) -> u64;
    for (name, description, value) in [
        (
            "agentq_runs_running",
            "Runs running now",
            (|g| g.running) as Gauge,
        ),
        (
            "agentq_runs_ready",
            "Runs queued or retrying and due",
            |g| g.ready,
        ),
        (
            "agentq_runs_scheduled",
            "Runs queued or retrying and due later",
            |g| g.scheduled,
        ),
    ] {
        let r = read.clone();
        meter
            .u64_observable_gauge(name)
            .with_description(description)
            .with_callback(move |o| {
                if let Some(load) = &r().load {
                    for g in &load.agents {
                        o.observe(value(g), &[agent(&g.agent)]);
                    }
                }
            })
            .build();
    }
    let r = read.clone();
    meter
        .f64_observable_gauge("agentq_oldest_ready_run_age_seconds")
        .with_unit("s")
        .with_description("How long the longest-waiting ready run has been due")
        .with_callback(move |o| {
            if let Some(load) = &r().load {
                let now = chrono::Utc::now();
                for g in &load.agents {
                    let age = g.oldest_ready_at.map_or(0.0, |at| {
                        (now - at).to_std().unwrap_or_default().as_secs_f64()
                    });
                    o.observe(age, &[agent(&g.agent)]);
                }
            }
        })
        .build();
    let r = read;
    meter
        .u64_observable_gauge("agentq_workers_alive")
        .with_description("Worker processes heartbeating")
        .with_callback(move |o| {
            if let Some(load) = &r().load {
                o.observe(load.workers_alive, &[]);
            }
        })
        .build();
}
