//! The CloudEvents 1.0 structured-mode JSON document of an [`AppEvent`].

use std::time::SystemTime;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::{AppEvent, SourceRef};

pub const CLOUDEVENTS_SPEC_VERSION: &str = "1.0";
/// The `datacontenttype` of every event (and the content type of the documents on a wire).
pub const CONTENT_TYPE: &str = "application/json";

/// The `id` of an event: the same type about the same source version always gets the same id,
/// so a consumer that sees an event twice (published again on a retry) can drop the second.
/// SHA-256 of the type, bucket, key, ETag and version (each NUL-terminated, so no two inputs
/// run together), 32 hex digits.
pub fn event_id(event_type: &str, source: &SourceRef) -> String {
    let mut hash = Sha256::new();
    for part in [
        event_type,
        &source.bucket,
        &source.key,
        source.etag.as_deref().unwrap_or(""),
        source.version_id.as_deref().unwrap_or(""),
    ] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    let digest: [u8; 32] = hash.finalize().into();
    hex::encode(&digest[..16])
}

impl AppEvent {
    /// The CloudEvents document, stamped with the current time.
    pub fn to_cloudevent(&self) -> Value {
        self.to_cloudevent_at(SystemTime::now())
    }

    /// The CloudEvents document with `time` = `at` (RFC 3339, UTC, milliseconds).
    pub fn to_cloudevent_at(&self, at: SystemTime) -> Value {
        let source = self.source();
        json!({
            "specversion": CLOUDEVENTS_SPEC_VERSION,
            "type": self.event_type(),
            "source": format!("s3://{}", source.bucket),
            "subject": source.key,
            "id": self.id(),
            "time": humantime::format_rfc3339_millis(at).to_string(),
            "datacontenttype": CONTENT_TYPE,
            "data": self.data(),
        })
    }

    /// The document as one line of JSON (no newline inside: what a file of events and the
    /// queues carry).
    pub fn to_json(&self) -> String {
        self.to_cloudevent().to_string()
    }

    fn data(&self) -> Value {
        let source = self.source();
        let mut data = Map::new();
        data.insert("bucket".into(), json!(source.bucket));
        data.insert("key".into(), json!(source.key));
        if let Some(etag) = &source.etag {
            data.insert("etag".into(), json!(etag.to_string()));
        }
        if let Some(version) = &source.version_id {
            data.insert("version_id".into(), json!(version));
        }
        match self {
            AppEvent::Ready(ready) => {
                data.insert("width".into(), json!(ready.width));
                data.insert("height".into(), json!(ready.height));
                data.insert("format".into(), json!(ready.format));
                let variants = ready.variants.iter().map(|v| {
                    json!({
                        "name": v.name,
                        "bucket": v.bucket,
                        "key": v.key,
                        "width": v.width,
                        "height": v.height,
                        "bytes": v.bytes,
                        "content_type": v.content_type,
                    })
                });
                data.insert("variants".into(), Value::Array(variants.collect()));
                data.insert(
                    "thumbhash".into(),
                    json!(ready.placeholder.thumbhash_base64()),
                );
                data.insert(
                    "average_color".into(),
                    json!(ready.placeholder.average_hex()),
                );
            }
            AppEvent::Failed(failed) => {
                data.insert("error_kind".into(), json!(failed.error_kind));
                data.insert("error_reason".into(), json!(failed.error_reason));
            }
            AppEvent::Deleted(deleted) => {
                let variants = deleted
                    .variants
                    .iter()
                    .map(|v| json!({ "bucket": v.bucket, "key": v.key }));
                data.insert("variants".into(), Value::Array(variants.collect()));
            }
        }
        Value::Object(data)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::error::Error;
    use crate::event::ETag;
    use crate::events::{Deleted, Failed, Placeholder, Ready, ReadyVariant, TYPE_READY};

    fn at() -> SystemTime {
        // 2026-11-28T05:00:00.250Z
        UNIX_EPOCH + Duration::from_millis(1_795_842_000_250)
    }

    fn source() -> SourceRef {
        SourceRef {
            bucket: "uploads".into(),
            key: "photos/cat.jpg".into(),
            etag: Some(ETag::new("\"9b2cf535f27731c974343645a3985328\"")),
            version_id: Some("3HL4kqtJlcpXroDTDmJ".into()),
        }
    }

    pub(crate) fn ready() -> AppEvent {
        AppEvent::Ready(Ready {
            source: source(),
            width: 4032,
            height: 3024,
            format: "jpeg".into(),
            variants: vec![ReadyVariant {
                name: "500w".into(),
                bucket: "uploads-resized".into(),
                key: "500w/photos/cat.webp".into(),
                width: 500,
                height: 375,
                bytes: 31_337,
                content_type: "image/webp".into(),
            }],
            placeholder: Placeholder {
                thumbhash: vec![0x1b, 0x08, 0x06, 0x0d, 0x80],
                average_rgb: [0x8a, 0x6f, 0x0c],
            },
        })
    }

    #[test]
    fn ready_renders_as_a_cloudevent() {
        let id = event_id(TYPE_READY, &source());
        assert_eq!(
            ready().to_cloudevent_at(at()),
            json!({
                "specversion": "1.0",
                "type": "resizeq.variants.ready",
                "source": "s3://uploads",
                "subject": "photos/cat.jpg",
                "id": id,
                "time": "2026-11-28T05:00:00.250Z",
                "datacontenttype": "application/json",
                "data": {
                    "bucket": "uploads",
                    "key": "photos/cat.jpg",
                    "etag": "9b2cf535f27731c974343645a3985328",
                    "version_id": "3HL4kqtJlcpXroDTDmJ",
                    "width": 4032,
                    "height": 3024,
                    "format": "jpeg",
                    "variants": [{
                        "name": "500w",
                        "bucket": "uploads-resized",
                        "key": "500w/photos/cat.webp",
                        "width": 500,
                        "height": 375,
                        "bytes": 31337,
                        "content_type": "image/webp",
                    }],
                    "thumbhash": "GwgGDYA=",
                    "average_color": "#8a6f0c",
                },
            })
        );
    }

    #[test]
    fn failed_renders_its_reason_and_leaves_out_what_is_unknown() {
        let event = AppEvent::Failed(Failed::from_error(
            SourceRef::new("uploads", "docs/notes.txt", None),
            &Error::unsupported("not an image format resizeq reads"),
        ));
        let doc = event.to_cloudevent_at(at());
        assert_eq!(doc["type"], "resizeq.variants.failed");
        assert_eq!(doc["subject"], "docs/notes.txt");
        assert_eq!(
            doc["data"],
            json!({
                "bucket": "uploads",
                "key": "docs/notes.txt",
                "error_kind": "unsupported",
                "error_reason": "not an image format resizeq reads",
            })
        );
    }

    #[test]
    fn deleted_renders_the_removed_variants() {
        let event = AppEvent::Deleted(Deleted::of_keys(
            source(),
            "uploads-resized",
            [
                "500w/photos/cat.webp".to_string(),
                "150w/photos/cat.webp".into(),
            ],
        ));
        let doc = event.to_cloudevent_at(at());
        assert_eq!(doc["type"], "resizeq.variants.deleted");
        assert_eq!(doc["source"], "s3://uploads");
        assert_eq!(
            doc["data"],
            json!({
                "bucket": "uploads",
                "key": "photos/cat.jpg",
                "etag": "9b2cf535f27731c974343645a3985328",
                "version_id": "3HL4kqtJlcpXroDTDmJ",
                "variants": [
                    { "bucket": "uploads-resized", "key": "500w/photos/cat.webp" },
                    { "bucket": "uploads-resized", "key": "150w/photos/cat.webp" },
                ],
            })
        );
    }

    #[test]
    fn the_id_is_the_same_for_the_same_event_and_differs_otherwise() {
        let id = ready().id();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        // Published twice (a retry): one id, whatever the time.
        assert_eq!(
            ready().to_cloudevent_at(at())["id"],
            ready().to_cloudevent()["id"]
        );
        let other = |f: &dyn Fn(&mut SourceRef)| {
            let mut s = source();
            f(&mut s);
            event_id(TYPE_READY, &s)
        };
        assert_ne!(other(&|s| s.etag = Some(ETag::new("other"))), id);
        assert_ne!(other(&|s| s.version_id = None), id);
        assert_ne!(other(&|s| s.key = "photos/dog.jpg".into()), id);
        assert_ne!(other(&|s| s.bucket = "elsewhere".into()), id);
        assert_ne!(event_id("resizeq.variants.deleted", &source()), id);
        // Fields do not run together: ("ab", "c") is not ("a", "bc").
        let split =
            |bucket: &str, key: &str| event_id(TYPE_READY, &SourceRef::new(bucket, key, None));
        assert_ne!(split("ab", "c"), split("a", "bc"));
    }

    #[test]
    fn a_document_is_one_line() {
        let mut event = ready();
        if let AppEvent::Ready(r) = &mut event {
            r.source.key = "odd\nkey".into();
        }
        let line = event.to_json();
        assert!(!line.contains('\n'), "{line}");
        let back: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back["subject"], "odd\nkey");
    }
}
