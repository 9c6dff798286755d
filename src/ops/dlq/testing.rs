//! What the unit tests of the dlq commands share: a dead-letter queue filled as the worker
//! fills it.

use std::time::Duration;

use indicatif::ProgressBar;
use tokio_util::sync::CancellationToken;

use super::replay::{replay, ReplayOptions, ReplayReport};
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

pub fn options() -> ReplayOptions {
    ReplayOptions {
        max: None,
        per_sec: None,
        error_kinds: Vec::new(),
        dry_run: false,
        wait: false,
        to: None,
        lease: lease(),
    }
}

/// A replay with [`options`]-like settings and `queue.url` = [`SOURCE`]; its report and notes.
pub async fn run_replay(dlq: &MemoryDlq, options: &ReplayOptions) -> (ReplayReport, Vec<String>) {
    let mut notes = Vec::new();
    let report = replay(
        dlq,
        options,
        Some(SOURCE),
        &ProgressBar::hidden(),
        &CancellationToken::new(),
        &mut |n| notes.push(n),
    )
    .await
    .unwrap();
    (report, notes)
}
