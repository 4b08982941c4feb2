//! Span and metric export to an OpenTelemetry collector over OTLP/HTTP (protobuf), when
//! `--otlp-endpoint` is set. Unset, none of this is built: no layer, no exporter thread.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

/// Where spans go and under which service name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpOptions {
    /// The collector's base URL, e.g. `http://collector:4318`; spans are posted to
    /// `<endpoint>/v1/traces`.
    pub endpoint: String,
    pub service_name: String,
}

impl OtlpOptions {
    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.endpoint.trim_end_matches('/'))
    }

    pub fn metrics_url(&self) -> String {
        format!("{}/v1/metrics", self.endpoint.trim_end_matches('/'))
    }
}

/// Set once the OpenTelemetry layer is installed; read on hot paths (the request span,
/// every attempt) so that a process without tracing does no trace work at all.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether this process exports spans.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub(super) fn mark_enabled() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// The exporter pipeline. The provider batches spans on its own thread and posts them
/// with a blocking reqwest client there, so exporting never runs on the async workers.
pub(super) fn tracer(options: &OtlpOptions) -> anyhow::Result<(SdkTracer, Tracing)> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(options.traces_url())
        .build()
        .with_context(|| format!("building the OTLP exporter for {}", options.endpoint))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(options.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("agentq");
    // metrics: the periodic reader exports from its own thread, like the spans
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(options.metrics_url())
        .build()
        .with_context(|| {
            format!(
                "building the OTLP metrics exporter for {}",
                options.endpoint
            )
        })?;
    let meters = SdkMeterProvider::builder()
        .with_periodic_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(options.service_name.clone())
                .build(),
        )
        .build();
    opentelemetry::global::set_meter_provider(meters.clone());
    super::otel_metrics::mark_enabled();
    Ok((tracer, Tracing { provider, meters }))
}

/// Holds the exporter; [`Tracing::shutdown`] sends the spans still batched. Dropping it
/// without shutting down also flushes, but blocks wherever the drop happens.
#[must_use = "shut it down at exit, or spans still batched are lost"]
pub struct Tracing {
    provider: SdkTracerProvider,
    meters: SdkMeterProvider,
}

impl Tracing {
    /// Exports what is batched and stops the exporter. Blocks (up to the exporter's
    /// timeout): call it off the async threads (`spawn_blocking`).
    pub fn shutdown(self) {
        if let Err(e) = self.meters.shutdown() {
            tracing::warn!(error = %e, "could not send the last metrics to the OTLP collector");
        }
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "could not flush the last spans to the OTLP collector");
        }
    }
}
