//! What the worker and the operator tools talk to, as traits: a queue of messages
//! ([`Queue`], and [`Enqueue`] to send new ones), an object store ([`Store`]) and, for the
//! `resizeq dlq` commands, a dead-letter queue ([`DeadLetterQueue`]). Adapters implement them
//! for SQS and S3 (`adapters::sqs`, `adapters::sqs_dlq`, `adapters::s3`), a local folder
//! (`adapters::fs`) and memory (`adapters::memory`, `adapters::memory_dlq`, for unit tests).
//! [`Publish`] sends the events for the application (`adapters::events_aws`,
//! `adapters::events_file`, `adapters::memory_events`).
//! Only adapters name SDK types; the worker core and the tools see these.
//!
//! Every method returns [`crate::Error`], whose kind says whether a retry can help: adapters
//! classify their failures at the source (see `adapters::aws::classify`).

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, SystemTime};

use crate::error::Result;
pub use crate::event::ETag;
use crate::event::Parsed;

mod dlq;
mod events;

pub use dlq::{
    AttributeValue, DeadLetterQueue, DlqMessage, MoveTaskStatus, NO_KIND, SOURCE_MESSAGE_ID,
};
pub use events::Publish;

/// Most messages one queue call receives, sends, deletes or releases (SQS's batch limit; the
/// in-memory queues keep it too).
pub const MAX_BATCH: usize = 10;
/// The longest visibility timeout (lease) or redelivery delay a queue takes: 12 h (SQS).
pub const MAX_VISIBILITY_SECS: u64 = 43_200;

/// The attribute of [`Message::attributes`] carrying an X-Ray trace header (SQS's
/// `AWSTraceHeader` system attribute).
pub const AWS_TRACE_HEADER: &str = "AWSTraceHeader";

/// One received message, with what is needed to acknowledge or return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    /// The handle of this receipt (SQS ReceiptHandle); changes with every delivery.
    pub receipt: String,
    pub body: String,
    /// How many times the queue has delivered it, this time included.
    pub receive_count: u32,
    /// When the message was first sent to the queue.
    pub sent_at: Option<SystemTime>,
    /// String message attributes (for example a W3C `traceparent`) and the
    /// [`AWS_TRACE_HEADER`] system attribute.
    pub attributes: HashMap<String, String>,
}

/// Sends new messages (the backfill's synthetic events) to a queue.
pub trait Enqueue: Send + Sync + 'static {
    /// Sends up to [`MAX_BATCH`] bodies in one call. `Err`: the call failed as a whole (nothing
    /// was sent). `Ok`: one result per body, in order; a failed entry's error says whether
    /// sending it again can help.
    fn send_batch(&self, bodies: &[String])
        -> impl Future<Output = Result<Vec<Result<()>>>> + Send;
}

/// Why a message was dead-lettered; becomes message attributes on the DLQ copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// A bounded `ErrorKind` name: `unsupported`, `corrupt`, `too_large`, `poison`, `panic`…
    pub error_kind: String,
    /// One line, naming the object and the reason. Never credentials.
    pub error_reason: String,
    /// When this message first failed (RFC 3339).
    pub first_failed_at: String,
}

/// Messages in a queue by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueDepth {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

impl QueueDepth {
    pub fn is_empty(&self) -> bool {
        self.visible == 0 && self.in_flight == 0 && self.delayed == 0
    }
}

pub trait Queue: Send + Sync + 'static {
    /// What a message asks for. Queues of S3 notifications parse the body; an in-process
    /// queue may hold its events typed.
    fn events(&self, message: &Message) -> Result<Parsed> {
        crate::event::parse(&message.body)
    }

    /// Up to `max` messages, waiting up to `wait` for the first (long polling). `visibility`
    /// overrides the queue's visibility timeout for these receipts.
    fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Option<Duration>,
    ) -> impl Future<Output = Result<Vec<Message>>> + Send;

    /// Deletes handled messages (batched where the queue supports it).
    fn ack(&self, messages: &[Message]) -> impl Future<Output = Result<()>> + Send;

    /// Makes the message visible again after `delay` (0 = at once).
    fn retry_after(
        &self,
        message: &Message,
        delay: Duration,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Keeps the message invisible for `visibility` from now.
    fn extend_lease(
        &self,
        message: &Message,
        visibility: Duration,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Whether [`Queue::dead_letter`] has somewhere to send to.
    fn has_dead_letter_queue(&self) -> bool;

    /// Sends the body unchanged to the dead-letter queue with `reason` as attributes, then
    /// deletes the message from this queue. The send happens first: a crash in between
    /// duplicates, never loses.
    fn dead_letter(
        &self,
        message: &Message,
        reason: &DeadLetter,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The queue's own visibility timeout.
    fn visibility_timeout(&self) -> impl Future<Output = Result<Duration>> + Send;

    /// How many receives the queue's redrive policy allows before it moves a message to its
    /// dead-letter queue (SQS `maxReceiveCount`); `None`: no such policy.
    fn max_receive_count(&self) -> impl Future<Output = Result<Option<u32>>> + Send {
        async { Ok(None) }
    }

    /// How long the queue keeps a message before deleting it unprocessed (SQS
    /// `MessageRetentionPeriod`); `None`: it never does.
    fn retention(&self) -> impl Future<Output = Result<Option<Duration>>> + Send {
        async { Ok(None) }
    }

    fn depth(&self) -> impl Future<Output = Result<QueueDepth>> + Send;
}

/// What a HEAD tells: enough to decide whether an object is current.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectInfo {
    pub etag: ETag,
    pub size: u64,
    pub content_type: Option<String>,
    pub metadata: HashMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetOutcome {
    Found {
        bytes: Vec<u8>,
        info: ObjectInfo,
    },
    /// Deleted since the event.
    NotFound,
    /// The If-Match ETag no longer matches: overwritten since the event.
    Changed,
}

/// An object to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutObject {
    pub bucket: String,
    pub key: String,
    pub bytes: Vec<u8>,
    pub content_type: String,
    pub cache_control: Option<String>,
    pub metadata: HashMap<String, String>,
    /// What must be there for the write to happen (S3 conditional writes).
    pub condition: Condition,
}

/// The state a conditional write or delete expects to replace: it happens only if the object
/// is still as it was seen, so two writers racing for one key cannot both win unseen.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Condition {
    /// Whatever is there (a plain write).
    #[default]
    Any,
    /// Only if there is no object (`If-None-Match: *`).
    Absent,
    /// Only if the object still has this ETag (`If-Match`).
    Matches(ETag),
}

impl Condition {
    /// Whether an object with ETag `current` (`None`: there is none) meets the condition.
    pub fn holds(&self, current: Option<&ETag>) -> bool {
        match self {
            Condition::Any => true,
            Condition::Absent => current.is_none(),
            Condition::Matches(etag) => current == Some(etag),
        }
    }
}

/// Whether a conditional write or delete happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Done,
    /// The object was not in the expected state (written, replaced or deleted by someone
    /// else since it was looked at): nothing was changed.
    ConditionFailed,
}

/// Where a listing starts and how much of it one call returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListQuery<'a> {
    /// Only keys that start with this.
    pub prefix: Option<&'a str>,
    /// Only keys after this one (byte order, as S3 lists).
    pub start_after: Option<&'a str>,
    /// [`ListPage::next`] of the previous page, to continue the same listing.
    pub continuation: Option<&'a str>,
    /// At most this many objects in the page (S3 returns at most [`MAX_LIST_PAGE`]).
    pub max_keys: usize,
}

/// The most objects one listing call returns (S3's ListObjectsV2 limit).
pub const MAX_LIST_PAGE: usize = 1000;

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    pub etag: Option<ETag>,
    pub size: Option<u64>,
    pub last_modified: Option<SystemTime>,
}

/// One page of a listing, keys in byte order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListPage {
    pub objects: Vec<ListedObject>,
    /// Where the next page starts (pass as [`ListQuery::continuation`]); `None` on the last.
    pub next: Option<String>,
}

pub trait Store: Send + Sync + 'static {
    /// The object, if it still has ETag `if_match` (when given).
    fn get(
        &self,
        bucket: &str,
        key: &str,
        if_match: Option<&ETag>,
    ) -> impl Future<Output = Result<GetOutcome>> + Send;

    fn head(
        &self,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<ObjectInfo>>> + Send;

    /// Writes the object if [`PutObject::condition`] holds.
    fn put(&self, object: PutObject) -> impl Future<Output = Result<Written>> + Send;

    /// Deletes the object if `condition` holds ([`Condition::Absent`] is not a delete
    /// condition and is refused). An object that is not there is `Done` for
    /// [`Condition::Any`], and `ConditionFailed` for [`Condition::Matches`] (someone else
    /// deleted it: this delete did not happen).
    fn delete(
        &self,
        bucket: &str,
        key: &str,
        condition: &Condition,
    ) -> impl Future<Output = Result<Written>> + Send;

    /// One page of the objects in `bucket`, in key order. An empty bucket (for a local folder,
    /// also one not created yet) is an empty last page.
    fn list(
        &self,
        bucket: &str,
        query: ListQuery<'_>,
    ) -> impl Future<Output = Result<ListPage>> + Send;
}
