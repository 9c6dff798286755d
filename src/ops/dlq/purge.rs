//! `resizeq dlq purge`: counts what is there, then deletes every message.

use std::time::Duration;

use serde::Serialize;

use super::stats::{stats, DlqStats};
use crate::error::Result;
use crate::ports::DeadLetterQueue;

/// What a purge removed: the counts taken just before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PurgeReport {
    pub before: DlqStats,
}

/// Counts (depth and kinds) then deletes every message.
pub async fn purge<D: DeadLetterQueue>(
    dlq: &D,
    scan_max: usize,
    lease: Duration,
    note: &mut dyn FnMut(String),
) -> Result<PurgeReport> {
    let before = stats(dlq, scan_max, lease, note).await?;
    dlq.purge().await?;
    Ok(PurgeReport { before })
}

pub fn render_purge(report: &PurgeReport) -> String {
    let s = &report.before;
    let kinds: Vec<String> = s
        .by_error_kind
        .iter()
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    format!(
        "purged {}: removed={} (visible {}, in flight {}, delayed {}); by error_kind: {}\n",
        s.queue,
        s.visible + s.in_flight + s.delayed,
        s.visible,
        s.in_flight,
        s.delayed,
        if kinds.is_empty() {
            "-".to_string()
        } else {
            kinds.join(" ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::memory_dlq::MemoryDlq;
    use crate::ops::dlq::testing::{fill, lease};

    #[tokio::test(start_paused = true)]
    async fn purge_reports_what_it_removed() {
        let dlq = MemoryDlq::new("http://sqs.local/123/dlq");
        fill(&dlq, "corrupt", 2);
        fill(&dlq, "poison", 1);
        let report = purge(&dlq, 100, lease(), &mut |_| {}).await.unwrap();
        assert_eq!(dlq.remaining(), 0);
        let text = render_purge(&report);
        assert!(text.contains("removed=3"), "{text}");
        assert!(text.contains("corrupt=2 poison=1"), "{text}");
    }
}
