//! `resizeq dlq peek`: messages with their reasons and the objects they name, left in the
//! queue.

use std::time::Duration;

use serde::Serialize;

use super::scan::{scan, Held};
use crate::error::Result;
use crate::event::{self, Parsed};
use crate::ops::{age, short_age};
use crate::ports::{DeadLetterQueue, DlqMessage};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectRef {
    pub bucket: String,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Peeked {
    pub id: String,
    pub error_kind: String,
    pub error_reason: Option<String>,
    pub source_queue: Option<String>,
    /// Deliveries from the source queue before it was dead-lettered.
    pub receive_count: Option<u32>,
    pub dlq_receive_count: u32,
    pub first_failed_at: Option<String>,
    pub sent_at: Option<String>,
    pub age_secs: Option<u64>,
    /// The objects the event names (none for a body that is not an S3 event).
    pub objects: Vec<ObjectRef>,
    /// Why the body is not an S3 event, when it is not.
    pub body_error: Option<String>,
    pub body: String,
}

impl Peeked {
    fn from_message(m: &DlqMessage) -> Peeked {
        let (objects, body_error) = match event::parse(&m.body) {
            Ok(Parsed::Records(records)) => {
                let (events, unreadable): (Vec<_>, Vec<_>) =
                    records.into_iter().partition(Result::is_ok);
                let objects = events
                    .into_iter()
                    .flatten()
                    .map(|e| ObjectRef {
                        bucket: e.bucket().to_string(),
                        key: e.key().to_string(),
                    })
                    .collect();
                let errors: Vec<String> = unreadable
                    .into_iter()
                    .filter_map(Result::err)
                    .map(|e| e.message().to_string())
                    .collect();
                (objects, (!errors.is_empty()).then(|| errors.join("; ")))
            }
            Ok(Parsed::Test) => (Vec::new(), None),
            Err(e) => (Vec::new(), Some(e.message().to_string())),
        };
        let text = |name: &str| m.attribute(name).map(String::from);
        Peeked {
            id: m.id.clone(),
            error_kind: m.error_kind().to_string(),
            error_reason: text("error_reason"),
            source_queue: text("source_queue"),
            receive_count: m.attribute("receive_count").and_then(|v| v.parse().ok()),
            dlq_receive_count: m.dlq_receive_count,
            first_failed_at: text("first_failed_at"),
            sent_at: m
                .sent_at
                .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            age_secs: m.sent_at.map(|t| age(t).as_secs()),
            objects,
            body_error,
            body: m.body.clone(),
        }
    }
}

/// Up to `max` messages, left in the queue: each is made visible again before returning.
pub async fn peek<D: DeadLetterQueue>(
    dlq: &D,
    max: usize,
    lease: Duration,
    note: &mut dyn FnMut(String),
) -> Result<Vec<Peeked>> {
    let mut held = Held::default();
    let scanned = scan(dlq, &mut held, max, lease).await;
    held.release(dlq, note).await;
    scanned?;
    Ok(held.messages.iter().map(Peeked::from_message).collect())
}

pub fn render_peeked(messages: &[Peeked]) -> String {
    let mut out = String::new();
    for p in messages {
        out.push_str(&format!("{}  error_kind={}", p.id, p.error_kind));
        if let Some(n) = p.receive_count {
            out.push_str(&format!("  receive_count={n}"));
        }
        if let Some(secs) = p.age_secs {
            out.push_str(&format!(
                "  age={}",
                short_age(Duration::from_secs(secs)).replace(' ', "")
            ));
        }
        out.push('\n');
        for o in &p.objects {
            out.push_str(&format!("  s3://{}/{}\n", o.bucket, o.key));
        }
        if let Some(reason) = &p.error_reason {
            out.push_str(&format!("  reason: {reason}\n"));
        }
        if let Some(e) = &p.body_error {
            let shown: String = p.body.chars().take(200).collect();
            out.push_str(&format!("  body: {shown:?} ({e})\n"));
        }
        if let Some(at) = &p.first_failed_at {
            out.push_str(&format!("  first failed: {at}\n"));
        }
        if let Some(q) = &p.source_queue {
            out.push_str(&format!("  from: {q}\n"));
        }
    }
    out.push_str(&format!(
        "({} messages shown, all left in the queue)\n",
        messages.len()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::memory_dlq::MemoryDlq;
    use crate::ops::dlq::testing::lease;

    #[tokio::test(start_paused = true)]
    async fn peek_shows_reasons_and_objects_and_consumes_nothing() {
        let dlq = MemoryDlq::new("http://sqs.local/123/dlq");
        dlq.add(
            &event::s3_notification("photos", "a b.jpg", Some("e1"), Some(3)),
            &[("error_kind", "corrupt"), ("error_reason", "truncated")],
        );
        dlq.add("not json", &[("error_kind", "poison")]);
        let peeked = peek(&dlq, 10, lease(), &mut |_| {}).await.unwrap();
        assert_eq!(peeked.len(), 2);
        let corrupt = peeked.iter().find(|p| p.error_kind == "corrupt").unwrap();
        assert_eq!(
            corrupt.objects,
            vec![ObjectRef {
                bucket: "photos".into(),
                key: "a b.jpg".into()
            }]
        );
        assert_eq!(corrupt.error_reason.as_deref(), Some("truncated"));
        let poison = peeked.iter().find(|p| p.error_kind == "poison").unwrap();
        assert!(poison.body_error.is_some());
        assert_eq!(dlq.visible_count(), 2);
        assert!(dlq.sent().is_empty());
        let text = render_peeked(&peeked);
        assert!(text.contains("s3://photos/a b.jpg"), "{text}");
        assert!(text.contains("reason: truncated"), "{text}");

        let one = peek(&dlq, 1, lease(), &mut |_| {}).await.unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(dlq.visible_count(), 2);
    }
}
