//! What the unit tests of the dlq commands share: a dead-letter queue filled as the worker
//! fills it.

use std::time::Duration;

use crate::adapters::memory_dlq::MemoryDlq;

/// The source queue of the dead letters [`fill`] adds.
pub const SOURCE: &str = "http://sqs.local/123/photos";

pub fn lease() -> Duration {
    Duration::from_secs(60)
}

/// `n` dead letters of `kind` from SOURCE, bodies `"{kind}-{i}"`.
pub fn fill(dlq: &MemoryDlq, kind: &str, n: usize) {
    for i in 0..n {
        dlq.add(
            &format!("{kind}-{i}"),
            &[
                ("error_kind", kind),
                ("error_reason", "s3://b/k: bad bytes"),
                ("source_queue", SOURCE),
                ("receive_count", "1"),
                ("first_failed_at", "2024-05-01T12:00:00Z"),
            ],
        );
    }
}
