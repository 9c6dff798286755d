//! Telling the application what happened (`crate::events`): `ready` once every variant of the
//! current version is written, `failed` when a version can never become variants, `deleted`
//! when variants were removed.
//!
//! Publishing comes after the variants are written, so a crash or a failed publish in between
//! would leave the variants current and a redelivered message skipped: the event would be
//! lost. So a publish failure fails the job as transient (the message is retried), and a
//! redelivered message whose variants are current announces them again, rebuilt from the
//! variants' own metadata (a HEAD of each). Both copies carry the same CloudEvents `id`, so an
//! application dedupes them; a duplicate S3 event (a new message) announces nothing.

use std::collections::HashMap;

use base64::Engine;
use tracing::{debug, info};

use super::{Processor, SourceVersion, META_HEIGHT, META_WIDTH};
use crate::error::{Error, ErrorKind, Result};
use crate::event::ObjectCreated;
use crate::events::{AppEvent, Placeholder, Ready, ReadyVariant, SourceRef};
use crate::pipeline::Output;
use crate::ports::{ObjectInfo, Store};

/// Variant metadata that lets a HEAD answer what the `ready` event says: the source's
/// upright size and format, and the placeholder.
pub const META_SOURCE_WIDTH: &str = "resizeq-source-width";
pub const META_SOURCE_HEIGHT: &str = "resizeq-source-height";
pub const META_SOURCE_FORMAT: &str = "resizeq-source-format";
pub const META_THUMBHASH: &str = "resizeq-thumbhash";
pub const META_AVERAGE_COLOR: &str = "resizeq-average-color";

/// Whether the message carrying an event was delivered before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    First,
    /// Received before (a crash, a retry): current variants are announced again.
    Repeat,
}

/// The source of an event about `version` of the event's object.
pub(super) fn source_of(event: &ObjectCreated, version: &SourceVersion) -> SourceRef {
    SourceRef {
        version_id: version.version_id.clone(),
        ..SourceRef::new(&event.bucket, &event.key, Some(version.etag.clone()))
    }
}

/// The metadata every variant of a pipeline run carries for [`ready_from_heads`].
pub(super) fn source_metadata(output: &Output) -> HashMap<String, String> {
    HashMap::from([
        (META_SOURCE_WIDTH.into(), output.source_width.to_string()),
        (META_SOURCE_HEIGHT.into(), output.source_height.to_string()),
        (
            META_SOURCE_FORMAT.into(),
            output.format.as_str().to_string(),
        ),
        (META_THUMBHASH.into(), output.placeholder.thumbhash_base64()),
        (META_AVERAGE_COLOR.into(), output.placeholder.average_hex()),
    ])
}

/// The `ready` event of variants already written, from their HEADs; `None` if one lacks what
/// it needs (written by an older resizeq).
fn ready_from_heads(
    source: SourceRef,
    bucket: &str,
    names: &[String],
    keys: &[String],
    seen: &[Option<ObjectInfo>],
) -> Option<Ready> {
    let number = |info: &ObjectInfo, name: &str| info.metadata.get(name)?.parse::<u32>().ok();
    let first = seen.first()?.as_ref()?;
    let thumbhash = base64::engine::general_purpose::STANDARD
        .decode(first.metadata.get(META_THUMBHASH)?)
        .ok()?;
    let average = first.metadata.get(META_AVERAGE_COLOR)?.strip_prefix('#')?;
    let average = u32::from_str_radix(average, 16).ok()?.to_be_bytes();
    let mut variants = Vec::with_capacity(keys.len());
    for ((name, key), info) in names.iter().zip(keys).zip(seen) {
        let info = info.as_ref()?;
        variants.push(ReadyVariant {
            name: name.clone(),
            bucket: bucket.to_string(),
            key: key.clone(),
            width: number(info, META_WIDTH)?,
            height: number(info, META_HEIGHT)?,
            bytes: info.size,
            content_type: info.content_type.clone()?,
        });
    }
    Some(Ready {
        source,
        width: number(first, META_SOURCE_WIDTH)?,
        height: number(first, META_SOURCE_HEIGHT)?,
        format: first.metadata.get(META_SOURCE_FORMAT)?.clone(),
        variants,
        placeholder: Placeholder {
            thumbhash,
            average_rgb: [average[1], average[2], average[3]],
        },
    })
}

impl<S: Store> Processor<S> {
    /// Publishes `event` if a target is configured. Any failure is transient: the job is
    /// retried rather than the event lost (a missing target is an operator's fix).
    pub(super) async fn announce(&self, event: AppEvent) -> Result<()> {
        let Some(events) = &self.events else {
            return Ok(());
        };
        match events.publish(&event).await {
            Ok(()) => {
                debug!(event = event.event_type(), "announced");
                Ok(())
            }
            Err(e) => Err(Error::new(
                ErrorKind::Service,
                format!("publishing {}: {}", event.event_type(), e.message()),
            )),
        }
    }

    /// On a redelivery, the `ready` event of variants found current (see the module docs).
    pub(super) async fn announce_again(
        &self,
        event: &ObjectCreated,
        version: &SourceVersion,
        bucket: &str,
        keys: &[String],
        seen: &[Option<ObjectInfo>],
    ) -> Result<()> {
        // Not for a version the object has moved on from: its variants are about to go.
        if self.events.is_none() || !self.source_is(event, version).await? {
            return Ok(());
        }
        let names: Vec<String> = self
            .pipeline
            .settings()
            .variants
            .iter()
            .map(|v| v.display_name())
            .collect();
        match ready_from_heads(source_of(event, version), bucket, &names, keys, seen) {
            Some(ready) => {
                info!("redelivered with its variants current: announcing them again");
                self.announce(AppEvent::Ready(ready)).await
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(metadata: &[(&str, &str)], size: u64) -> Option<ObjectInfo> {
        Some(ObjectInfo {
            etag: "e".into(),
            size,
            content_type: Some("image/jpeg".into()),
            metadata: metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    }

    #[test]
    fn a_ready_event_is_rebuilt_from_the_variants_metadata() {
        let source = [
            (META_SOURCE_WIDTH, "1200"),
            (META_SOURCE_HEIGHT, "800"),
            (META_SOURCE_FORMAT, "heic"),
            (META_THUMBHASH, "AQID"),
            (META_AVERAGE_COLOR, "#0a0b0c"),
        ];
        let small = [
            source.as_slice(),
            &[(META_WIDTH, "80"), (META_HEIGHT, "53")],
        ]
        .concat();
        let large = [
            source.as_slice(),
            &[(META_WIDTH, "500"), (META_HEIGHT, "333")],
        ]
        .concat();
        let names = ["80".to_string(), "500".to_string()];
        let keys = ["80/k.jpg".to_string(), "500/k.jpg".to_string()];
        let seen = [head(&small, 1000), head(&large, 20000)];
        let source_ref = SourceRef::new("b", "k", Some("e1".into()));
        let ready = ready_from_heads(source_ref.clone(), "b-resized", &names, &keys, &seen)
            .expect("complete metadata");
        assert_eq!(
            (ready.width, ready.height, ready.format.as_str()),
            (1200, 800, "heic")
        );
        assert_eq!(ready.placeholder.thumbhash, [1, 2, 3]);
        assert_eq!(ready.placeholder.average_rgb, [10, 11, 12]);
        assert_eq!(ready.variants[1].key, "500/k.jpg");
        assert_eq!(
            (ready.variants[1].width, ready.variants[1].height),
            (500, 333)
        );
        assert_eq!(ready.variants[1].bytes, 20000);

        // Written by a resizeq that did not record the placeholder: nothing to announce.
        let old = [
            head(&[(META_WIDTH, "80")], 1),
            head(&[(META_WIDTH, "500")], 1),
        ];
        assert!(ready_from_heads(source_ref, "b-resized", &names, &keys, &old).is_none());
    }
}
