//! Prometheus metrics: this process's counters and histograms, recorded where things happen
//! (the API, the worker), plus what is read at scrape time (the writer's counts of run
//! transitions, the queue as the database has it), encoded in the OpenMetrics text format.
//!
//! Counters and histograms are per process: Prometheus sums them across instances. The
//! gauges read from the database are the same in every process that serves them: take one
//! instance's value (`max`), not the sum. The only place that names `prometheus_client`.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How an attempt this process executed ended, as far as its worker knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    Succeeded,
    /// The run failed for good.
    Failed,
    /// A retry was scheduled.
    Retry,
    /// The run waits for a signal.
    Waiting,
    /// The attempt had lost its run (cancelled, or its lease expired): outcome dropped.
    Lost,
    /// Stopped by shutdown; the run went back to the queue.
    HandedBack,
    /// The outcome could not be written; the run is retried when its lease expires.
    Unrecorded,
}

impl AttemptOutcome {
    /// The `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Retry => "retry",
            Self::Waiting => "waiting",
            Self::Lost => "lost",
            Self::HandedBack => "handed_back",
            Self::Unrecorded => "unrecorded",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AgentLabel {
    agent: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AttemptLabels {
    agent: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResponseLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FinishedLabels {
    agent: String,
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FailedLabels {
    agent: String,
    error_kind: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// A cheap handle to this process's metrics (built once by `Application::build`).
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    runs_created: Family<AgentLabel, Counter>,
    attempts: Family<AttemptLabels, Counter>,
    attempt_duration: Histograms<AgentLabel>,
    queue_wait: Histograms<AgentLabel>,
    http_requests: Family<ResponseLabels, Counter>,
    http_duration: Histograms<RouteLabels>,
    worker_restarts: Counter,
    last_restart: Gauge,
    http_connections: Gauge,
    connections_refused: Counter,
    /// The same, recorded for OTLP when metrics are exported there.
    otel: Option<super::otel_metrics::Instruments>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        fn seconds() -> Histogram {
            // 1 ms to about 9 minutes
            Histogram::new(exponential_buckets(0.001, 2.0, 20))
        }
        fn http_seconds() -> Histogram {
            // 0.5 ms to about 8 s
            Histogram::new(exponential_buckets(0.0005, 2.0, 15))
        }
        let mut registry = Registry::default();
        let runs_created = Family::default();
        registry.register(
            "agentq_runs_created",
            "Runs created through the API by this process",
            runs_created.clone(),
        );
        let attempts = Family::default();
        registry.register(
            "agentq_attempts",
            "Attempts this process executed, by how they ended",
            attempts.clone(),
        );
        let attempt_duration = Histograms::new_with_constructor(seconds as fn() -> Histogram);
        registry.register(
            "agentq_attempt_duration_seconds",
            "Execution time of the attempts this process ran",
            attempt_duration.clone(),
        );
        let queue_wait = Histograms::new_with_constructor(seconds as fn() -> Histogram);
        registry.register(
            "agentq_queue_wait_seconds",
            "Time from a run becoming ready (due and unblocked) to its claim",
            queue_wait.clone(),
        );
        let http_requests = Family::default();
        registry.register(
            "agentq_http_requests",
            "HTTP requests answered, by route template and status",
            http_requests.clone(),
        );
        let http_duration = Histograms::new_with_constructor(http_seconds as fn() -> Histogram);
        registry.register(
            "agentq_http_request_duration_seconds",
            "Time to answer an HTTP request (to the response head; streams run on)",
            http_duration.clone(),
        );
        let worker_restarts = Counter::default();
        registry.register(
            "agentq_worker_restarts",
            "Times this process's worker loop stopped on its own and was started again",
            worker_restarts.clone(),
        );
        let last_restart = Gauge::default();
        registry.register(
            "agentq_worker_last_restart_timestamp_seconds",
            "When this process's worker loop last was started again (Unix seconds; 0: never)",
            last_restart.clone(),
        );
        let http_connections = Gauge::default();
        registry.register(
            "agentq_http_connections",
            "HTTP connections this process serves now (not counting those of the reserve past --max-connections)",
            http_connections.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "agentq_http_connections_refused",
            "HTTP connections that came past --max-connections: served by the reserve, which answers health checks and refuses the rest",
            connections_refused.clone(),
        );
        Self(Arc::new(Inner {
            registry,
            runs_created,
            attempts,
            attempt_duration,
            queue_wait,
            http_requests,
            http_duration,
            worker_restarts,
            last_restart,
            http_connections,
            connections_refused,
            otel: super::otel_metrics::meter().map(|m| super::otel_metrics::Instruments::new(&m)),
        }))
    }

    pub fn run_created(&self, agent: &str) {
        self.0.runs_created.get_or_create(&agent_label(agent)).inc();
        if let Some(otel) = &self.0.otel {
            otel.runs_created.add(1, &[agent_kv(agent)]);
        }
    }

    /// A claimed run starts executing, after waiting `waited` since it became ready.
    pub fn attempt_started(&self, agent: &str, waited: Duration) {
        let histogram = self.0.queue_wait.get_or_create(&agent_label(agent));
        histogram.observe(waited.as_secs_f64());
        if let Some(otel) = &self.0.otel {
            otel.queue_wait
                .record(waited.as_secs_f64(), &[agent_kv(agent)]);
        }
    }

    pub fn attempt_finished(&self, agent: &str, outcome: AttemptOutcome, took: Duration) {
        let labels = AttemptLabels {
            agent: agent.to_owned(),
            outcome: outcome.as_str(),
        };
        self.0.attempts.get_or_create(&labels).inc();
        let histogram = self.0.attempt_duration.get_or_create(&agent_label(agent));
        histogram.observe(took.as_secs_f64());
        if let Some(otel) = &self.0.otel {
            let outcome = KeyValue::new("outcome", outcome.as_str());
            otel.attempts.add(1, &[agent_kv(agent), outcome]);
            otel.attempt_duration
                .record(took.as_secs_f64(), &[agent_kv(agent)]);
        }
    }

    /// The worker loop stopped on its own and is started again.
    pub fn worker_restarted(&self) {
        self.0.worker_restarts.inc();
        self.0.last_restart.set(chrono::Utc::now().timestamp());
        if let Some(otel) = &self.0.otel {
            otel.worker_restarts.add(1, &[]);
        }
    }

    pub fn http_connection_opened(&self) {
        self.0.http_connections.inc();
    }

    pub fn http_connection_closed(&self) {
        self.0.http_connections.dec();
    }

    /// A connection came past `--max-connections`.
    pub fn http_connection_refused(&self) {
        self.0.connections_refused.inc();
    }

    /// An HTTP request answered: `route` is the matched route template, never a raw path.
    pub fn http_request(&self, method: &str, route: &str, status: u16, took: Duration) {
        let method = known_method(method);
        let route = route.to_owned();
        let labels = RouteLabels {
            method,
            route: route.clone(),
        };
        self.0
            .http_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if let Some(otel) = &self.0.otel {
            let (m, r) = (
                KeyValue::new("method", method),
                KeyValue::new("route", route.clone()),
            );
            otel.http_duration
                .record(took.as_secs_f64(), &[m.clone(), r.clone()]);
            let s = KeyValue::new("status", i64::from(status));
            otel.http_requests.add(1, &[m, r, s]);
        }
        let labels = ResponseLabels {
            method,
            route,
            status,
        };
        self.0.http_requests.get_or_create(&labels).inc();
    }

    /// The whole exposition: this process's metrics, the writer's `transitions`, and the
    /// queue `load` (absent when it could not be read) with zeros for every agent in
    /// `agents` that has nothing queued or running.
    pub fn render(&self, snapshot: &Snapshot, agents: &[&str]) -> String {
        let mut scrape = Registry::default();
        register_transitions(&mut scrape, snapshot);
        if let Some(load) = &snapshot.load {
            register_load(&mut scrape, load, agents);
        }
        let mut out = String::new();
        encode_registry(&mut out, &self.0.registry)
            .and_then(|()| encode_registry(&mut out, &scrape))
            .and_then(|()| encode_eof(&mut out))
            .expect("writing to a String cannot fail");
        out
    }
}

/// What a scrape shows beside this process's own counters, read by the caller from the
/// store: telemetry knows none of the store's types.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Runs this process's writer moved to a final status, as (agent, status, runs), the
    /// status `succeeded`, `failed` (for good) or `cancelled`.
    pub finished: Vec<(String, &'static str, u64)>,
    /// Of those, the runs failed for good, as (agent, error kind, runs).
    pub failed: Vec<(String, &'static str, u64)>,
    /// Retries this process's writer scheduled, as (agent, runs).
    pub retried: Vec<(String, u64)>,
    /// Transactions this process's writer committed.
    pub writer_transactions: u64,
    /// This process's writes find the database's storage full.
    pub storage_full: bool,
    /// The queue as the database has it; `None` when it could not be read.
    pub load: Option<LoadSnapshot>,
}

/// The queue's gauges.
#[derive(Debug, Clone, Default)]
pub struct LoadSnapshot {
    pub agents: Vec<AgentGauges>,
    /// Worker processes that heartbeat and have not stopped.
    pub workers_alive: u64,
}

/// The runs of one agent waiting or running.
#[derive(Debug, Clone, Default)]
pub struct AgentGauges {
    pub agent: String,
    pub running: u64,
    /// Queued or retrying, and due.
    pub ready: u64,
    /// Queued or retrying, due later.
    pub scheduled: u64,
    /// When the longest-ready run became due.
    pub oldest_ready_at: Option<chrono::DateTime<chrono::Utc>>,
}

fn agent_kv(agent: &str) -> KeyValue {
    KeyValue::new("agent", agent.to_owned())
}

fn agent_label(agent: &str) -> AgentLabel {
    AgentLabel {
        agent: agent.to_owned(),
    }
}

/// Request methods as labels; anything else is `other`, so a client cannot grow the
/// label set.
fn known_method(method: &str) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
    KNOWN.into_iter().find(|m| *m == method).unwrap_or("other")
}

fn register_transitions(scrape: &mut Registry, snapshot: &Snapshot) {
    let finished: Family<FinishedLabels, Counter> = Family::default();
    let retries: Family<AgentLabel, Counter> = Family::default();
    for (agent, status, runs) in &snapshot.finished {
        let labels = FinishedLabels {
            agent: agent.clone(),
            status,
        };
        finished.get_or_create(&labels).inc_by(*runs);
    }
    for (agent, runs) in &snapshot.retried {
        retries.get_or_create(&agent_label(agent)).inc_by(*runs);
    }
    let failed: Family<FailedLabels, Counter> = Family::default();
    for (agent, error_kind, runs) in &snapshot.failed {
        let labels = FailedLabels {
            agent: agent.clone(),
            error_kind,
        };
        failed.get_or_create(&labels).inc_by(*runs);
    }
    scrape.register(
        "agentq_runs_finished",
        "Runs this process's writer moved to a final status (failed: failed for good)",
        finished,
    );
    scrape.register(
        "agentq_runs_failed",
        "Runs this process's writer failed for good, by why (the run's error kind)",
        failed,
    );
    scrape.register(
        "agentq_run_retries",
        "Retries this process's writer scheduled (a failed attempt, or a lost worker)",
        retries,
    );
    let transactions: Counter = Counter::default();
    transactions.inc_by(snapshot.writer_transactions);
    scrape.register(
        "agentq_writer_transactions",
        "Transactions this process's writer committed (each holds every write that came while the one before was committing)",
        transactions,
    );
    let full: Gauge = Gauge::default();
    full.set(i64::from(snapshot.storage_full));
    scrape.register(
        "agentq_storage_full",
        "1 while this process's writes find the database's storage full (503 storage_full), else 0",
        full,
    );
}

fn register_load(scrape: &mut Registry, load: &LoadSnapshot, agents: &[&str]) {
    let running: Family<AgentLabel, Gauge> = Family::default();
    let ready: Family<AgentLabel, Gauge> = Family::default();
    let scheduled: Family<AgentLabel, Gauge> = Family::default();
    let oldest: Family<AgentLabel, Gauge<f64, std::sync::atomic::AtomicU64>> = Family::default();
    for agent in agents {
        let labels = agent_label(agent);
        running.get_or_create(&labels).set(0);
        ready.get_or_create(&labels).set(0);
        scheduled.get_or_create(&labels).set(0);
        oldest.get_or_create(&labels).set(0.0);
    }
    let now = chrono::Utc::now();
    for a in &load.agents {
        let labels = agent_label(&a.agent);
        running.get_or_create(&labels).set(a.running as i64);
        ready.get_or_create(&labels).set(a.ready as i64);
        scheduled.get_or_create(&labels).set(a.scheduled as i64);
        let age = a.oldest_ready_at.map_or(0.0, |at| {
            (now - at).to_std().unwrap_or_default().as_secs_f64()
        });
        oldest.get_or_create(&labels).set(age);
    }
    scrape.register("agentq_runs_running", "Runs running now", running);
    scrape.register(
        "agentq_runs_ready",
        "Runs queued or retrying and due: waiting for a worker",
        ready,
    );
    scrape.register(
        "agentq_runs_scheduled",
        "Runs queued or retrying and due later (delayed, or waiting out a backoff)",
        scheduled,
    );
    scrape.register(
        "agentq_oldest_ready_run_age_seconds",
        "How long the longest-waiting ready run has been due (0 with none)",
        oldest,
    );
    let alive: Gauge = Gauge::default();
    alive.set(load.workers_alive as i64);
    scrape.register(
        "agentq_workers_alive",
        "Worker processes heartbeating (not gone, not stopped)",
        alive,
    );
}
