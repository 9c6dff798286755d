//! `resizeq dlq stats`: depth, the oldest message's age, counts by `error_kind`, and
//! duplicates (copies of a source message already counted).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::scan::{scan, Held};
use crate::error::Result;
use crate::ops::{age, short_age};
use crate::ports::{DeadLetterQueue, SOURCE_MESSAGE_ID};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DlqStats {
    pub queue: String,
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
    /// When the oldest message read arrived in the dead-letter queue (RFC 3339).
    pub oldest_sent_at: Option<String>,
    pub oldest_age_secs: Option<u64>,
    /// Counts of the messages read, by their `error_kind` attribute.
    pub by_error_kind: BTreeMap<String, u64>,
    /// Messages read whose `source_message_id` another message read has too: the same failure
    /// dead-lettered twice (its send succeeded and the delete from the source queue failed).
    pub duplicates: u64,
    /// How many messages were read to count kinds and find the oldest.
    pub scanned: u64,
    /// Whether every visible message was read (not cut by `--scan-max`).
    pub complete: bool,
}

/// Depth first (before our own receives make messages in flight), then a scan of up to
/// `scan_max` messages for the kinds and the oldest.
pub async fn stats<D: DeadLetterQueue>(
    dlq: &D,
    scan_max: usize,
    lease: Duration,
    note: &mut dyn FnMut(String),
) -> Result<DlqStats> {
    let depth = dlq.depth().await?;
    let mut held = Held::default();
    let scanned = scan(dlq, &mut held, scan_max, lease).await;
    held.release(dlq, note).await;
    let complete = scanned?;
    let mut by_error_kind = BTreeMap::new();
    for m in &held.messages {
        *by_error_kind.entry(m.error_kind().to_string()).or_insert(0) += 1;
    }
    // The source message of each copy: the worker's copies name it; a copy moved by the redrive
    // policy is the source message itself (it keeps its id), so a worker copy and a redrive
    // copy of one message count as one and a duplicate.
    let mut sources = std::collections::HashSet::new();
    let duplicates = held
        .messages
        .iter()
        .map(|m| m.attribute(SOURCE_MESSAGE_ID).unwrap_or(m.id.as_str()))
        .filter(|id| !sources.insert(*id))
        .count() as u64;
    let oldest = held.messages.iter().filter_map(|m| m.sent_at).min();
    Ok(DlqStats {
        queue: dlq.url().to_string(),
        visible: depth.visible,
        in_flight: depth.in_flight,
        delayed: depth.delayed,
        oldest_sent_at: oldest.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
        oldest_age_secs: oldest.map(|t| age(t).as_secs()),
        by_error_kind,
        duplicates,
        scanned: held.len() as u64,
        complete,
    })
}

pub fn render_stats(s: &DlqStats) -> String {
    let mut out = format!(
        "dead-letter queue  {}\nvisible            {}\nin flight          {}\ndelayed            {}\n",
        s.queue, s.visible, s.in_flight, s.delayed
    );
    match (&s.oldest_sent_at, s.oldest_age_secs) {
        (Some(at), Some(secs)) => out.push_str(&format!(
            "oldest             {} (arrived {at})\n",
            short_age(Duration::from_secs(secs))
        )),
        _ => out.push_str("oldest             -\n"),
    }
    out.push_str("error_kind         count\n");
    for (kind, count) in &s.by_error_kind {
        out.push_str(&format!("  {kind:<17}{count}\n"));
    }
    if s.duplicates > 0 {
        out.push_str(&format!(
            "duplicates         {} (a source message dead-lettered more than once; replay \
             moves each copy)\n",
            s.duplicates
        ));
    }
    out.push_str(&format!(
        "({} messages read{})\n",
        s.scanned,
        if s.complete {
            ""
        } else {
            "; not all of them: raise --scan-max or --lease-secs"
        }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::memory_dlq::MemoryDlq;
    use crate::ops::dlq::testing::{fill, lease};
    use crate::ports::NO_KIND;

    #[tokio::test(start_paused = true)]
    async fn copies_of_one_source_message_are_counted_as_duplicates() {
        let dlq = MemoryDlq::new("http://sqs.local/123/dlq");
        for id in ["m1", "m1", "m2", "m1"] {
            dlq.add(
                "body",
                &[("error_kind", "corrupt"), (SOURCE_MESSAGE_ID, id)],
            );
        }
        dlq.add("from a redrive policy", &[]);
        // The redrive policy's copy of a message the worker dead-lettered too (its delete
        // failed): the worker's copy names the id the redrive copy kept.
        dlq.add(
            "body",
            &[
                ("error_kind", "transient_exhausted"),
                (SOURCE_MESSAGE_ID, "d5"),
            ],
        );
        let s = stats(&dlq, 100, lease(), &mut |_| {}).await.unwrap();
        assert_eq!(s.duplicates, 3);
        let text = render_stats(&s);
        assert!(text.contains("duplicates         3"), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn stats_count_kinds_and_leave_every_message_visible() {
        let dlq = MemoryDlq::new("http://sqs.local/123/dlq");
        fill(&dlq, "corrupt", 3);
        fill(&dlq, "poison", 1);
        dlq.add("from a redrive policy", &[]);
        let s = stats(&dlq, 100, lease(), &mut |_| {}).await.unwrap();
        assert_eq!((s.visible, s.in_flight), (5, 0));
        assert_eq!(
            s.by_error_kind,
            BTreeMap::from([
                ("corrupt".into(), 3),
                ("poison".into(), 1),
                (NO_KIND.into(), 1)
            ])
        );
        assert!(s.complete);
        assert_eq!(s.scanned, 5);
        assert!(s.oldest_sent_at.is_some());
        assert_eq!(dlq.visible_count(), 5, "all visible again");
        let text = render_stats(&s);
        assert!(text.contains("corrupt          3"), "{text}");

        assert_eq!(s.duplicates, 0);
        assert!(!text.contains("duplicates"), "{text}");

        let cut = stats(&dlq, 2, lease(), &mut |_| {}).await.unwrap();
        assert_eq!((cut.scanned, cut.complete), (2, false));
        assert_eq!(dlq.visible_count(), 5);
    }
}
