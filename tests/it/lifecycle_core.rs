//! Variants follow their source, against the in-memory queue and store: newest version wins
//! when a newer job overtakes an older one, removals delete what was made from the removed
//! object (and nothing newer), a non-image overwrite takes the old variants away, every record
//! of a message is tried, folder markers are ignored. The same behaviours against moto and the
//! real binary are in `lifecycle_e2e`.

use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

use crate::common::fixture;
use crate::worker_core::{context, drain, stat};
use resizeq::adapters::memory::MemoryStore;
use resizeq::config::Config;
use resizeq::event::{s3_notification, s3_removed_notification, ObjectCreated, ObjectEvent};
use resizeq::ports::{
    Condition, ETag, GetOutcome, ListPage, ListQuery, ObjectInfo, PutObject, Store, Written,
};
use resizeq::worker::processor::{Delivery, META_SOURCE_ETAG};
use resizeq::worker::{Processor, RecordOutcome};

const SMALL: &str = "80/cat.jpg.jpg";
const LARGE: &str = "500/cat.jpg.jpg";

/// A created event with a sequencer, as real S3 sends (moto sends none).
fn created_with_sequencer(key: &str, etag: &str, sequencer: &str) -> String {
    serde_json::json!({"Records": [{"eventName": "ObjectCreated:Put", "s3": {
        "bucket": {"name": "photos"},
        "object": {"key": key, "eTag": etag, "sequencer": sequencer}}}]})
    .to_string()
}

/// What the processor makes of a created object, delivered for the first time.
async fn created_now<S: Store>(processor: &Processor<S>, event: ObjectCreated) -> RecordOutcome {
    processor
        .handle(
            &ObjectEvent::Created(event),
            Delivery::First,
            &CancellationToken::new(),
        )
        .await
        .unwrap()
}

fn source_etag_of(store: &MemoryStore, key: &str) -> Option<String> {
    store
        .object("photos-resized", key)
        .map(|(_, info)| info.metadata[META_SOURCE_ETAG].clone())
}

/// A store where another job "finishes first": just before this job's first variant PUT, the
/// source is overwritten and the newer version's variants are written (what a job for the
/// newer upload does while the older job's GET answer is still on its way).
struct Overtaken {
    inner: MemoryStore,
    newer: Mutex<Option<(Vec<u8>, Vec<PutObject>)>>,
}

impl Store for Overtaken {
    async fn get(
        &self,
        bucket: &str,
        key: &str,
        if_match: Option<&ETag>,
    ) -> resizeq::Result<GetOutcome> {
        self.inner.get(bucket, key, if_match).await
    }

    async fn head(&self, bucket: &str, key: &str) -> resizeq::Result<Option<ObjectInfo>> {
        self.inner.head(bucket, key).await
    }

    async fn put(&self, object: PutObject) -> resizeq::Result<Written> {
        let newer = self.newer.lock().unwrap().take();
        if let Some((source, variants)) = newer {
            self.inner.insert("photos", "cat.jpg", source);
            for variant in variants {
                assert_eq!(self.inner.put(variant).await?, Written::Done);
            }
        }
        self.inner.put(object).await
    }

    async fn delete(
        &self,
        bucket: &str,
        key: &str,
        condition: &Condition,
    ) -> resizeq::Result<Written> {
        self.inner.delete(bucket, key, condition).await
    }

    async fn list(&self, bucket: &str, query: ListQuery<'_>) -> resizeq::Result<ListPage> {
        self.inner.list(bucket, query).await
    }
}

#[tokio::test]
async fn an_older_job_that_finishes_last_does_not_overwrite_the_newer_variants() {
    // The newer version's variants, as its own job wrote them.
    let blue = fixture("small-60x40.jpg");
    let blue_etag = ETag::of_bytes(&blue);
    let rendered = {
        let processor = Processor::new(&Config::default(), MemoryStore::new()).unwrap();
        processor.store().insert("photos", "cat.jpg", blue.clone());
        let event = ObjectCreated::new("photos", "cat.jpg", Some(blue_etag.clone()), None);
        let outcome = created_now(&processor, event).await;
        assert_eq!(outcome, RecordOutcome::Processed);
        [SMALL, LARGE].map(|key| {
            let (bytes, info) = processor.store().object("photos-resized", key).unwrap();
            PutObject {
                bucket: "photos-resized".into(),
                key: key.into(),
                bytes,
                content_type: "image/jpeg".into(),
                cache_control: None,
                metadata: info.metadata,
                condition: Condition::Any,
            }
        })
    };
    let store = Overtaken {
        inner: MemoryStore::new(),
        newer: Mutex::new(Some((blue, rendered.to_vec()))),
    };
    let red = store.inner.insert("photos", "cat.jpg", fixture("tiny.jpg"));
    let processor = Processor::new(&Config::default(), store).unwrap();
    let event = ObjectCreated::new("photos", "cat.jpg", Some(red), None);
    let outcome = created_now(&processor, event).await;

    assert_eq!(outcome, RecordOutcome::Superseded);
    let store = processor.into_store().inner;
    for (key, newer) in [SMALL, LARGE].iter().zip(&rendered) {
        let (bytes, info) = store.object("photos-resized", key).unwrap();
        assert_eq!(
            info.metadata[META_SOURCE_ETAG],
            blue_etag.to_string(),
            "{key}"
        );
        assert_eq!(bytes, newer.bytes, "{key}: the newer version's bytes");
    }
}

#[tokio::test(start_paused = true)]
async fn a_removed_source_takes_its_variants_with_it() {
    let ctx = context(true, |_| {});
    let etag = ctx.store().insert("photos", "cat.jpg", fixture("tiny.jpg"));
    ctx.queue
        .send(s3_notification("photos", "cat.jpg", Some(&etag), None));
    // A variant of another source at a key of this one's is not this one's to delete.
    ctx.store()
        .insert("photos-resized", "80/other.jpg.jpg", b"x".to_vec());
    drain(&ctx).await;
    assert_eq!(ctx.store().keys("photos-resized").len(), 3);

    ctx.store().remove("photos", "cat.jpg");
    ctx.queue
        .send(s3_removed_notification("photos", "cat.jpg", None));
    drain(&ctx).await;
    assert_eq!(stat(&ctx, "deleted"), 1);
    assert_eq!(ctx.store().keys("photos-resized"), ["80/other.jpg.jpg"]);

    // A removal of an object that never had variants, or of one whose variants are gone.
    ctx.queue
        .send(s3_removed_notification("photos", "cat.jpg", None));
    ctx.queue
        .send(s3_removed_notification("photos", "never.jpg", None));
    drain(&ctx).await;
    assert_eq!(stat(&ctx, "ignored"), 2);
    assert!(ctx.queue.dead_letters().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_removal_delivered_after_a_re_upload_keeps_the_re_uploads_variants() {
    let ctx = context(true, |_| {});
    let first = ctx.store().insert("photos", "cat.jpg", fixture("tiny.jpg"));
    ctx.queue
        .send(s3_notification("photos", "cat.jpg", Some(&first), None));
    drain(&ctx).await;
    // Deleted, then uploaded again; the re-upload's event is handled before the removal's.
    ctx.store().remove("photos", "cat.jpg");
    let second = ctx
        .store()
        .insert("photos", "cat.jpg", fixture("small-60x40.jpg"));
    ctx.queue
        .send(s3_notification("photos", "cat.jpg", Some(&second), None));
    drain(&ctx).await;
    ctx.queue
        .send(s3_removed_notification("photos", "cat.jpg", None));
    drain(&ctx).await;
    assert_eq!(
        stat(&ctx, "superseded"),
        1,
        "the late removal stepped aside"
    );
    assert_eq!(stat(&ctx, "deleted"), 0);
    for key in [SMALL, LARGE] {
        assert_eq!(
            source_etag_of(ctx.store(), key).as_deref(),
            Some(second.as_str())
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_removal_older_than_the_variants_by_sequencer_keeps_them() {
    // upload (0A), delete (0B), upload again (0C), delete again (0D): the variants of 0C are
    // there when the removal 0B arrives late, and the source is gone by then.
    let ctx = context(true, |_| {});
    let etag = ctx.store().insert("photos", "cat.jpg", fixture("tiny.jpg"));
    ctx.queue
        .send(created_with_sequencer("cat.jpg", &etag, "0C"));
    drain(&ctx).await;
    ctx.store().remove("photos", "cat.jpg");
    ctx.queue
        .send(s3_removed_notification("photos", "cat.jpg", Some("0B")));
    drain(&ctx).await;
    assert_eq!(stat(&ctx, "deleted"), 0);
    assert_eq!(
        ctx.store().keys("photos-resized").len(),
        2,
        "kept: made after 0B"
    );
    ctx.queue
        .send(s3_removed_notification("photos", "cat.jpg", Some("0D")));
    drain(&ctx).await;
    assert_eq!(stat(&ctx, "deleted"), 1);
    assert!(ctx.store().keys("photos-resized").is_empty());
}

#[tokio::test(start_paused = true)]
async fn removals_can_be_turned_off() {
    let ctx = context(true, |c| c.lifecycle.delete_variants = false);
    let etag = ctx.store().insert("photos", "cat.jpg", fixture("tiny.jpg"));
    ctx.queue
        .send(s3_notification("photos", "cat.jpg", Some(&etag), None));
    drain(&ctx).await;
    ctx.store().remove("photos", "cat.jpg");
    ctx.queue
        .send(s3_removed_notification("photos", "cat.jpg", None));
    drain(&ctx).await;
    assert_eq!(stat(&ctx, "ignored"), 1);
    assert_eq!(ctx.store().keys("photos-resized").len(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_overwrite_with_a_non_image_removes_the_old_variants() {
    let ctx = context(true, |_| {});
    let image = ctx.store().insert("photos", "cat.jpg", fixture("tiny.jpg"));
    ctx.queue
        .send(s3_notification("photos", "cat.jpg", Some(&image), None));
    drain(&ctx).await;
    assert_eq!(ctx.store().keys("photos-resized").len(), 2);
    let text = ctx.store().insert("photos", "cat.jpg", fixture("text.txt"));
    ctx.queue
        .send(s3_notification("photos", "cat.jpg", Some(&text), None));
    drain(&ctx).await;
    let dead = ctx.queue.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].1.error_kind, "unsupported");
    assert!(
        ctx.store().keys("photos-resized").is_empty(),
        "the image's variants do not stand for the text"
    );
}

#[tokio::test(start_paused = true)]
async fn every_record_of_a_message_is_tried_and_the_failed_ones_are_named() {
    let ctx = context(true, |_| {});
    let one = ctx.store().insert("photos", "one.jpg", fixture("tiny.jpg"));
    let bad = ctx.store().insert("photos", "bad.jpg", fixture("text.txt"));
    let cut = ctx
        .store()
        .insert("photos", "cut.jpg", fixture("truncated.jpg"));
    let two = ctx.store().insert("photos", "two.jpg", fixture("tiny.png"));
    let record = |key: &str, etag: &str| {
        serde_json::json!({"eventName": "ObjectCreated:Put", "s3": {
            "bucket": {"name": "photos"}, "object": {"key": key, "eTag": etag}}})
    };
    let body = serde_json::json!({"Records": [
        record("one.jpg", &one),
        record("bad.jpg", &bad),
        {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "photos"}}},
        record("cut.jpg", &cut),
        record("two.jpg", &two),
    ]})
    .to_string();
    ctx.queue.send(body.clone());
    drain(&ctx).await;

    let written = ctx.store().keys("photos-resized");
    assert_eq!(
        written,
        [
            "500/one.jpg.jpg",
            "500/two.jpg.jpg",
            "80/one.jpg.jpg",
            "80/two.jpg.jpg"
        ]
    );
    let dead = ctx.queue.dead_letters();
    assert_eq!(dead.len(), 1);
    let reason = &dead[0].1.error_reason;
    assert!(reason.starts_with("3 records failed"), "{reason}");
    for named in ["s3://photos/bad.jpg", "Records[2]", "s3://photos/cut.jpg"] {
        assert!(reason.contains(named), "{named} not in {reason}");
    }
    assert!(
        !reason.contains("one.jpg") && !reason.contains("two.jpg"),
        "{reason}"
    );

    // Replayed: the records that succeeded are not redone.
    let puts = ctx.store().puts();
    ctx.queue.send(body);
    drain(&ctx).await;
    assert_eq!(ctx.store().puts(), puts, "nothing written again");
    assert_eq!(ctx.queue.dead_letters().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn folder_markers_are_ignored() {
    let ctx = context(true, |_| {});
    let etag = ctx.store().insert("photos", "albums/2024/", Vec::new());
    ctx.queue.send(s3_notification(
        "photos",
        "albums/2024/",
        Some(&etag),
        Some(0),
    ));
    ctx.queue
        .send(s3_removed_notification("photos", "albums/2024/", None));
    drain(&ctx).await;
    assert_eq!(stat(&ctx, "ignored"), 2);
    assert!(ctx.queue.dead_letters().is_empty());
    assert!(ctx.store().keys("photos-resized").is_empty());
}
