//! [`Processor`]: the queue-free job core. One typed object event in; its variants written
//! (or found current already), or a typed error that says whether a retry can help.
//!
//! Every way in hands it an [`ObjectCreated`]: the SQS path after parsing a message, local
//! mode from the folder it watches, `backfill --direct` from a listing. It owns the pipeline,
//! the store, the destination rules and the CPU and memory limits; it knows nothing of queues.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Config, DestinationConfig, Filters};
use crate::error::{Error, ErrorKind, Result};
use crate::event::ObjectCreated;
use crate::pipeline::{Output, Pipeline};
use crate::ports::{ETag, GetOutcome, PutObject, Store};
use crate::telemetry::{self, catalogue};

/// S3 user metadata stored on every variant: what it was made from and with which config.
pub const META_SOURCE_KEY: &str = "resizeq-source-key";
pub const META_SOURCE_ETAG: &str = "resizeq-source-etag";
pub const META_CONFIG: &str = "resizeq-config";

/// What happened to one created object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RecordOutcome {
    /// Filtered out, or an event on a destination bucket.
    Ignored,
    /// Every variant already current (same source ETag and config): nothing written.
    Skipped,
    /// The object was overwritten or deleted after this event: the newer event does the work.
    Superseded,
    /// Every variant written.
    Processed,
}

impl RecordOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordOutcome::Processed => "processed",
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
    cpu: Semaphore,
    memory_budget: Semaphore,
    memory_budget_mib: u32,
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
            cpu: Semaphore::new(cpus),
            memory_budget: Semaphore::new(memory_budget_mib as usize),
            memory_budget_mib,
        })
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

    /// Brings the variants of `event`'s object up to date. `draining` cancels work that has
    /// not started yet (an [`ErrorKind::Cancelled`] error: give the event back, not failed).
    /// Errors carry `s3://bucket/key` as context.
    pub async fn handle(
        &self,
        event: &ObjectCreated,
        draining: &CancellationToken,
    ) -> Result<RecordOutcome> {
        self.variants_of(event, draining)
            .await
            .map_err(|e| e.context(format!("s3://{}/{}", event.bucket, event.key)))
    }

    async fn variants_of(
        &self,
        event: &ObjectCreated,
        draining: &CancellationToken,
    ) -> Result<RecordOutcome> {
        if self.destination.is_destination_bucket(&event.bucket) {
            // Our own outputs: processing them would loop forever.
            return Ok(RecordOutcome::Ignored);
        }
        if !self.filters.accepts(&event.key) {
            return Ok(RecordOutcome::Ignored);
        }
        let destination = self.destination.bucket_for(&event.bucket);
        let keys = self.pipeline.keys_for(&event.key);
        let fingerprint = self.pipeline.fingerprint();

        // With the event's ETag, a HEAD of each variant can skip the GET. Without one (local
        // mode, hand-made events) the GET itself tells the ETag: one read of the object.
        if let Some(etag) = &event.etag {
            if self.variants_current(&destination, &keys, etag).await? {
                return Ok(RecordOutcome::Skipped);
            }
        }
        let get = self
            .store
            .get(&event.bucket, &event.key, event.etag.as_ref());
        let (bytes, source_etag) = match telemetry::timed("get", get).await? {
            GetOutcome::Found { bytes, info } => (bytes, info.etag),
            GetOutcome::Changed | GetOutcome::NotFound => {
                info!("object changed or deleted since the event");
                return Ok(RecordOutcome::Superseded);
            }
        };
        if event.etag.is_none()
            && self
                .variants_current(&destination, &keys, &source_etag)
                .await?
        {
            return Ok(RecordOutcome::Skipped);
        }

        let source_bytes = bytes.len();
        let output = self.run_pipeline(bytes, keys.clone(), draining).await?;
        record_pipeline(&output, source_bytes);

        let metadata = HashMap::from([
            (META_SOURCE_KEY.to_string(), metadata_safe(&event.key)),
            (META_SOURCE_ETAG.to_string(), source_etag.to_string()),
            (META_CONFIG.to_string(), fingerprint.to_string()),
        ]);
        for variant in output.variants {
            let written = variant.bytes.len() as u64;
            let put = self.store.put(PutObject {
                bucket: destination.clone(),
                content_type: variant.content_type().to_string(),
                key: variant.key,
                bytes: variant.bytes,
                cache_control: self.destination.cache_control.clone(),
                metadata: metadata.clone(),
            });
            telemetry::timed("put", put).await?;
            metrics::counter!(catalogue::OUTPUT_BYTES.name, "variant" => variant.name.clone())
                .increment(written);
            metrics::counter!(catalogue::VARIANTS_WRITTEN.name, "variant" => variant.name)
                .increment(1);
        }
        if let Some(latency) = event.event_time.as_deref().and_then(since_event) {
            metrics::histogram!(catalogue::EVENT_TO_VARIANTS.name).record(latency.as_secs_f64());
        }
        info!(variants = keys.len(), "variants written");
        Ok(RecordOutcome::Processed)
    }

    /// Whether every variant exists and was made from `etag` with this config (a HEAD of
    /// each, timed as the `head` stage).
    async fn variants_current(&self, bucket: &str, keys: &[String], etag: &ETag) -> Result<bool> {
        let fingerprint = self.pipeline.fingerprint();
        let heads = async {
            for key in keys {
                let Some(info) = self.store.head(bucket, key).await? else {
                    return Ok(false);
                };
                let made_from = info.metadata.get(META_SOURCE_ETAG).map(String::as_str);
                let current = made_from.is_some_and(|e| *etag == *e)
                    && info.metadata.get(META_CONFIG).map(String::as_str) == Some(fingerprint);
                if !current {
                    return Ok(false);
                }
            }
            Ok(true)
        };
        let current = telemetry::timed("head", heads).await?;
        if current {
            info!("variants already current");
        }
        Ok(current)
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
        let _memory = self
            .memory_budget
            .acquire_many(cost)
            .await
            .map_err(|_| Error::io("memory budget closed"))?;
        let _in_use = MemoryInUse::reserve(cost);
        // Waiting for the CPU is not started work: on shutdown, give the event back instead.
        // Biased: a free CPU slot wins over a drain that began meanwhile (the object is
        // fetched; finishing beats fetching it again), where a random pick would release half
        // the time.
        let waiting = GaugeWhile::increment(catalogue::JOBS_WAITING_FOR_CPU.name);
        let _cpu = tokio::select! {
            biased;
            permit = self.cpu.acquire() => permit.map_err(|_| Error::io("cpu pool closed"))?,
            _ = draining.cancelled() => return Err(Error::new(ErrorKind::Cancelled, "shutting down")),
        };
        drop(waiting);
        let pipeline = self.pipeline.clone();
        // The stage spans inside the pipeline become children of this job's span.
        let span = tracing::Span::current();
        let result = tokio::task::spawn_blocking(move || {
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

/// S3 user metadata must be printable ASCII; other keys are stored percent-encoded.
fn metadata_safe(key: &str) -> String {
    super::metadata_value::metadata_value(key)
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
