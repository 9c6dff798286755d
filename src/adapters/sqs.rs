//! [`Queue`] and [`Enqueue`] on Amazon SQS (standard queues).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use aws_sdk_sqs::operation::receive_message::builders::ReceiveMessageFluentBuilder;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName, SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;

use crate::adapters::aws::classify;
use crate::error::{Error, ErrorKind, Result};
pub use crate::ports::AWS_TRACE_HEADER;
use crate::ports::{
    DeadLetter, Enqueue, Message, Queue, QueueDepth, MAX_BATCH, MAX_VISIBILITY_SECS,
    SOURCE_MESSAGE_ID,
};

/// Long polls wait up to 20 s (batch and visibility limits: [`MAX_BATCH`],
/// [`MAX_VISIBILITY_SECS`]).
const MAX_WAIT_SECS: u64 = 20;
/// The longest `error_reason` attribute put on a dead-lettered copy, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;

/// A queue (and optionally its dead-letter queue) by URL.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    url: String,
    dlq_url: Option<String>,
    /// Without `dlq_url`: the redrive policy's dead-letter queue, learnt at start-up (with
    /// the policy's maxReceiveCount), so that the worker's own dead letters still carry their
    /// reason rather than being left to the redrive policy, which adds none.
    redrive_dlq_url: Arc<OnceLock<String>>,
}

impl SqsQueue {
    pub fn new(client: Client, url: impl Into<String>, dlq_url: Option<String>) -> Self {
        SqsQueue {
            client,
            url: url.into(),
            dlq_url,
            redrive_dlq_url: Arc::default(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The dead-letter queue the worker sends to: `queue.dlq_url`, else the redrive policy's.
    pub fn dlq_url(&self) -> Option<&str> {
        self.dlq_url
            .as_deref()
            .or_else(|| self.redrive_dlq_url.get().map(String::as_str))
    }

    async fn change_visibility(&self, op: &str, message: &Message, secs: u64) -> Result<()> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(&message.receipt)
            .visibility_timeout(clamp_secs(secs))
            .send()
            .await
            .map_err(|e| classify(&format!("sqs {op} {}", message.id), e))?;
        Ok(())
    }

    async fn queue_attributes(
        &self,
        op: &str,
        names: &[QueueAttributeName],
    ) -> Result<HashMap<QueueAttributeName, String>> {
        queue_attributes(&self.client, &self.url, op, names).await
    }

    /// One attribute that counts seconds (`None`: absent or not a number).
    async fn seconds_attribute(&self, name: QueueAttributeName) -> Result<Option<Duration>> {
        let attrs = self
            .queue_attributes(name.as_str(), std::slice::from_ref(&name))
            .await?;
        Ok(attrs
            .get(&name)
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs))
    }
}

/// GetQueueAttributes of any queue (`op` names the purpose in errors).
pub async fn queue_attributes(
    client: &Client,
    url: &str,
    op: &str,
    names: &[QueueAttributeName],
) -> Result<HashMap<QueueAttributeName, String>> {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .set_attribute_names(Some(names.to_vec()))
        .send()
        .await
        .map_err(|e| classify(&format!("sqs GetQueueAttributes ({op}) {url}"), e))?;
    Ok(out.attributes.unwrap_or_default())
}

/// Approximate visible, in-flight and delayed counts of any queue.
pub async fn queue_depth(client: &Client, url: &str) -> Result<QueueDepth> {
    let visible = QueueAttributeName::ApproximateNumberOfMessages;
    let in_flight = QueueAttributeName::ApproximateNumberOfMessagesNotVisible;
    let delayed = QueueAttributeName::ApproximateNumberOfMessagesDelayed;
    let names = [visible.clone(), in_flight.clone(), delayed.clone()];
    let attrs = queue_attributes(client, url, "depth", &names).await?;
    let count = |name: &QueueAttributeName| {
        attrs
            .get(name)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(QueueDepth {
        visible: count(&visible),
        in_flight: count(&in_flight),
        delayed: count(&delayed),
    })
}

/// A ReceiveMessage of up to `max` messages (at most [`MAX_BATCH`]) with what
/// [`delivery_info`] reads and every message attribute; the caller adds the wait and the
/// visibility.
pub fn receive_request(client: &Client, url: &str, max: usize) -> ReceiveMessageFluentBuilder {
    client
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
        .message_attribute_names("All")
}

/// The receive count (`ApproximateReceiveCount`, 1 when absent) and the first send time
/// (`SentTimestamp`) of a received message.
pub fn delivery_info(m: &aws_sdk_sqs::types::Message) -> (u32, Option<SystemTime>) {
    let system = m.attributes();
    let system_attr = |name: &MessageSystemAttributeName| system.and_then(|a| a.get(name));
    let receive_count = system_attr(&MessageSystemAttributeName::ApproximateReceiveCount)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let sent_at = system_attr(&MessageSystemAttributeName::SentTimestamp)
        .and_then(|v| v.parse::<u64>().ok())
        .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
    (receive_count, sent_at)
}

fn clamp_secs(secs: u64) -> i32 {
    // Fits: MAX_VISIBILITY_SECS < i32::MAX.
    secs.min(MAX_VISIBILITY_SECS) as i32
}

/// Our [`Message`] from an SQS one; `None` without an id or receipt handle (SQS always sends
/// both).
pub fn to_message(m: &aws_sdk_sqs::types::Message) -> Option<Message> {
    let (receive_count, sent_at) = delivery_info(m);
    let mut attributes: HashMap<String, String> = m
        .message_attributes()
        .into_iter()
        .flatten()
        .filter(|(_, v)| !v.data_type().starts_with("Binary"))
        .filter_map(|(k, v)| Some((k.clone(), v.string_value()?.to_string())))
        .collect();
    let trace_header = m
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::AwsTraceHeader));
    if let Some(trace) = trace_header {
        attributes.insert(AWS_TRACE_HEADER.to_string(), trace.clone());
    }
    Some(Message {
        id: m.message_id()?.to_string(),
        receipt: m.receipt_handle()?.to_string(),
        body: m.body().unwrap_or_default().to_string(),
        receive_count,
        sent_at,
        attributes,
    })
}

/// A message attribute value as SQS accepts it: not empty, only characters valid in XML 1.0
/// (others become U+FFFD), at most `max` bytes (cut at a character boundary, ending in `…`).
pub fn attribute_text(value: &str, max: usize) -> String {
    let mut text: String = value
        .chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' => c,
            c if c >= '\u{10000}' => c,
            _ => '\u{FFFD}',
        })
        .collect();
    if text.len() > max {
        let mut cut = max.saturating_sub('…'.len_utf8());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    if text.is_empty() {
        text.push('-');
    }
    text
}

fn string_attribute(value: &str, max: usize) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(attribute_text(value, max))
        .build()
        .expect("data_type is set")
}

/// The dead-letter copy's attributes: `error_kind`, `error_reason`, `source_queue`,
/// `source_message_id`, `receive_count`, `first_failed_at`, all of type String. The source
/// message id tells copies of one message apart from other messages: a send that succeeded
/// followed by a delete that failed dead-letters the message again on its next receive, and
/// `resizeq dlq stats` counts such duplicates.
pub fn dead_letter_attributes(
    source_queue: &str,
    message: &Message,
    reason: &DeadLetter,
) -> HashMap<String, MessageAttributeValue> {
    // Far under SQS's 256 KiB message limit whatever the other fields hold.
    const MAX_OTHER: usize = 2048;
    HashMap::from([
        (
            "error_kind".to_string(),
            string_attribute(&reason.error_kind, MAX_OTHER),
        ),
        (
            "error_reason".to_string(),
            string_attribute(&reason.error_reason, MAX_REASON_BYTES),
        ),
        (
            "source_queue".to_string(),
            string_attribute(source_queue, MAX_OTHER),
        ),
        (
            SOURCE_MESSAGE_ID.to_string(),
            string_attribute(&message.id, MAX_OTHER),
        ),
        (
            "receive_count".to_string(),
            string_attribute(&message.receive_count.to_string(), MAX_OTHER),
        ),
        (
            "first_failed_at".to_string(),
            string_attribute(&reason.first_failed_at, MAX_OTHER),
        ),
    ])
}

/// Entries a batch delete did not delete, as (message id, code, sender fault).
type BatchFailure = (String, String, bool);

fn batch_error(failures: &[BatchFailure], call_error: Option<Error>, total: usize) -> Error {
    const SHOWN: usize = 10;
    let mut names: Vec<String> = failures
        .iter()
        .take(SHOWN)
        .map(|(id, code, _)| format!("{id} ({code})"))
        .collect();
    if failures.len() > SHOWN {
        names.push(format!("and {} more", failures.len() - SHOWN));
    }
    // A failed call (throttling, a timeout) says what kind it is; failed entries are transient
    // unless every one of them is the sender's fault (an invalid receipt handle, say).
    let kind = match &call_error {
        Some(e) => e.kind(),
        None if failures.iter().all(|(_, _, sender)| *sender) => ErrorKind::Config,
        None => ErrorKind::Service,
    };
    let mut message = format!(
        "sqs DeleteMessageBatch: {} of {total} messages not deleted: {}",
        failures.len(),
        names.join(", ")
    );
    if let Some(e) = call_error {
        message.push_str(&format!("; {}", e.message()));
    }
    Error::new(kind, message)
}

impl Queue for SqsQueue {
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Option<Duration>,
    ) -> Result<Vec<Message>> {
        let out = receive_request(&self.client, &self.url, max)
            .wait_time_seconds(wait.as_secs().min(MAX_WAIT_SECS) as i32)
            .set_visibility_timeout(visibility.map(|v| clamp_secs(v.as_secs())))
            .message_system_attribute_names(MessageSystemAttributeName::AwsTraceHeader)
            .send()
            .await
            .map_err(|e| classify("sqs ReceiveMessage", e))?;
        Ok(out.messages().iter().filter_map(to_message).collect())
    }

    async fn ack(&self, messages: &[Message]) -> Result<()> {
        // The same receipt twice in one batch is an error (moto rejects the whole batch).
        let mut seen = std::collections::HashSet::new();
        let messages: Vec<&Message> = messages
            .iter()
            .filter(|m| seen.insert(m.receipt.as_str()))
            .collect();
        let mut failures: Vec<BatchFailure> = Vec::new();
        let mut call_error: Option<Error> = None;
        for chunk in messages.chunks(MAX_BATCH) {
            // Entry ids are positions in the chunk: unique, and valid whatever the message ids.
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(&m.receipt)
                        .build()
                        .expect("id and receipt handle are set")
                })
                .collect();
            let result = self
                .client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await;
            match result {
                Ok(out) => {
                    for entry in out.failed() {
                        let id = entry
                            .id()
                            .parse::<usize>()
                            .ok()
                            .and_then(|i| chunk.get(i))
                            .map_or_else(|| entry.id().to_string(), |m| m.id.clone());
                        failures.push((id, entry.code().to_string(), entry.sender_fault()));
                    }
                }
                Err(e) => {
                    // Go on with the other chunks: what can be deleted is.
                    let e = classify("sqs DeleteMessageBatch", e);
                    for m in chunk {
                        failures.push((m.id.clone(), "not sent".into(), false));
                    }
                    call_error.get_or_insert(e);
                }
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(batch_error(&failures, call_error, messages.len()))
        }
    }

    async fn retry_after(&self, message: &Message, delay: Duration) -> Result<()> {
        self.change_visibility("ChangeMessageVisibility", message, delay.as_secs())
            .await
    }

    async fn extend_lease(&self, message: &Message, visibility: Duration) -> Result<()> {
        self.change_visibility("ChangeMessageVisibility", message, visibility.as_secs())
            .await
    }

    fn has_dead_letter_queue(&self) -> bool {
        self.dlq_url().is_some()
    }

    async fn dead_letter(&self, message: &Message, reason: &DeadLetter) -> Result<()> {
        let Some(dlq_url) = self.dlq_url() else {
            return Err(Error::config(format!(
                "cannot dead-letter message {}: no dead-letter queue configured (queue.dlq_url)",
                message.id
            )));
        };
        // Send first, delete second: a crash in between leaves a duplicate, never a loss.
        self.client
            .send_message()
            .queue_url(dlq_url)
            .message_body(&message.body)
            .set_message_attributes(Some(dead_letter_attributes(&self.url, message, reason)))
            .send()
            .await
            .map_err(|e| {
                classify(
                    &format!("sqs SendMessage to the dead-letter queue ({})", message.id),
                    e,
                )
            })?;
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(&message.receipt)
            .send()
            .await
            .map_err(|e| {
                classify(
                    &format!("sqs DeleteMessage {} after dead-lettering it", message.id),
                    e,
                )
            })?;
        Ok(())
    }

    async fn retention(&self) -> Result<Option<Duration>> {
        let retention = self
            .seconds_attribute(QueueAttributeName::MessageRetentionPeriod)
            .await?;
        if retention.is_none() {
            tracing::warn!(
                "sqs GetQueueAttributes: no MessageRetentionPeriod in the answer; retries are \
                 planned as if messages never expired"
            );
        }
        Ok(retention)
    }

    async fn visibility_timeout(&self) -> Result<Duration> {
        self.seconds_attribute(QueueAttributeName::VisibilityTimeout)
            .await?
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Service,
                    "sqs GetQueueAttributes: no VisibilityTimeout in the answer",
                )
            })
    }

    async fn depth(&self) -> Result<QueueDepth> {
        queue_depth(&self.client, &self.url).await
    }

    async fn max_receive_count(&self) -> Result<Option<u32>> {
        let attrs = self
            .queue_attributes("RedrivePolicy", &[QueueAttributeName::RedrivePolicy])
            .await?;
        let policy = match attrs.get(&QueueAttributeName::RedrivePolicy) {
            None => return Ok(None),
            Some(policy) if policy.trim().is_empty() => return Ok(None),
            Some(policy) => policy,
        };
        let max = redrive_max_receives(policy)?;
        if self.dlq_url.is_none() && self.redrive_dlq_url.get().is_none() {
            match redrive_dlq_url(&self.client, &self.url, policy).await {
                Ok(url) => {
                    tracing::info!(dlq = %url, "no queue.dlq_url: dead-lettering to the redrive policy's queue");
                    let _ = self.redrive_dlq_url.set(url);
                }
                // A fault that may pass: start-up asks again.
                Err(e) if matches!(e.kind(), ErrorKind::Service | ErrorKind::Io) => return Err(e),
                Err(e) => tracing::warn!(
                    error = %e,
                    "the redrive policy's dead-letter queue cannot be used (set queue.dlq_url): \
                     failures are left to the redrive policy, without a reason"
                ),
            }
        }
        Ok(Some(max))
    }
}

/// `maxReceiveCount` of a RedrivePolicy document (SQS writes it as a number or a string).
fn redrive_max_receives(policy: &str) -> Result<u32> {
    let value: serde_json::Value = serde_json::from_str(policy).map_err(|e| {
        Error::config(format!(
            "the queue's RedrivePolicy is not JSON ({e}): {policy}"
        ))
    })?;
    let count = &value["maxReceiveCount"];
    count
        .as_u64()
        .or_else(|| count.as_str().and_then(|s| s.parse().ok()))
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n >= 1)
        .ok_or_else(|| {
            Error::config(format!(
                "the queue's RedrivePolicy has no valid maxReceiveCount: {policy}"
            ))
        })
}

impl Enqueue for SqsQueue {
    async fn send_batch(&self, bodies: &[String]) -> Result<Vec<Result<()>>> {
        // Entry ids are positions in `bodies`.
        let entries = bodies
            .iter()
            .take(MAX_BATCH)
            .enumerate()
            .map(|(i, body)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body)
                    .build()
                    .expect("id and body are set")
            })
            .collect();
        let out = self
            .client
            .send_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| classify(&format!("sqs SendMessageBatch {}", self.url), e))?;
        // An entry in neither list was not sent, for no reason given: worth another try.
        let mut results: Vec<Result<()>> = bodies
            .iter()
            .take(MAX_BATCH)
            .map(|_| Err(Error::new(ErrorKind::Service, "not sent")))
            .collect();
        for ok in out.successful() {
            if let Some(slot) = ok
                .id()
                .parse::<usize>()
                .ok()
                .and_then(|i| results.get_mut(i))
            {
                *slot = Ok(());
            }
        }
        for failed in out.failed() {
            let Some(slot) = failed
                .id()
                .parse::<usize>()
                .ok()
                .and_then(|i| results.get_mut(i))
            else {
                continue;
            };
            let reason = match failed.message() {
                Some(message) => format!("{}: {message}", failed.code()),
                None => failed.code().to_string(),
            };
            // The sender's fault (a body too large, say) fails the same way every time.
            let kind = if failed.sender_fault() {
                ErrorKind::Config
            } else {
                ErrorKind::Service
            };
            *slot = Err(Error::new(kind, reason));
        }
        Ok(results)
    }
}

/// The URL of a RedrivePolicy's `deadLetterTargetArn` (GetQueueUrl by name and account).
pub async fn redrive_dlq_url(client: &Client, queue: &str, policy: &str) -> Result<String> {
    let arn = serde_json::from_str::<serde_json::Value>(policy)
        .ok()
        .and_then(|p| p.get("deadLetterTargetArn")?.as_str().map(String::from))
        .ok_or_else(|| {
            Error::config(format!(
                "{queue}: RedrivePolicy without deadLetterTargetArn"
            ))
        })?;
    let (account, name) = arn_account_and_name(&arn)
        .ok_or_else(|| Error::config(format!("{queue}: not an SQS ARN in RedrivePolicy: {arn}")))?;
    let out = client
        .get_queue_url()
        .queue_name(name)
        .queue_owner_aws_account_id(account)
        .send()
        .await
        .map_err(|e| classify(&format!("sqs GetQueueUrl {name}"), e))?;
    out.queue_url()
        .map(String::from)
        .ok_or_else(|| Error::new(ErrorKind::Service, "sqs GetQueueUrl: no URL"))
}

/// `arn:aws:sqs:REGION:ACCOUNT:NAME` → (ACCOUNT, NAME).
fn arn_account_and_name(arn: &str) -> Option<(&str, &str)> {
    let parts: Vec<&str> = arn.split(':').collect();
    match parts.as_slice() {
        ["arn", _, "sqs", _, account, name] if !name.is_empty() => Some((account, name)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sqs::types::Message as SqsMessage;

    #[test]
    fn dead_letter_target_arns_name_account_and_queue() {
        assert_eq!(
            arn_account_and_name("arn:aws:sqs:eu-west-1:123456789012:photos-dlq"),
            Some(("123456789012", "photos-dlq"))
        );
        assert_eq!(arn_account_and_name("arn:aws:sns:eu-west-1:1:t"), None);
        assert_eq!(arn_account_and_name("photos-dlq"), None);
    }

    #[test]
    fn sqs_messages_map_with_their_attributes() {
        let m = SqsMessage::builder()
            .message_id("id-1")
            .receipt_handle("rh-1")
            .body("{}")
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "3")
            .attributes(MessageSystemAttributeName::SentTimestamp, "1700000000123")
            .attributes(MessageSystemAttributeName::AwsTraceHeader, "Root=1-abc")
            .message_attributes(
                "traceparent",
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("00-abc-def-01")
                    .build()
                    .unwrap(),
            )
            .message_attributes(
                "blob",
                MessageAttributeValue::builder()
                    .data_type("Binary")
                    .binary_value(aws_sdk_sqs::primitives::Blob::new(vec![1, 2]))
                    .build()
                    .unwrap(),
            )
            .build();
        let ours = to_message(&m).unwrap();
        assert_eq!(ours.id, "id-1");
        assert_eq!(ours.receipt, "rh-1");
        assert_eq!(ours.receive_count, 3);
        assert_eq!(
            ours.sent_at,
            Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123))
        );
        assert_eq!(ours.attributes.len(), 2, "{:?}", ours.attributes);
        assert_eq!(ours.attributes["traceparent"], "00-abc-def-01");
        assert_eq!(ours.attributes[AWS_TRACE_HEADER], "Root=1-abc");

        let bare = SqsMessage::builder()
            .message_id("id-2")
            .receipt_handle("rh-2")
            .build();
        let ours = to_message(&bare).unwrap();
        assert_eq!((ours.receive_count, ours.sent_at), (1, None));
        assert!(to_message(&SqsMessage::builder().message_id("x").build()).is_none());
    }

    #[test]
    fn attribute_text_is_valid_bounded_and_not_empty() {
        assert_eq!(attribute_text("", 10), "-");
        assert_eq!(attribute_text("a\u{0}b\u{1b}c", 100), "a\u{FFFD}b\u{FFFD}c");
        let long = "é".repeat(1000); // 2000 bytes
        let cut = attribute_text(&long, MAX_REASON_BYTES);
        assert!(cut.len() <= MAX_REASON_BYTES, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert_eq!(attribute_text("short", MAX_REASON_BYTES), "short");
    }

    #[test]
    fn redrive_policies_give_their_max_receive_count() {
        let arn = "arn:aws:sqs:us-east-1:123:dlq";
        let text = format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"5"}}"#);
        assert_eq!(redrive_max_receives(&text).unwrap(), 5);
        let number = format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":3}}"#);
        assert_eq!(redrive_max_receives(&number).unwrap(), 3);
        let e = redrive_max_receives(r#"{"maxReceiveCount":"lots"}"#).unwrap_err();
        assert!(e.message().contains("maxReceiveCount"), "{e}");
        assert!(redrive_max_receives("not json").unwrap_err().is_permanent());
    }

    #[test]
    fn batch_errors_name_the_messages_and_pick_a_kind() {
        let sender = vec![("m1".to_string(), "ReceiptHandleIsInvalid".to_string(), true)];
        let e = batch_error(&sender, None, 3);
        assert!(e.is_permanent());
        assert!(
            e.message()
                .contains("1 of 3 messages not deleted: m1 (ReceiptHandleIsInvalid)"),
            "{e}"
        );
        let mixed = vec![
            ("m1".to_string(), "InternalError".to_string(), false),
            ("m2".to_string(), "ReceiptHandleIsInvalid".to_string(), true),
        ];
        assert!(!batch_error(&mixed, None, 2).is_permanent());
        let call = Error::new(ErrorKind::Service, "sqs DeleteMessageBatch: timed out");
        let e = batch_error(&mixed, Some(call), 2);
        assert!(!e.is_permanent());
        assert!(e.message().ends_with("timed out"), "{e}");
    }
}
