//! Metrics (Prometheus), health endpoints and traces (OpenTelemetry).
//!
//! Recording goes through the `metrics` facade: without an installed recorder (unit tests,
//! `resizeq resize`) every call is a no-op, so the worker core records unconditionally.

pub mod catalogue;
pub mod health;
pub mod otel;
pub mod server;

use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::{Error, Result};
use catalogue::{Kind, ALL};

/// Builds the Prometheus recorder (explicit buckets for every histogram, descriptions for
/// every metric), installs it as the process's global recorder and sets `resizeq_build_info`.
pub fn install_prometheus() -> Result<PrometheusHandle> {
    let mut builder = PrometheusBuilder::new();
    for metric in ALL.iter().filter(|m| m.kind == Kind::Histogram) {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(metric.name.to_string()), metric.buckets)
            .map_err(|e| Error::config(format!("metric {}: {e}", metric.name)))?;
    }
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|_| Error::config("a metrics recorder is already installed"))?;
    for metric in ALL {
        match metric.kind {
            Kind::Counter => metrics::describe_counter!(metric.name, metric.unit, metric.help),
            Kind::Gauge => metrics::describe_gauge!(metric.name, metric.unit, metric.help),
            Kind::Histogram => metrics::describe_histogram!(metric.name, metric.unit, metric.help),
        }
    }
    metrics::gauge!(
        catalogue::BUILD_INFO.name,
        "version" => env!("CARGO_PKG_VERSION"),
        "git_sha" => option_env!("RESIZEQ_GIT_SHA").unwrap_or("unknown"),
    )
    .set(1.0);
    Ok(handle)
}

/// Records one stage's duration in `resizeq_stage_duration_seconds{stage}`.
pub fn record_stage(stage: &'static str, took: Duration) {
    metrics::histogram!(catalogue::STAGE_DURATION.name, "stage" => stage)
        .record(took.as_secs_f64());
}

/// Times `future` as `stage`, also when it fails, in a span named after the stage (a child
/// of the message's trace).
pub async fn timed<T>(stage: &'static str, future: impl std::future::Future<Output = T>) -> T {
    use tracing::Instrument;
    let started = Instant::now();
    let out = future
        .instrument(tracing::info_span!("stage", otel.name = stage))
        .await;
    record_stage(stage, started.elapsed());
    out
}

/// Counts one finished message by outcome.
pub fn count_outcome(outcome: &'static str) {
    metrics::counter!(catalogue::MESSAGES.name, "outcome" => outcome).increment(1);
}
