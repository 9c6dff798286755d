//! The dead-letter queue as the operator tools (`resizeq dlq …`) see it: receive with a lease,
//! release, copy to another queue, delete, purge, and native move tasks. Implemented on SQS by
//! `adapters::sqs_dlq` and in memory by `adapters::memory_dlq` (which can fail a send or a
//! delete on demand, as an emulator cannot).

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::error::Result;
use crate::ports::QueueDepth;
#[cfg(doc)]
use crate::ports::MAX_BATCH;

/// The `error_kind` shown for messages without one (moved by a redrive policy, not by us).
pub const NO_KIND: &str = "none";

/// The attribute naming the source queue's message id on a dead-letter copy: two copies with
/// the same one are a duplicate (a send that succeeded, a delete that did not).
pub const SOURCE_MESSAGE_ID: &str = "source_message_id";

/// A message attribute, kept whole (type and binary values too) so a replay can copy it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeValue {
    /// `String`, `Number`, `Binary` or a custom type such as `String.json`.
    pub data_type: String,
    pub string: Option<String>,
    pub binary: Option<Vec<u8>>,
}

impl AttributeValue {
    pub fn text(value: impl Into<String>) -> AttributeValue {
        AttributeValue {
            data_type: "String".into(),
            string: Some(value.into()),
            binary: None,
        }
    }
}

/// A message received from the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqMessage {
    pub id: String,
    /// This receipt's handle: what release and delete need.
    pub receipt: String,
    pub body: String,
    /// As the worker wrote them: `error_kind`, `error_reason`, `source_queue`,
    /// `receive_count`, `first_failed_at` (none on messages moved by a redrive policy).
    pub attributes: HashMap<String, AttributeValue>,
    /// Deliveries from the dead-letter queue itself (our own receives included).
    pub dlq_receive_count: u32,
    /// When it arrived in the dead-letter queue.
    pub sent_at: Option<SystemTime>,
}

impl DlqMessage {
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .get(name)
            .and_then(|v| v.string.as_deref())
            .filter(|v| !v.is_empty())
    }

    pub fn error_kind(&self) -> &str {
        self.attribute("error_kind").unwrap_or(NO_KIND)
    }
}

/// A native move task (SQS StartMessageMoveTask), as ListMessageMoveTasks reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MoveTaskStatus {
    /// RUNNING, COMPLETED, CANCELLING, CANCELLED or FAILED.
    pub status: String,
    pub moved: u64,
    pub to_move: Option<u64>,
    pub failure_reason: Option<String>,
}

impl MoveTaskStatus {
    pub fn is_finished(&self) -> bool {
        matches!(self.status.as_str(), "COMPLETED" | "CANCELLED" | "FAILED")
    }
}

/// What the dlq commands need from a dead-letter queue.
pub trait DeadLetterQueue: Send + Sync {
    fn url(&self) -> &str;

    fn depth(&self) -> impl Future<Output = Result<QueueDepth>> + Send;

    /// Up to `max` (1 to [`MAX_BATCH`]) visible messages, which then stay invisible for `lease`. Waits long
    /// enough that an empty answer means no visible message (SQS: a 1 s long poll).
    fn receive(
        &self,
        max: usize,
        lease: Duration,
    ) -> impl Future<Output = Result<Vec<DlqMessage>>> + Send;

    /// Makes received messages visible again at once.
    fn release(&self, messages: &[DlqMessage]) -> impl Future<Output = Result<()>> + Send;

    /// Sends a copy (body and every attribute) to `queue_url`.
    fn send_copy(
        &self,
        queue_url: &str,
        message: &DlqMessage,
    ) -> impl Future<Output = Result<()>> + Send;

    fn delete(&self, message: &DlqMessage) -> impl Future<Output = Result<()>> + Send;

    /// Deletes every message.
    fn purge(&self) -> impl Future<Output = Result<()>> + Send;

    /// Starts a native move of every message to `destination_url` (none: to the queues they
    /// came from), at most `per_sec` a second; the task's handle. Fails where the endpoint
    /// has no such thing.
    fn start_move_task(
        &self,
        destination_url: Option<&str>,
        per_sec: Option<u32>,
    ) -> impl Future<Output = Result<String>> + Send;

    /// The state of the move task `handle`, if the queue still lists it.
    fn move_task(
        &self,
        handle: &str,
    ) -> impl Future<Output = Result<Option<MoveTaskStatus>>> + Send;
}
