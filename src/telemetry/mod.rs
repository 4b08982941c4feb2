//! Logging: human-readable or JSON lines, filtered by `RUST_LOG` (default `info`); and
//! Prometheus metrics (`metrics`).

mod metrics;

pub use metrics::{AttemptOutcome, CONTENT_TYPE as METRICS_CONTENT_TYPE, Metrics};

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,apalis_core=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
