//! Events for the application: what resizeq tells the app around it once a source's variants
//! are written ([`Ready`]), when a source cannot become variants ([`Failed`]) and when
//! variants were removed ([`Deleted`]).
//!
//! Each [`AppEvent`] renders as one CloudEvents 1.0 JSON document in structured mode
//! ([`AppEvent::to_cloudevent`]); the [`crate::ports::Publish`] adapters send exactly that
//! document (SQS message body, SNS message, EventBridge `Detail`, or one line of a file).
//! Pure data: no I/O, no AWS, no codecs.

mod cloudevent;
pub mod target;

use crate::error::Error;
use crate::event::{ETag, ObjectCreated};

pub use cloudevent::{event_id, CLOUDEVENTS_SPEC_VERSION, CONTENT_TYPE};
pub use target::EventsTarget;

/// The CloudEvents `type` of each event; EventBridge's `DetailType` too.
pub const TYPE_READY: &str = "resizeq.variants.ready";
pub const TYPE_FAILED: &str = "resizeq.variants.failed";
pub const TYPE_DELETED: &str = "resizeq.variants.deleted";

/// The source object an event is about, as precisely as it is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRef {
    pub bucket: String,
    pub key: String,
    pub etag: Option<ETag>,
    pub version_id: Option<String>,
}

impl SourceRef {
    pub fn new(bucket: &str, key: &str, etag: Option<ETag>) -> SourceRef {
        SourceRef {
            bucket: bucket.to_string(),
            key: key.to_string(),
            etag,
            version_id: None,
        }
    }

    /// What the S3 event says of its object (the ETag and version it carried, if any). A
    /// caller that has read the object should prefer the ETag it read:
    /// `SourceRef::from_event(e).with_etag(read_etag)`.
    pub fn from_event(event: &ObjectCreated) -> SourceRef {
        SourceRef {
            bucket: event.bucket.clone(),
            key: event.key.clone(),
            etag: event.etag.clone(),
            version_id: event.version_id.clone(),
        }
    }

    pub fn with_etag(mut self, etag: ETag) -> SourceRef {
        self.etag = Some(etag);
        self
    }
}

/// One written variant of a [`Ready`] source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyVariant {
    /// The variant's configured name (e.g. `500w`).
    pub name: String,
    pub bucket: String,
    pub key: String,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    pub content_type: String,
}

/// A tiny stand-in to show while the image loads: a ThumbHash (raw bytes; base64 in JSON) and
/// the average colour (`#rrggbb` in JSON), both of the upright, colour-managed image.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Placeholder {
    pub thumbhash: Vec<u8>,
    pub average_rgb: [u8; 3],
}

impl Placeholder {
    /// `#rrggbb`, lower-case hex, as CSS takes it.
    pub fn average_hex(&self) -> String {
        let [r, g, b] = self.average_rgb;
        format!("#{r:02x}{g:02x}{b:02x}")
    }

    /// The ThumbHash in standard base64 (with padding), as the events carry it.
    pub fn thumbhash_base64(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(&self.thumbhash)
    }
}

/// Every variant of a source version is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub source: SourceRef,
    /// Upright size of the source.
    pub width: u32,
    pub height: u32,
    /// The source's format (`jpeg`, `png`, `heic`…).
    pub format: String,
    pub variants: Vec<ReadyVariant>,
    pub placeholder: Placeholder,
}

#[cfg(feature = "codecs")]
impl Ready {
    /// The ready event of a pipeline run whose variants were all written to `bucket` (the
    /// destination), at the keys the pipeline rendered.
    pub fn from_output(source: SourceRef, output: &crate::pipeline::Output, bucket: &str) -> Ready {
        Ready {
            source,
            width: output.source_width,
            height: output.source_height,
            format: output.format.as_str().to_string(),
            variants: output
                .variants
                .iter()
                .map(|v| ReadyVariant {
                    name: v.name.clone(),
                    bucket: bucket.to_string(),
                    key: v.key.clone(),
                    width: v.width,
                    height: v.height,
                    bytes: v.bytes.len() as u64,
                    content_type: v.content_type().to_string(),
                })
                .collect(),
            placeholder: output.placeholder.clone(),
        }
    }
}

/// A source that will never become variants (dead-lettered for a permanent reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub source: SourceRef,
    /// The bounded `ErrorKind` name (`unsupported`, `corrupt`, `too_large`…), as in the DLQ.
    pub error_kind: String,
    /// One line naming the reason, as in the DLQ's `error_reason`.
    pub error_reason: String,
}

impl Failed {
    pub fn from_error(source: SourceRef, error: &Error) -> Failed {
        Failed {
            source,
            error_kind: error.kind().as_str().to_string(),
            error_reason: error.message().to_string(),
        }
    }
}

/// One removed variant of a [`Deleted`] source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedVariant {
    pub bucket: String,
    pub key: String,
}

/// Variants made from a source were removed (the source was deleted, or replaced by something
/// that is not an image).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    pub source: SourceRef,
    pub variants: Vec<DeletedVariant>,
}

impl Deleted {
    /// The variants `keys` removed from `bucket` (the destination).
    pub fn of_keys(
        source: SourceRef,
        bucket: &str,
        keys: impl IntoIterator<Item = String>,
    ) -> Deleted {
        Deleted {
            source,
            variants: keys
                .into_iter()
                .map(|key| DeletedVariant {
                    bucket: bucket.to_string(),
                    key,
                })
                .collect(),
        }
    }
}

/// One event for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppEvent {
    Ready(Ready),
    Failed(Failed),
    Deleted(Deleted),
}

impl AppEvent {
    /// The CloudEvents `type`: [`TYPE_READY`], [`TYPE_FAILED`] or [`TYPE_DELETED`].
    pub fn event_type(&self) -> &'static str {
        match self {
            AppEvent::Ready(_) => TYPE_READY,
            AppEvent::Failed(_) => TYPE_FAILED,
            AppEvent::Deleted(_) => TYPE_DELETED,
        }
    }

    pub fn source(&self) -> &SourceRef {
        match self {
            AppEvent::Ready(e) => &e.source,
            AppEvent::Failed(e) => &e.source,
            AppEvent::Deleted(e) => &e.source,
        }
    }

    /// The deterministic CloudEvents `id` (see [`event_id`]).
    pub fn id(&self) -> String {
        event_id(self.event_type(), self.source())
    }
}
