//! Newest version wins: the variants that remain belong to the source object as it is now (or
//! are gone, if it is gone), whatever order events arrive in and jobs finish in.
//!
//! # Why this is correct
//!
//! Every write or delete of a variant is conditional on the variant being as a look at it
//! found it (`If-Match` its ETag, or `If-None-Match: *` when there was none), and after that
//! look and before writing, the source is checked to still be the version being worked for
//! (the GET `If-Match` the event's ETag; after a refused write, a HEAD). So when a job for
//! version A writes variant `v` at time `w`, nobody wrote `v` between A's look `l` and `w`,
//! and the source was A at a time `c`, `l < c < w`. After its writes, A's job looks at the
//! source once more (time `e > w`). Let B be the next change of the object (an upload, a
//! delete, or something that is not an image), at time `u`:
//!
//! - `u < c` cannot be: the check at `c` would have found B.
//! - `c < u < e`: A's check at `e` finds the object moved, and A's job *follows* it: it does
//!   for the object as it is at `e` what B's own job would do (render it, remove the variants
//!   if it is gone, remove them and announce `failed` if it is not an image), under the same
//!   rules. So `v` does not depend on B's job ever running, which matters: S3 may send one
//!   event for two quick writes of an unversioned object, and deletes and non-images write
//!   no variants that would replace A's.
//! - `u > e`: B's job (or a job that follows B) starts after A's writes and replaces them.
//!
//! Jobs that meet at `v` cannot both win unseen: a write or delete that lands between another
//! job's look and its write makes that write refused, and the refused job looks again (and
//! follows the object if it moved). Removals are the mirror image: a variant is deleted only if
//! it is as looked at, after a HEAD found the source gone; if the source is there (a re-upload,
//! or a versioned bucket's previous version made current by deleting the current one), the job
//! follows it instead. Two jobs of one version (an event delivered twice) conflict only until
//! one of them looks again and finds the variant made from that version. Following is bounded
//! (`FOLLOW_LIMIT`); an object that keeps changing faster is a transient failure, retried.
//!
//! The event `sequencer` (real S3; moto sends none) adds a cheaper check: it orders events of
//! one key, so variants made from a later sequencer than the event are a newer version's; an
//! older job steps aside and a late removal keeps them without asking the source.

use std::cmp::Ordering;
use std::collections::HashMap;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    metadata_safe, Attempt, Delivery, Processor, RecordOutcome, META_CONFIG, META_HEIGHT,
    META_SOURCE_ETAG, META_SOURCE_KEY, META_SOURCE_SEQUENCER, META_SOURCE_VERSION, META_WIDTH,
};
use crate::error::{Error, ErrorKind, Result};
use crate::event::{ObjectCreated, ObjectRemoved};
use crate::events::{AppEvent, Deleted, SourceRef};
use crate::pipeline::Rendered;
use crate::ports::{Condition, ETag, ObjectInfo, PutObject, Store, Written};
use crate::telemetry::{self, catalogue};

/// How many times one job looks again after a refused write before it gives up (a transient
/// failure: the message is retried). Each refusal means another job's write succeeded.
const WRITE_ROUNDS: usize = 5;

/// The source version a job renders: its ETag, and what its event said of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SourceVersion {
    pub etag: ETag,
    pub sequencer: Option<String>,
    pub version_id: Option<String>,
}

impl SourceVersion {
    pub fn of(event: &ObjectCreated, etag: &ETag) -> SourceVersion {
        SourceVersion {
            etag: etag.clone(),
            sequencer: event.sequencer.clone(),
            version_id: event.version_id.clone(),
        }
    }

    /// The metadata every variant of this version carries (the variant's size is added).
    fn metadata(&self, key: &str, fingerprint: &str) -> HashMap<String, String> {
        let mut metadata = HashMap::from([
            (META_SOURCE_KEY.to_string(), metadata_safe(key)),
            (META_SOURCE_ETAG.to_string(), self.etag.to_string()),
            (META_CONFIG.to_string(), fingerprint.to_string()),
        ]);
        if let Some(sequencer) = &self.sequencer {
            metadata.insert(META_SOURCE_SEQUENCER.to_string(), sequencer.clone());
        }
        if let Some(version) = &self.version_id {
            metadata.insert(META_SOURCE_VERSION.to_string(), metadata_safe(version));
        }
        metadata
    }
}

/// S3's order of two sequencers of one key: the shorter is right-padded with zeros, then
/// the hex strings compare as text.
pub(super) fn sequencer_order(a: &str, b: &str) -> Ordering {
    let width = a.len().max(b.len());
    let pad = |s: &str| format!("{:0<width$}", s.to_ascii_uppercase());
    pad(a).cmp(&pad(b))
}

/// Whether a variant was made from a version of `key` whose event came after `sequencer`.
fn made_after(info: &ObjectInfo, sequencer: Option<&str>) -> bool {
    match (info.metadata.get(META_SOURCE_SEQUENCER), sequencer) {
        (Some(theirs), Some(ours)) => sequencer_order(theirs, ours) == Ordering::Greater,
        _ => false,
    }
}

/// Whether a variant was made from (some version of) `key`: a key template can map two
/// sources to one variant key, and the other source's variant is not ours to delete.
fn made_from_key(info: &ObjectInfo, key: &str) -> bool {
    info.metadata.get(META_SOURCE_KEY) == Some(&metadata_safe(key))
}

/// What to expect of a variant when replacing it: as seen, or still absent.
fn condition_for(seen: &Option<ObjectInfo>) -> Condition {
    match seen {
        Some(info) => Condition::Matches(info.etag.clone()),
        None => Condition::Absent,
    }
}

impl<S: Store> Processor<S> {
    /// Whether a variant seen before the GET shows that a newer version was rendered already.
    pub(super) fn newer_version_seen(
        &self,
        key: &str,
        seen: &[Option<ObjectInfo>],
        version: &SourceVersion,
    ) -> bool {
        seen.iter().flatten().any(|info| {
            made_from_key(info, key)
                && info.metadata.get(META_SOURCE_ETAG) != Some(&version.etag.to_string())
                && made_after(info, version.sequencer.as_deref())
        })
    }

    /// Writes the rendered variants, each on condition that it is as last seen; see the
    /// module documentation. `seen` is the look taken before the source was fetched.
    pub(super) async fn write_variants(
        &self,
        event: &ObjectCreated,
        version: &SourceVersion,
        bucket: &str,
        variants: Vec<Rendered>,
        extra_metadata: HashMap<String, String>,
        mut seen: Vec<Option<ObjectInfo>>,
    ) -> Result<Attempt> {
        let keys: Vec<String> = variants.iter().map(|v| v.key.clone()).collect();
        let mut metadata = version.metadata(&event.key, self.pipeline.fingerprint());
        metadata.extend(extra_metadata);
        for _ in 0..WRITE_ROUNDS {
            let mut refused = false;
            for (variant, seen) in variants.iter().zip(&seen) {
                if self.made_from(seen, version) {
                    continue; // written meanwhile by another delivery of the same event
                }
                let mut metadata = metadata.clone();
                metadata.insert(META_WIDTH.to_string(), variant.width.to_string());
                metadata.insert(META_HEIGHT.to_string(), variant.height.to_string());
                let put = self.store.put(PutObject {
                    bucket: bucket.to_string(),
                    key: variant.key.clone(),
                    bytes: variant.bytes.clone(),
                    content_type: variant.content_type().to_string(),
                    cache_control: self.destination.cache_control.clone(),
                    metadata,
                    condition: condition_for(seen),
                });
                match telemetry::timed("put", put).await? {
                    Written::Done => {
                        let name = variant.name.clone();
                        metrics::counter!(catalogue::OUTPUT_BYTES.name, "variant" => name.clone())
                            .increment(variant.bytes.len() as u64);
                        metrics::counter!(catalogue::VARIANTS_WRITTEN.name, "variant" => name)
                            .increment(1);
                    }
                    Written::ConditionFailed => {
                        metrics::counter!(catalogue::WRITE_CONFLICTS.name).increment(1);
                        refused = true;
                    }
                }
            }
            if !refused {
                // The check after writing: if the object moved on meanwhile, these variants
                // are not its; the caller follows it.
                return Ok(if self.source_is(event, version).await? {
                    Attempt::Done(RecordOutcome::Processed)
                } else {
                    Attempt::Moved
                });
            }
            // Another job wrote a variant since the look: look again, then at the source.
            seen = self.look_at_variants(bucket, &keys).await?;
            if !self.source_is(event, version).await? {
                return Ok(Attempt::Moved);
            }
        }
        Err(Error::new(
            ErrorKind::Service,
            format!("the variants kept changing while being written ({WRITE_ROUNDS} rounds)"),
        ))
    }

    /// Whether the source is still `version`.
    pub(super) async fn source_is(
        &self,
        event: &ObjectCreated,
        version: &SourceVersion,
    ) -> Result<bool> {
        let head = self.store.head(&event.bucket, &event.key);
        let current = telemetry::timed("head", head).await?;
        Ok(current.is_some_and(|info| info.etag == version.etag))
    }

    /// A removed object: deletes the variants made from it, if it is really gone.
    pub(super) async fn removed(
        &self,
        event: &ObjectRemoved,
        delivery: Delivery,
        draining: &CancellationToken,
    ) -> Result<RecordOutcome> {
        if !self.delete_variants || self.ignores(&event.bucket, &event.key, None) {
            return Ok(RecordOutcome::Ignored);
        }
        self.remove_variants(event, delivery, draining, 0).await
    }

    /// Deletes the variants made from `event`'s key if the object is gone; if it is there (a
    /// re-upload, or a versioned bucket's previous version made current again by deleting the
    /// current one), follows it instead: its variants are made current. `hop` as for
    /// `follow`.
    pub(super) async fn remove_variants(
        &self,
        event: &ObjectRemoved,
        delivery: Delivery,
        draining: &CancellationToken,
        hop: usize,
    ) -> Result<RecordOutcome> {
        let destination = self.destination.bucket_for(&event.bucket);
        let keys = self.pipeline.keys_for(&event.key);
        // Looked at before the source is: see the module docs.
        let seen = self.look_at_variants(&destination, &keys).await?;
        let head = self.store.head(&event.bucket, &event.key);
        if let Some(info) = telemetry::timed("head", head).await? {
            info!("the object is there (uploaded again, or an earlier version): following it");
            let current =
                ObjectCreated::new(&event.bucket, &event.key, Some(info.etag), Some(info.size));
            return Box::pin(self.follow(current, delivery, draining, hop + 1)).await;
        }
        let ours: Vec<(&String, &ObjectInfo)> = keys
            .iter()
            .zip(&seen)
            .filter_map(|(key, seen)| Some((key, seen.as_ref()?)))
            .filter(|(_, info)| {
                made_from_key(info, &event.key) && !made_after(info, event.sequencer.as_deref())
            })
            .collect();
        let source = SourceRef {
            version_id: event.version_id.clone(),
            ..SourceRef::new(&event.bucket, &event.key, None)
        };
        if ours.is_empty() {
            // Gone already (perhaps by a delivery before this one).
            self.announce_deleted(source, &destination, Vec::new(), &keys, &seen, delivery)
                .await?;
            return Ok(RecordOutcome::Ignored);
        }
        let deleted = self.delete_as_seen(&destination, &ours).await?;
        // For stores that ignore a conditional delete's condition: a re-upload whose job wrote
        // between the look and the delete lost its variants; render it again.
        if let Some(info) = self.store.head(&event.bucket, &event.key).await? {
            warn!("uploaded again while its variants were deleted: rendering it again");
            let again =
                ObjectCreated::new(&event.bucket, &event.key, Some(info.etag), Some(info.size));
            return Box::pin(self.follow(again, delivery, draining, hop + 1)).await;
        }
        info!(variants = deleted.len(), "variants deleted");
        self.announce_deleted(source, &destination, deleted, &keys, &seen, delivery)
            .await?;
        Ok(RecordOutcome::Deleted)
    }

    /// Tells the app that the `deleted` variants are gone. A redelivery that finds none of the
    /// variants left names them all: a delivery before it may have deleted them and then failed
    /// to tell the app (the event id is the same, so the app drops a repeat).
    async fn announce_deleted(
        &self,
        source: SourceRef,
        destination: &str,
        mut deleted: Vec<String>,
        keys: &[String],
        seen: &[Option<ObjectInfo>],
        delivery: Delivery,
    ) -> Result<()> {
        if deleted.is_empty() && delivery == Delivery::Repeat && seen.iter().all(Option::is_none) {
            deleted = keys.to_vec();
        }
        if deleted.is_empty() {
            return Ok(());
        }
        let deleted = Deleted::of_keys(source, destination, deleted);
        self.announce(AppEvent::Deleted(deleted)).await
    }

    /// The source is now `version` and it is not an image: deletes the variants that an
    /// earlier version of it left, and tells the app. The GET that fetched `version` came after
    /// `seen` was taken, so any variant still as seen is an earlier version's.
    pub(super) async fn remove_variants_of_other_versions(
        &self,
        event: &ObjectCreated,
        version: &SourceVersion,
        bucket: &str,
        keys: &[String],
        seen: &[Option<ObjectInfo>],
        delivery: Delivery,
    ) -> Result<()> {
        if !self.delete_variants {
            return Ok(());
        }
        let stale: Vec<(&String, &ObjectInfo)> = keys
            .iter()
            .zip(seen)
            .filter_map(|(key, seen)| Some((key, seen.as_ref()?)))
            .filter(|(_, info)| {
                made_from_key(info, &event.key)
                    && info.metadata.get(META_SOURCE_ETAG) != Some(&version.etag.to_string())
            })
            .collect();
        let deleted = self.delete_as_seen(bucket, &stale).await?;
        if !deleted.is_empty() {
            info!(
                variants = deleted.len(),
                "overwritten by something that is not an image: the earlier variants are deleted"
            );
        }
        let source = super::announce::source_of(event, version);
        self.announce_deleted(source, bucket, deleted, keys, seen, delivery)
            .await
    }

    /// Deletes each variant if it is still as seen; returns the keys deleted. A refused delete
    /// means another job rewrote the variant (it stays) or deleted it (and announces that).
    async fn delete_as_seen(
        &self,
        bucket: &str,
        variants: &[(&String, &ObjectInfo)],
    ) -> Result<Vec<String>> {
        let mut deleted = Vec::new();
        for (key, info) in variants {
            let condition = Condition::Matches(info.etag.clone());
            match self.store.delete(bucket, key, &condition).await? {
                Written::Done => {
                    metrics::counter!(catalogue::VARIANTS_DELETED.name).increment(1);
                    deleted.push(key.to_string());
                }
                Written::ConditionFailed => {
                    metrics::counter!(catalogue::WRITE_CONFLICTS.name).increment(1);
                    info!(variant = %key, "changed or deleted by another job since it was looked at: left to it");
                }
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequencers_compare_as_s3_documents() {
        assert_eq!(sequencer_order("0A", "0B"), Ordering::Less);
        // The shorter is padded on the right: "0A" is "0A00".
        assert_eq!(sequencer_order("0A", "0A00"), Ordering::Equal);
        assert_eq!(sequencer_order("0A01", "0A"), Ordering::Greater);
        assert_eq!(
            sequencer_order("0055AED6DCD90281E5", "0055AED6DCD90281E6"),
            Ordering::Less
        );
        assert_eq!(sequencer_order("ff", "0F"), Ordering::Greater);
    }
}
