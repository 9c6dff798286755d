//! Races and S3 behaviours around a job, on the in-memory store: a delete or a non-image
//! overwrite while an older job renders, one event for two quick writes, a `deleted` event
//! whose publish failed, a versioned bucket's current version deleted by id. In each the
//! variants must end as the object is now, and the app be told.

use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::common::fixture;
use resizeq::adapters::memory::MemoryStore;
use resizeq::adapters::memory_events::MemoryEvents;
use resizeq::config::Config;
use resizeq::error::{Error, ErrorKind};
use resizeq::event::{ObjectCreated, ObjectEvent, ObjectRemoved};
use resizeq::ports::{
    Condition, ETag, GetOutcome, ListPage, ListQuery, ObjectInfo, PutObject, Store, Written,
};
use resizeq::worker::processor::{Delivery, META_SOURCE_ETAG};
use resizeq::worker::{Processor, RecordOutcome};

type Hook = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// A store shared by several processors; `hook` runs once, just before the first PUT (the
/// moment an older job has fetched and rendered its version and is about to write).
struct Shared {
    inner: Arc<MemoryStore>,
    hook: Mutex<Option<Hook>>,
}

impl Shared {
    fn plain(inner: &Arc<MemoryStore>) -> Shared {
        Shared {
            inner: inner.clone(),
            hook: Mutex::new(None),
        }
    }
}

impl Store for Shared {
    async fn get(&self, b: &str, k: &str, m: Option<&ETag>) -> resizeq::Result<GetOutcome> {
        self.inner.get(b, k, m).await
    }
    async fn head(&self, b: &str, k: &str) -> resizeq::Result<Option<ObjectInfo>> {
        self.inner.head(b, k).await
    }
    async fn put(&self, object: PutObject) -> resizeq::Result<Written> {
        let hook = self.hook.lock().unwrap().take();
        if let Some(hook) = hook {
            hook().await;
        }
        self.inner.put(object).await
    }
    async fn delete(&self, b: &str, k: &str, c: &Condition) -> resizeq::Result<Written> {
        self.inner.delete(b, k, c).await
    }
    async fn list(&self, b: &str, q: ListQuery<'_>) -> resizeq::Result<ListPage> {
        self.inner.list(b, q).await
    }
}

async fn run(store: Shared, event: ObjectEvent) -> resizeq::Result<RecordOutcome> {
    let processor = Processor::new(&Config::default(), store).unwrap();
    processor
        .handle(&event, Delivery::First, &CancellationToken::new())
        .await
}

fn created(key: &str, etag: &ETag) -> ObjectEvent {
    ObjectEvent::Created(ObjectCreated::new("photos", key, Some(etag.clone()), None))
}

/// Job A renders the image; before it writes, `meanwhile` changes the source and runs that
/// change's own job to completion. Returns A's outcome and the store.
async fn older_job_writes_last(
    meanwhile: impl FnOnce(Arc<MemoryStore>) -> BoxFuture<'static, ()> + Send + 'static,
) -> (RecordOutcome, Arc<MemoryStore>) {
    let inner = Arc::new(MemoryStore::new());
    let a = inner.insert("photos", "cat.jpg", fixture("tiny.jpg"));
    let hooked = Shared {
        inner: inner.clone(),
        hook: Mutex::new(None),
    };
    let for_hook = inner.clone();
    *hooked.hook.lock().unwrap() = Some(Box::new(move || meanwhile(for_hook)));
    let outcome = run(hooked, created("cat.jpg", &a)).await.unwrap();
    (outcome, inner)
}

#[tokio::test]
async fn a_source_deleted_while_its_job_renders_leaves_no_variants() {
    let (outcome, store) = older_job_writes_last(|store| {
        Box::pin(async move {
            store.remove("photos", "cat.jpg");
            let removal = ObjectEvent::Removed(ObjectRemoved::new("photos", "cat.jpg"));
            // Nothing written yet: the removal finds no variants and is done.
            let removed = run(Shared::plain(&store), removal).await.unwrap();
            assert_eq!(removed, RecordOutcome::Ignored);
        })
    })
    .await;
    assert_eq!(outcome, RecordOutcome::Superseded, "A followed the source");
    assert_eq!(
        store.keys("photos-resized"),
        Vec::<String>::new(),
        "variants of a deleted photo outlive it; no event will ever remove them"
    );
}

#[tokio::test]
async fn a_non_image_overwrite_while_the_older_job_renders_leaves_no_variants() {
    let (outcome, store) = older_job_writes_last(|store| {
        Box::pin(async move {
            let text = store.insert("photos", "cat.jpg", fixture("text.txt"));
            let err = run(Shared::plain(&store), created("cat.jpg", &text))
                .await
                .unwrap_err();
            assert!(err.is_permanent(), "{err}");
        })
    })
    .await;
    assert_eq!(outcome, RecordOutcome::Superseded);
    assert_eq!(
        store.keys("photos-resized"),
        Vec::<String>::new(),
        "the image's variants stand for the text that replaced it"
    );
}

#[tokio::test]
async fn one_event_for_two_quick_writes_still_renders_the_current_version() {
    // S3: "If two writes are made to a single non-versioned object at the same time, it is
    // possible that only a single event notification will be sent."
    let store = Arc::new(MemoryStore::new());
    let first = store.insert("photos", "cat.jpg", fixture("tiny.jpg"));
    let second = store.insert("photos", "cat.jpg", fixture("small-60x40.jpg"));
    run(Shared::plain(&store), created("cat.jpg", &first))
        .await
        .unwrap();
    let variant = store.object("photos-resized", "80/cat.jpg.jpg");
    assert_eq!(
        variant.map(|(_, info)| info.metadata[META_SOURCE_ETAG].clone()),
        Some(second.to_string()),
        "the current version never gets variants"
    );
}

/// A processor that announces to memory, after it made (and announced) `cat.jpg`'s variants.
async fn cat_with_variants_announced(
    store: &Arc<MemoryStore>,
) -> (Processor<Shared>, Arc<MemoryEvents>) {
    let etag = store.insert("photos", "cat.jpg", fixture("tiny.jpg"));
    let events = Arc::new(MemoryEvents::new());
    let processor = Processor::new(&Config::default(), Shared::plain(store))
        .unwrap()
        .with_events(events.clone());
    processor
        .handle(
            &created("cat.jpg", &etag),
            Delivery::First,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    (processor, events)
}

#[tokio::test]
async fn a_deleted_event_whose_publish_failed_is_published_on_the_retry() {
    let store = Arc::new(MemoryStore::new());
    let (processor, events) = cat_with_variants_announced(&store).await;
    let go = CancellationToken::new();
    store.remove("photos", "cat.jpg");
    let removal = ObjectEvent::Removed(ObjectRemoved::new("photos", "cat.jpg"));
    *events.failure.lock().unwrap() = Some(Error::new(ErrorKind::Service, "target down"));
    let err = processor
        .handle(&removal, Delivery::First, &go)
        .await
        .unwrap_err();
    assert!(!err.is_permanent(), "retried: {err}");
    *events.failure.lock().unwrap() = None;
    let again = processor
        .handle(&removal, Delivery::Repeat, &go)
        .await
        .unwrap();
    assert_eq!(
        events.types(),
        ["resizeq.variants.ready", "resizeq.variants.deleted"],
        "retry outcome {again:?}: the deleted event is lost"
    );
}

/// The same for an overwrite with a non-image: its first delivery deletes the image's variants
/// and fails to publish `deleted`; the retry finds nothing left to delete and must still say so.
#[tokio::test]
async fn a_non_image_overwrites_deleted_event_whose_publish_failed_is_published_on_the_retry() {
    let store = Arc::new(MemoryStore::new());
    let (processor, events) = cat_with_variants_announced(&store).await;
    let go = CancellationToken::new();
    let text = store.insert("photos", "cat.jpg", fixture("text.txt"));
    let overwrite = created("cat.jpg", &text);
    *events.failure.lock().unwrap() = Some(Error::new(ErrorKind::Service, "target down"));
    let err = processor
        .handle(&overwrite, Delivery::First, &go)
        .await
        .unwrap_err();
    assert!(!err.is_permanent(), "retried: {err}");
    assert!(
        store.keys("photos-resized").is_empty(),
        "the variants went before the publish failed"
    );
    *events.failure.lock().unwrap() = None;
    let again = processor
        .handle(&overwrite, Delivery::Repeat, &go)
        .await
        .unwrap_err();
    assert!(again.is_permanent(), "not an image: {again}");
    assert_eq!(
        events.types(),
        [
            "resizeq.variants.ready",
            "resizeq.variants.deleted",
            "resizeq.variants.failed"
        ],
        "the deleted event is lost"
    );
}

#[tokio::test]
async fn removing_the_current_version_restores_the_previous_ones_variants() {
    // Versioned bucket: DELETE ?versionId=<current> makes the previous version current again
    // (no ObjectCreated event); its ObjectRemoved:Delete is the only event.
    let store = Arc::new(MemoryStore::new());
    let old = store.insert("photos", "cat.jpg", fixture("tiny.jpg"));
    run(Shared::plain(&store), created("cat.jpg", &old))
        .await
        .unwrap();
    let new = store.insert("photos", "cat.jpg", fixture("small-60x40.jpg"));
    run(Shared::plain(&store), created("cat.jpg", &new))
        .await
        .unwrap();
    // The new version is deleted by id: the old one is current again.
    assert_eq!(store.insert("photos", "cat.jpg", fixture("tiny.jpg")), old);
    let mut removal = ObjectRemoved::new("photos", "cat.jpg");
    removal.version_id = Some("v2".into());
    let outcome = run(Shared::plain(&store), ObjectEvent::Removed(removal))
        .await
        .unwrap();
    let variant = store.object("photos-resized", "80/cat.jpg.jpg").unwrap().1;
    assert_eq!(
        variant.metadata[META_SOURCE_ETAG],
        old.to_string(),
        "outcome {outcome:?}: the variants show the deleted version"
    );
}
