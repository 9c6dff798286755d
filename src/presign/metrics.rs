//! The sidecar's metric catalogue: every name once, with what it means. Labels are bounded
//! (method, content type from the allow-list, a fixed set of reasons, route templates).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Upload URLs issued. Labels: `method` (`POST`, `PUT`), `content_type`.
pub const URLS_ISSUED: &str = "resizeq_presign_urls_issued_total";
/// Requests refused. Label: `reason`, one of the `REASON_*` constants.
pub const REJECTIONS: &str = "resizeq_presign_rejections_total";
/// Time to answer a request, seconds. Labels: `route` (the route template), `status`.
pub const REQUEST_DURATION: &str = "resizeq_presign_request_duration_seconds";

/// Signing is local (no call to S3), so nearly everything falls in the first buckets; the
/// upper ones catch a credential refresh or a JWKS fetch.
pub const REQUEST_DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

pub const REASON_UNAUTHENTICATED: &str = "unauthenticated";
pub const REASON_FORBIDDEN: &str = "forbidden";
pub const REASON_RATE_LIMITED: &str = "rate_limited";
pub const REASON_CONTENT_TYPE: &str = "content_type";
pub const REASON_TOO_LARGE: &str = "too_large";
pub const REASON_INVALID_REQUEST: &str = "invalid_request";
pub const REASON_SIGNING_FAILED: &str = "signing_failed";
pub const REASON_BODY_TOO_LARGE: &str = "body_too_large";
pub const REASON_TIMEOUT: &str = "timeout";
pub const REASON_NOT_FOUND: &str = "not_found";
pub const REASON_NOT_READY: &str = "not_ready";

/// Installs the Prometheus recorder once per process and returns its handle (later calls,
/// e.g. several sidecars in one test binary, share it).
pub fn install_recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(REQUEST_DURATION.into()),
                    REQUEST_DURATION_BUCKETS,
                )
                .expect("the bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder already installed (an embedding program's): ours still renders
            // what is recorded through it, which is nothing; say so rather than panic.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics stays empty");
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        URLS_ISSUED,
        "Upload URLs issued, by method and content type."
    );
    metrics::describe_counter!(REJECTIONS, "Requests refused, by reason.");
    metrics::describe_histogram!(
        REQUEST_DURATION,
        metrics::Unit::Seconds,
        "Time to answer a request, by route and status."
    );
}
