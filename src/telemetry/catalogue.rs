//! Every metric resizeq exports, one constant each: name, type, unit, help and labels.
//!
//! The Grafana dashboard and the alert rules in `helm/resizeq/files/` may only name metrics
//! listed in [`ALL`] (tests/telemetry_files.rs checks it), so a rename here cannot blank a panel
//! silently. Labels are bounded sets only: never keys, bucket names or error text.

use metrics::Unit;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Unit,
    pub help: &'static str,
    pub labels: &'static [&'static str],
    /// Histogram bucket upper bounds (the exporter renders summaries without them).
    pub buckets: &'static [f64],
}

const NO_BUCKETS: &[f64] = &[];
/// From a 1 ms HEAD to a 2 min 100 MP decode.
const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// Queue ages: from a fresh upload to a message that sat for hours during an outage.
const AGE_SECONDS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0, 3600.0, 10800.0,
    43200.0,
];
/// 10 kB thumbnails-as-uploads to 200 MB originals.
const BYTES: &[f64] = &[1e4, 3e4, 1e5, 3e5, 1e6, 3e6, 1e7, 3e7, 1e8, 2e8];
/// 0.01 MP to 100 MP.
const PIXELS: &[f64] = &[1e4, 1e5, 5e5, 1e6, 2e6, 5e6, 1.2e7, 2.4e7, 5e7, 1e8];

macro_rules! metric {
    ($id:ident, $name:literal, $kind:ident, $unit:ident, $labels:expr, $buckets:expr, $help:literal) => {
        pub const $id: Metric = Metric {
            name: $name,
            kind: Kind::$kind,
            unit: Unit::$unit,
            help: $help,
            labels: $labels,
            buckets: $buckets,
        };
    };
}

metric!(
    MESSAGES_RECEIVED,
    "resizeq_messages_received_total",
    Counter,
    Count,
    &[],
    NO_BUCKETS,
    "SQS messages received."
);
metric!(MESSAGES, "resizeq_messages_total", Counter, Count, &["outcome"], NO_BUCKETS,
    "Messages finished, by outcome: processed, skipped, superseded, retried, dead_lettered, ignored, released.");
metric!(
    ERRORS,
    "resizeq_errors_total",
    Counter,
    Count,
    &["error_kind"],
    NO_BUCKETS,
    "Failed jobs by error kind (retried or dead-lettered)."
);
metric!(
    OUTPUT_BYTES,
    "resizeq_output_bytes_total",
    Counter,
    Bytes,
    &["variant"],
    NO_BUCKETS,
    "Bytes of variants written, by variant."
);
metric!(
    VARIANTS_DELETED,
    "resizeq_variants_deleted_total",
    Counter,
    Count,
    &[],
    NO_BUCKETS,
    "Variants deleted because their source was removed or overwritten by a non-image."
);
metric!(
    WRITE_CONFLICTS,
    "resizeq_variant_write_conflicts_total",
    Counter,
    Count,
    &[],
    NO_BUCKETS,
    "Conditional variant writes or deletes refused because another job changed the variant first."
);
metric!(
    VARIANTS_WRITTEN,
    "resizeq_variants_written_total",
    Counter,
    Count,
    &["variant"],
    NO_BUCKETS,
    "Variants written, by variant."
);
metric!(
    LEASE_EXTENSIONS,
    "resizeq_lease_extensions_total",
    Counter,
    Count,
    &[],
    NO_BUCKETS,
    "Visibility timeout extensions of messages whose jobs were still running."
);
metric!(
    AWS_ERRORS,
    "resizeq_aws_errors_total",
    Counter,
    Count,
    &["error_kind"],
    NO_BUCKETS,
    "Failed AWS calls by class: throttling, server, timeout, dispatch, client."
);
metric!(
    POLL_ERRORS,
    "resizeq_poll_errors_total",
    Counter,
    Count,
    &[],
    NO_BUCKETS,
    "ReceiveMessage calls that failed."
);
metric!(
    PIPELINE_CPU,
    "resizeq_pipeline_cpu_seconds",
    Histogram,
    Seconds,
    &[],
    SECONDS,
    "CPU time of each pipeline run (decode, resize, encode) on its thread; _sum is the total."
);
metric!(
    STAGE_DURATION,
    "resizeq_stage_duration_seconds",
    Histogram,
    Seconds,
    &["stage"],
    SECONDS,
    "Time per stage: receive, head, get, decode, resize, encode, put, ack."
);
metric!(
    MESSAGE_DURATION,
    "resizeq_message_duration_seconds",
    Histogram,
    Seconds,
    &[],
    SECONDS,
    "Time from receiving a message to its outcome."
);
metric!(
    MESSAGE_AGE,
    "resizeq_message_age_seconds",
    Histogram,
    Seconds,
    &[],
    AGE_SECONDS,
    "Age of a message when received (now minus its SentTimestamp)."
);
metric!(
    EVENT_TO_VARIANTS,
    "resizeq_event_to_variants_seconds",
    Histogram,
    Seconds,
    &[],
    AGE_SECONDS,
    "From the S3 event time to the last variant written."
);
metric!(
    SOURCE_BYTES,
    "resizeq_source_bytes",
    Histogram,
    Bytes,
    &["format"],
    BYTES,
    "Size of the source objects processed, by format."
);
metric!(
    SOURCE_PIXELS,
    "resizeq_source_pixels",
    Histogram,
    Count,
    &["format"],
    PIXELS,
    "Pixels of the source images processed, by format."
);
metric!(
    JOBS_IN_FLIGHT,
    "resizeq_jobs_in_flight",
    Gauge,
    Count,
    &[],
    NO_BUCKETS,
    "Messages being worked on now."
);
metric!(
    JOBS_STALLED,
    "resizeq_jobs_stalled",
    Gauge,
    Count,
    &[],
    NO_BUCKETS,
    "Jobs running longer than worker.stall_secs now (a stalled S3 call or a wedged decode)."
);
metric!(
    JOBS_WAITING_FOR_CPU,
    "resizeq_jobs_waiting_for_cpu",
    Gauge,
    Count,
    &[],
    NO_BUCKETS,
    "Jobs whose object is fetched, waiting for a free CPU slot (saturation)."
);
metric!(
    MEMORY_BUDGET,
    "resizeq_memory_budget_bytes",
    Gauge,
    Bytes,
    &[],
    NO_BUCKETS,
    "The decode memory budget (worker.memory_budget_mib)."
);
metric!(
    MEMORY_IN_USE,
    "resizeq_memory_budget_bytes_in_use",
    Gauge,
    Bytes,
    &[],
    NO_BUCKETS,
    "Decode memory reserved by running jobs, out of the budget."
);
metric!(QUEUE_MESSAGES, "resizeq_queue_messages", Gauge, Count, &["queue", "state"], NO_BUCKETS,
    "Approximate messages in the source queue and the DLQ by state (visible, in_flight, delayed); polled every 30 s.");
metric!(
    READY,
    "resizeq_ready",
    Gauge,
    Count,
    &[],
    NO_BUCKETS,
    "1 while /readyz answers 200, else 0."
);
metric!(
    BUILD_INFO,
    "resizeq_build_info",
    Gauge,
    Count,
    &["version", "git_sha"],
    NO_BUCKETS,
    "Always 1; labels name the build."
);

/// The whole catalogue, in the order `/metrics` documents it.
pub const ALL: &[&Metric] = &[
    &MESSAGES_RECEIVED,
    &MESSAGES,
    &ERRORS,
    &OUTPUT_BYTES,
    &VARIANTS_WRITTEN,
    &VARIANTS_DELETED,
    &WRITE_CONFLICTS,
    &LEASE_EXTENSIONS,
    &AWS_ERRORS,
    &POLL_ERRORS,
    &PIPELINE_CPU,
    &STAGE_DURATION,
    &MESSAGE_DURATION,
    &MESSAGE_AGE,
    &EVENT_TO_VARIANTS,
    &SOURCE_BYTES,
    &SOURCE_PIXELS,
    &JOBS_IN_FLIGHT,
    &JOBS_STALLED,
    &JOBS_WAITING_FOR_CPU,
    &MEMORY_BUDGET,
    &MEMORY_IN_USE,
    &QUEUE_MESSAGES,
    &READY,
    &BUILD_INFO,
];

/// The series names a metric shows up under in Prometheus (histograms add three).
pub fn series_names(metric: &Metric) -> Vec<String> {
    match metric.kind {
        Kind::Histogram => ["_bucket", "_sum", "_count"]
            .iter()
            .map(|suffix| format!("{}{suffix}", metric.name))
            .collect(),
        _ => vec![metric.name.to_string()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let mut seen = std::collections::HashSet::new();
        for m in ALL {
            assert!(seen.insert(m.name), "{} listed twice", m.name);
            assert!(m.name.starts_with("resizeq_"), "{}", m.name);
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}",
                m.name
            );
            assert_eq!(
                m.kind == Kind::Histogram,
                !m.buckets.is_empty(),
                "{}",
                m.name
            );
            assert!(
                m.buckets.windows(2).all(|w| w[0] < w[1]),
                "{} buckets unsorted",
                m.name
            );
            if m.unit == Unit::Seconds {
                assert!(m.name.contains("_seconds"), "{}", m.name);
            }
            if m.unit == Unit::Bytes {
                assert!(m.name.contains("_bytes"), "{}", m.name);
            }
        }
    }
}
