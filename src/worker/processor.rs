//! [`Processor`]: the queue-free job core. One typed object event in; its variants written
//! (or found current already), or a typed error that says whether a retry can help.
//!
//! Every way in hands it an [`ObjectCreated`]: the SQS path after parsing a message, local
//! mode from the folder it watches, `backfill --direct` from a listing. It owns the pipeline,
//! the store, the destination rules and the CPU and memory limits; it knows nothing of queues.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Config, DestinationConfig, Filters};
use crate::error::{Error, ErrorKind, Result};
use crate::event::{ObjectCreated, ObjectEvent, ObjectRemoved};
use crate::events::{AppEvent, Failed, Ready, SourceRef};
use crate::pipeline::{Output, Pipeline};
use crate::ports::{GetOutcome, ObjectInfo, Publish, Store};
use crate::telemetry::{self, catalogue};

mod announce;
mod versions;

pub use announce::{
    Delivery, META_AVERAGE_COLOR, META_SOURCE_FORMAT, META_SOURCE_HEIGHT, META_SOURCE_WIDTH,
    META_THUMBHASH,
};
use versions::SourceVersion;

/// S3 user metadata stored on every variant: what it was made from and with which config.
pub const META_SOURCE_KEY: &str = "resizeq-source-key";
pub const META_SOURCE_ETAG: &str = "resizeq-source-etag";
pub const META_CONFIG: &str = "resizeq-config";
/// The source version's S3 event sequencer and version id, when its event had them.
pub const META_SOURCE_SEQUENCER: &str = "resizeq-source-sequencer";
pub const META_SOURCE_VERSION: &str = "resizeq-source-version";
/// The variant's own pixel size, so that a HEAD answers what a page needs to lay it out.
pub const META_WIDTH: &str = "resizeq-width";
pub const META_HEIGHT: &str = "resizeq-height";

/// The longest encoded key stored as it is in variant metadata (see [`metadata_safe`]).
const MAX_METADATA_KEY: usize = 512;

/// How many times one job follows an object that keeps changing under it before it gives up
/// (a transient failure: the message is retried).
const FOLLOW_LIMIT: usize = 4;

/// How one attempt at a version's variants ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    Done(RecordOutcome),
    /// The object is no longer that version (overwritten or deleted).
    Moved,
}

/// What happened to one object event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RecordOutcome {
    /// Filtered out, an event on a destination bucket, a folder marker, or a removal with no
    /// variants to remove.
    Ignored,
    /// Every variant already current (same source ETag and config): nothing written.
    Skipped,
    /// The object was overwritten, deleted or re-uploaded after this event: the newer event
    /// does the work.
    Superseded,
    /// The source is gone and so are the variants made from it.
    Deleted,
    /// Every variant written.
    Processed,
}

impl RecordOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordOutcome::Processed => "processed",
            RecordOutcome::Deleted => "deleted",
            RecordOutcome::Skipped => "skipped",
            RecordOutcome::Superseded => "superseded",
            RecordOutcome::Ignored => "ignored",
        }
    }
}

/// The job core, shared by all jobs of a process.
pub struct Processor<S> {
    store: S,
    pipeline: Arc<Pipeline>,
    destination: DestinationConfig,
    filters: Filters,
    delete_variants: bool,
    cpu: Arc<Semaphore>,
    memory_budget: Arc<Semaphore>,
    memory_budget_mib: u32,
    /// Where the events for the application go; `None`: nobody is told.
    events: Option<Arc<dyn Publish>>,
}

impl<S: Store> Processor<S> {
    pub fn new(config: &Config, store: S) -> Result<Processor<S>> {
        let pipeline = Pipeline::new(config.pipeline_settings())?;
        let cpus = match config.worker.cpu_workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let memory_budget_mib = config.worker.memory_budget_mib.min(u32::MAX as u64 / 2) as u32;
        Ok(Processor {
            store,
            pipeline: Arc::new(pipeline),
            destination: config.destination.clone(),
            filters: config.filters.clone(),
            delete_variants: config.lifecycle.delete_variants,
            cpu: Arc::new(Semaphore::new(cpus)),
            memory_budget: Arc::new(Semaphore::new(memory_budget_mib as usize)),
            memory_budget_mib,
            events: None,
        })
    }

    /// Publishes the events for the application to `events`.
    pub fn with_events(mut self, events: Arc<dyn Publish>) -> Self {
        self.events = Some(events);
        self
    }

    pub fn events(&self) -> Option<&Arc<dyn Publish>> {
        self.events.as_ref()
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store back, for a caller that is done with this processor.
    pub fn into_store(self) -> S {
        self.store
    }

    /// The CPU pool: one permit per pipeline run at a time.
    pub fn cpu(&self) -> &Semaphore {
        &self.cpu
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Brings the variants of the event's object in line with the object as it is now:
    /// written for a created object, deleted for a removed one, and tells the application
    /// (`announce`). `draining` cancels work that has not started yet (an
    /// [`ErrorKind::Cancelled`] error: give the event back, not failed). Errors carry
    /// `s3://bucket/key` as context.
    pub async fn handle(
        &self,
        event: &ObjectEvent,
        delivery: Delivery,
        draining: &CancellationToken,
    ) -> Result<RecordOutcome> {
        match event {
            ObjectEvent::Created(created) => self.handle_created(created, delivery, draining).await,
            ObjectEvent::Removed(removed) => self
                .removed(removed, delivery, draining)
                .await
                .map_err(|e| e.context(format!("s3://{}/{}", removed.bucket, removed.key))),
        }
    }

    /// [`Processor::handle`] for a created object. A permanent failure is announced as
    /// `failed` (the version will never have variants).
    pub async fn handle_created(
        &self,
        event: &ObjectCreated,
        delivery: Delivery,
        draining: &CancellationToken,
    ) -> Result<RecordOutcome> {
        let outcome = match self.created(event, delivery, draining).await {
            Err(e) if e.is_permanent() => {
                let failed = Failed::from_error(SourceRef::from_event(event), &e);
                // Not announced: the job is retried (and fails the same way) until it is.
                self.announce(AppEvent::Failed(failed)).await?;
                Err(e)
            }
            other => other,
        };
        outcome.map_err(|e| e.context(format!("s3://{}/{}", event.bucket, event.key)))
    }

    /// Whether events about this object are none of our business.
    fn ignores(&self, bucket: &str, key: &str, size: Option<u64>) -> bool {
        // Our own outputs: processing them would loop forever.
        self.destination.is_destination_bucket(bucket)
            || !self.filters.accepts(key)
            // A folder marker (what a console's "Create folder" makes): not an image.
            || (key.ends_with('/') && size.unwrap_or(0) == 0)
    }

    /// A created object: its variants written, or found current. If the object has moved on
    /// since the event (overwritten, deleted), the variants are brought in line with the
    /// object as it is now rather than left to the newer event: S3 may send one event for two
    /// quick writes, and a delete or a non-image writes no variants that would replace ours.
    async fn created(
        &self,
        event: &ObjectCreated,
        delivery: Delivery,
        draining: &CancellationToken,
    ) -> Result<RecordOutcome> {
        if self.ignores(&event.bucket, &event.key, event.size) {
            return Ok(RecordOutcome::Ignored);
        }
        self.follow(event.clone(), delivery, draining, 0).await
    }

    /// Works for `event`'s version; if the object moved on, for the object as it is now, up
    /// to [`FOLLOW_LIMIT`] times. `hop` > 0: this version was not the event's, so its own
    /// outcome is `Superseded` and a permanent failure of it is announced, not returned (its
    /// own event, if there is one, dead-letters it).
    async fn follow(
        &self,
        mut current: ObjectCreated,
        delivery: Delivery,
        draining: &CancellationToken,
        mut hop: usize,
    ) -> Result<RecordOutcome> {
        while hop <= FOLLOW_LIMIT {
            match self.render_version(&current, delivery, draining).await {
                Ok(Attempt::Done(outcome)) if hop == 0 => return Ok(outcome),
                Ok(Attempt::Done(_)) => return Ok(RecordOutcome::Superseded),
                Ok(Attempt::Moved) => {}
                Err(e) if hop > 0 && e.is_permanent() => {
                    let failed = Failed::from_error(SourceRef::from_event(&current), &e);
                    self.announce(AppEvent::Failed(failed)).await?;
                    return Ok(RecordOutcome::Superseded);
                }
                Err(e) => return Err(e),
            }
            hop += 1;
            let head = self.store.head(&current.bucket, &current.key);
            match telemetry::timed("head", head).await? {
                Some(info) => {
                    info!("the object changed since the event: following it");
                    current = ObjectCreated::new(
                        &current.bucket,
                        &current.key,
                        Some(info.etag),
                        Some(info.size),
                    );
                }
                None => {
                    info!("the object was deleted since the event: removing its variants");
                    let gone = ObjectRemoved::new(&current.bucket, &current.key);
                    Box::pin(self.remove_variants(&gone, delivery, draining, hop)).await?;
                    return Ok(RecordOutcome::Superseded);
                }
            }
        }
        Err(Error::new(
            ErrorKind::Service,
            format!("the object kept changing while its variants were made ({FOLLOW_LIMIT} times)"),
        ))
    }

    /// One attempt at the variants of `event`'s version (its ETag, or the current one).
    async fn render_version(
        &self,
        event: &ObjectCreated,
        delivery: Delivery,
        draining: &CancellationToken,
    ) -> Result<Attempt> {
        let destination = self.destination.bucket_for(&event.bucket);
        let keys = self.pipeline.keys_for(&event.key);
        // Looked at before the source is read: see `versions` for why the order matters.
        let seen = self.look_at_variants(&destination, &keys).await?;
        // The version to render: the event's, whose variants may be current already (no read
        // at all), or, for events without an ETag (local mode, hand-made), the one the GET
        // finds (one read: it tells the ETag and brings the bytes).
        let known = event
            .etag
            .as_ref()
            .map(|etag| SourceVersion::of(event, etag));
        if let Some(version) = &known {
            if let Some(done) = self
                .done_already(event, version, &destination, &keys, &seen, delivery)
                .await?
            {
                return Ok(Attempt::Done(done));
            }
        }
        let get = self
            .store
            .get(&event.bucket, &event.key, event.etag.as_ref());
        let (bytes, info) = match telemetry::timed("get", get).await? {
            GetOutcome::Found { bytes, info } => (bytes, info),
            GetOutcome::Changed | GetOutcome::NotFound => return Ok(Attempt::Moved),
        };
        let version = match known {
            Some(version) => version,
            None => {
                let version = SourceVersion::of(event, &info.etag);
                if let Some(done) = self
                    .done_already(event, &version, &destination, &keys, &seen, delivery)
                    .await?
                {
                    return Ok(Attempt::Done(done));
                }
                version
            }
        };

        let source_bytes = bytes.len();
        let output = match self.run_pipeline(bytes, keys.clone(), draining).await {
            Ok(output) => output,
            Err(e) if e.is_permanent() => {
                // This version is not an image: the variants of an older one must not go on
                // standing for it.
                self.remove_variants_of_other_versions(
                    event,
                    &version,
                    &destination,
                    &keys,
                    &seen,
                    delivery,
                )
                .await?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        record_pipeline(&output, source_bytes);

        let source = announce::source_of(event, &version);
        let ready = Ready::from_output(source, &output, &destination);
        let extra = announce::source_metadata(&output);
        let written = self
            .write_variants(event, &version, &destination, output.variants, extra, seen)
            .await?;
        if written == Attempt::Moved {
            return Ok(Attempt::Moved);
        }
        if let Some(latency) = event.event_time.as_deref().and_then(since_event) {
            metrics::histogram!(catalogue::EVENT_TO_VARIANTS.name).record(latency.as_secs_f64());
        }
        info!(variants = keys.len(), "variants written");
        self.announce(AppEvent::Ready(ready)).await?;
        Ok(Attempt::Done(RecordOutcome::Processed))
    }

    /// The outcome without rendering, if the variants seen need no work: all made from
    /// `version` (re-announced on a redelivery), or a newer version's already.
    async fn done_already(
        &self,
        event: &ObjectCreated,
        version: &SourceVersion,
        destination: &str,
        keys: &[String],
        seen: &[Option<ObjectInfo>],
        delivery: Delivery,
    ) -> Result<Option<RecordOutcome>> {
        if seen.iter().all(|s| self.made_from(s, version)) {
            info!("variants already current");
            if delivery == Delivery::Repeat {
                self.announce_again(event, version, destination, keys, seen)
                    .await?;
            }
            return Ok(Some(RecordOutcome::Skipped));
        }
        if self.newer_version_seen(&event.key, seen, version) {
            info!("a newer version's variants are there already");
            return Ok(Some(RecordOutcome::Superseded));
        }
        Ok(None)
    }

    /// Each variant's HEAD (`None`: not there), timed as the `head` stage.
    async fn look_at_variants(
        &self,
        bucket: &str,
        keys: &[String],
    ) -> Result<Vec<Option<ObjectInfo>>> {
        let heads = async {
            let mut seen = Vec::with_capacity(keys.len());
            for key in keys {
                seen.push(self.store.head(bucket, key).await?);
            }
            Ok(seen)
        };
        telemetry::timed("head", heads).await
    }

    /// Whether a variant as seen was made from this version with this config.
    fn made_from(&self, seen: &Option<ObjectInfo>, version: &SourceVersion) -> bool {
        seen.as_ref().is_some_and(|info| {
            info.metadata
                .get(META_SOURCE_ETAG)
                .is_some_and(|e| *version.etag == *e)
                && info.metadata.get(META_CONFIG).map(String::as_str)
                    == Some(self.pipeline.fingerprint())
        })
    }

    /// Runs the pipeline off the async threads, within the CPU pool and the memory budget.
    async fn run_pipeline(
        &self,
        bytes: Vec<u8>,
        keys: Vec<String>,
        draining: &CancellationToken,
    ) -> Result<Output> {
        // One header read: it sizes the memory reservation and is decoded from. A probe error
        // (not an image, over a limit) costs one permit and is returned from the blocking task.
        let probe = self.pipeline.probe(&bytes);
        let cost = memory_permits(
            self.memory_budget_mib,
            probe.as_ref().map_or(0, |p| p.decode_bytes()),
        );
        // Owned permits, moved into the blocking task below: a job stopped at its deadline
        // drops this future, but the decode goes on until it ends, and must go on counting
        // against the CPU pool and the memory budget until then.
        let memory = self
            .memory_budget
            .clone()
            .acquire_many_owned(cost)
            .await
            .map_err(|_| Error::io("memory budget closed"))?;
        let in_use = MemoryInUse::reserve(cost);
        // Waiting for the CPU is not started work: on shutdown, give the event back instead.
        // Biased: a free CPU slot wins over a drain that began meanwhile (the object is
        // fetched; finishing beats fetching it again), where a random pick would release half
        // the time.
        let waiting = GaugeWhile::increment(catalogue::JOBS_WAITING_FOR_CPU.name);
        let cpu_permit = tokio::select! {
            biased;
            permit = self.cpu.clone().acquire_owned() => permit.map_err(|_| Error::io("cpu pool closed"))?,
            _ = draining.cancelled() => return Err(Error::new(ErrorKind::Cancelled, "shutting down")),
        };
        drop(waiting);
        let pipeline = self.pipeline.clone();
        // The stage spans inside the pipeline become children of this job's span.
        let span = tracing::Span::current();
        let result = tokio::task::spawn_blocking(move || {
            let _held = (memory, in_use, cpu_permit);
            let cpu = ThreadCpuTime::start();
            let output =
                span.in_scope(|| probe.and_then(|p| pipeline.process_probed(&bytes, p, keys)));
            metrics::histogram!(catalogue::PIPELINE_CPU.name).record(cpu.elapsed().as_secs_f64());
            output
        })
        .await;
        match result {
            Ok(output) => output,
            Err(join) if join.is_panic() => {
                warn!("pipeline panicked");
                Err(Error::new(
                    ErrorKind::Panic,
                    "the image pipeline panicked on this input",
                ))
            }
            Err(join) => Err(Error::io(format!("pipeline task failed: {join}"))),
        }
    }
}

/// Stage durations and source size of one pipeline run.
fn record_pipeline(output: &Output, source_bytes: usize) {
    telemetry::record_stage("decode", output.timings.decode);
    telemetry::record_stage("resize", output.timings.resize);
    telemetry::record_stage("encode", output.timings.encode);
    let format = output.format.as_str();
    metrics::histogram!(catalogue::SOURCE_BYTES.name, "format" => format)
        .record(source_bytes as f64);
    let pixels = output.source_width as f64 * output.source_height as f64;
    metrics::histogram!(catalogue::SOURCE_PIXELS.name, "format" => format).record(pixels);
}

/// Time since an S3 `eventTime` (RFC 3339), if it parses and is in the past.
fn since_event(event_time: &str) -> Option<std::time::Duration> {
    let at = humantime::parse_rfc3339_weak(event_time.trim_end_matches('Z')).ok()?;
    std::time::SystemTime::now().duration_since(at).ok()
}

/// S3 user metadata must be printable ASCII; other keys are stored percent-encoded. S3 allows
/// 2 KB of user metadata in all, and a 1,024-byte key can take three times that encoded: past
/// [`MAX_METADATA_KEY`] bytes the key is stored as its SHA-256 (compared the same way).
pub(super) fn metadata_safe(key: &str) -> String {
    let encoded = super::metadata_value::metadata_value(key);
    if encoded.len() <= MAX_METADATA_KEY {
        return encoded;
    }
    use sha2::Digest;
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(key.as_bytes()))
    )
}

/// A gauge one higher for as long as this lives (also when the job is cancelled).
struct GaugeWhile(&'static str);

impl GaugeWhile {
    fn increment(name: &'static str) -> GaugeWhile {
        metrics::gauge!(name).increment(1.0);
        GaugeWhile(name)
    }
}

impl Drop for GaugeWhile {
    fn drop(&mut self) {
        metrics::gauge!(self.0).decrement(1.0);
    }
}

/// `resizeq_memory_budget_bytes_in_use` for as long as a job holds its reservation.
struct MemoryInUse(f64);

impl MemoryInUse {
    fn reserve(mib: u32) -> MemoryInUse {
        let bytes = mib as f64 * (1 << 20) as f64;
        metrics::gauge!(catalogue::MEMORY_IN_USE.name).increment(bytes);
        MemoryInUse(bytes)
    }
}

impl Drop for MemoryInUse {
    fn drop(&mut self) {
        metrics::gauge!(catalogue::MEMORY_IN_USE.name).decrement(self.0);
    }
}

/// CPU time of the calling thread: what the pipeline itself costs, apart from waiting.
struct ThreadCpuTime(std::time::Duration);

impl ThreadCpuTime {
    fn now() -> std::time::Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec into the valid pointer we pass.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    fn start() -> ThreadCpuTime {
        ThreadCpuTime(Self::now())
    }

    fn elapsed(&self) -> std::time::Duration {
        Self::now().saturating_sub(self.0)
    }
}

/// One permit is one MiB of estimated decode memory; a job bigger than the whole budget
/// takes all of it and runs alone rather than never.
fn memory_permits(budget_mib: u32, bytes: u64) -> u32 {
    bytes.div_ceil(1 << 20).clamp(1, budget_mib as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_keeps_short_keys_and_a_digest_of_long_ones() {
        assert_eq!(metadata_safe("photos/cat.jpg"), "photos/cat.jpg");
        // 300 CJK characters: 900 UTF-8 bytes, 2,700 percent-encoded; S3 allows 2 KB in all.
        let long = "猫".repeat(300);
        let stored = metadata_safe(&long);
        assert!(
            stored.starts_with("sha256:") && stored.len() == 7 + 64,
            "{stored}"
        );
        assert_eq!(stored, metadata_safe(&long), "compared the same way");
        assert_ne!(stored, metadata_safe(&"犬".repeat(300)));
    }
}
