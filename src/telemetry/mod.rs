//! Logging: human-readable or JSON lines, filtered by `RUST_LOG` (default `info`);
//! Prometheus metrics (`metrics`); and, with `--otlp-endpoint`, spans exported over OTLP
//! (`otlp`) with the trace carried from the API to the worker (`trace_context`).

mod metrics;
mod otel_metrics;
mod otlp;
mod redact;
mod trace_context;

pub use metrics::{
    AgentGauges, AttemptOutcome, CONTENT_TYPE as METRICS_CONTENT_TYPE, LoadSnapshot, Metrics,
    Snapshot,
};
pub use otel_metrics::observe as observe_over_otlp;
pub use otlp::{OtlpOptions, Tracing};
pub use redact::redacted;
pub use trace_context::{
    attempt_span, continue_request, for_new_run as trace_parent_for_new_run, from_traceparent,
    to_traceparent,
};

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

const DEFAULT_FILTER: &str = "info,sqlx=warn,apalis_core=warn";

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
}

/// How log lines are written: for people, or one JSON object a line for a collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Colours in the logs only on a terminal, and not when `NO_COLOR` is set: a file or a log
/// collector gets plain text.
fn colours() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Installs logging, and with `otlp` the span exporter, whose handle must be shut down at
/// exit to flush the last spans. Without `otlp` the subscriber is the plain formatter it
/// always was.
pub fn init(format: LogFormat, otlp: Option<&OtlpOptions>) -> anyhow::Result<Option<Tracing>> {
    let Some(otlp) = otlp else {
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_ansi(colours())
            .with_writer(std::io::stderr);
        let _ = match format {
            LogFormat::Human => builder.try_init(),
            LogFormat::Json => builder.json().flatten_event(true).try_init(),
        };
        return Ok(None);
    };
    let (tracer, tracing) = otlp::tracer(otlp)?;
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(colours())
        .with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Human => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    // `RUST_LOG` picks the logs; the exported spans are always the `info` ones, so quieter
    // logs do not cut the trace short
    let spans = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(EnvFilter::new(DEFAULT_FILTER));
    let installed = tracing_subscriber::registry()
        .with(fmt.with_filter(filter()))
        .with(spans)
        .try_init();
    if installed.is_ok() {
        otlp::mark_enabled();
    }
    Ok(Some(tracing))
}
