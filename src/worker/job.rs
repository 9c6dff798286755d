//! One message: parse, and for each created object skip, supersede or render it. Decides what
//! happens to the message; the run loop carries the decision out.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use super::WorkerContext;
use crate::error::{Error, ErrorKind, Result};
use crate::event::{self, ObjectCreated, Parsed};
use crate::ports::{bare_etag, GetOutcome, Message, PutObject, Queue, Store};
use crate::telemetry::{self, catalogue};

/// S3 user metadata stored on every variant: what it was made from and with which config.
pub const META_SOURCE_KEY: &str = "resizeq-source-key";
pub const META_SOURCE_ETAG: &str = "resizeq-source-etag";
pub const META_CONFIG: &str = "resizeq-config";

/// What happened to one created object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordOutcome {
    /// Every variant written.
    Processed,
    /// Every variant already current (same source ETag and config): nothing written.
    Skipped,
    /// The object was overwritten or deleted after this event: the newer event does the work.
    Superseded,
    /// Filtered out, or an event on a destination bucket.
    Ignored,
}

/// What to do with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Delete it. `outcome` names the most significant record outcome (for metrics).
    Ack(MessageOutcome),
    /// Make it visible again after a backoff.
    Retry(Error),
    /// Dead-letter it with this error.
    DeadLetter(Error),
    /// Shutdown came before its work started: make it visible again at once.
    Release,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageOutcome {
    Processed,
    Skipped,
    Superseded,
    Ignored,
}

impl MessageOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageOutcome::Processed => "processed",
            MessageOutcome::Skipped => "skipped",
            MessageOutcome::Superseded => "superseded",
            MessageOutcome::Ignored => "ignored",
        }
    }
}

/// Handles one message and decides its fate. Transient failures of any record retry the whole
/// message (records already done are skipped next time); a permanent failure dead-letters it.
pub async fn handle<Q: Queue, S: Store>(
    ctx: &Arc<WorkerContext<Q, S>>,
    message: &Message,
    draining: &CancellationToken,
) -> Decision {
    let events = match event::parse(&message.body) {
        Ok(Parsed::Test) => return Decision::Ack(MessageOutcome::Ignored),
        Ok(Parsed::Created(events)) => events,
        // Poison: the body will never parse, so retrying only delays the DLQ.
        Err(e) => return Decision::DeadLetter(e),
    };
    let mut outcomes = Vec::with_capacity(events.len());
    for event in &events {
        // `instrument`, not `enter`: a guard held across an await would leak this span into
        // whatever else runs on the thread meanwhile.
        let span = tracing::info_span!("record", bucket = %event.bucket, key = %event.key);
        match process_record(ctx, event, draining).instrument(span).await {
            Ok(outcome) => {
                debug!(outcome = ?outcome, "record done");
                outcomes.push(outcome);
            }
            Err(e) if e.kind() == ErrorKind::Cancelled => return Decision::Release,
            Err(e) => {
                let e = e.context(format!("s3://{}/{}", event.bucket, event.key));
                return if e.is_permanent() {
                    Decision::DeadLetter(e)
                } else {
                    Decision::Retry(e)
                };
            }
        }
    }
    let outcome = if outcomes.contains(&RecordOutcome::Processed) {
        MessageOutcome::Processed
    } else if outcomes.contains(&RecordOutcome::Superseded) {
        MessageOutcome::Superseded
    } else if outcomes.contains(&RecordOutcome::Skipped) {
        MessageOutcome::Skipped
    } else {
        MessageOutcome::Ignored
    };
    Decision::Ack(outcome)
}

async fn process_record<Q: Queue, S: Store>(
    ctx: &Arc<WorkerContext<Q, S>>,
    event: &ObjectCreated,
    draining: &CancellationToken,
) -> Result<RecordOutcome> {
    if ctx.is_destination_bucket(&event.bucket) {
        // Our own outputs: processing them would loop forever.
        return Ok(RecordOutcome::Ignored);
    }
    if !ctx.filters.accepts(&event.key) {
        return Ok(RecordOutcome::Ignored);
    }
    let destination = ctx.destination.bucket_for(&event.bucket);
    let keys = ctx.pipeline.keys_for(&event.key);
    let fingerprint = ctx.pipeline.fingerprint().to_string();

    // The ETag the variants must be made from: the event's, or (events without one) the
    // object's current one.
    let source_etag = match &event.etag {
        Some(etag) => Some(bare_etag(etag).to_string()),
        None => match telemetry::timed("head", ctx.store.head(&event.bucket, &event.key)).await? {
            Some(info) => Some(info.etag),
            None => return Ok(RecordOutcome::Superseded),
        },
    };
    if let Some(etag) = &source_etag {
        let current = variants_current(ctx, &destination, &keys, etag, &fingerprint);
        if telemetry::timed("head", current).await? {
            info!("variants already current");
            return Ok(RecordOutcome::Skipped);
        }
    }

    let get = ctx
        .store
        .get(&event.bucket, &event.key, source_etag.as_deref());
    let (bytes, info) = match telemetry::timed("get", get).await? {
        GetOutcome::Found { bytes, info } => (bytes, info),
        GetOutcome::Changed | GetOutcome::NotFound => {
            info!("object changed or deleted since the event");
            return Ok(RecordOutcome::Superseded);
        }
    };
    let source_bytes = bytes.len();
    let output = run_pipeline(ctx, bytes, event.key.clone(), draining).await?;
    record_pipeline(&output, source_bytes);

    let mut metadata = HashMap::new();
    metadata.insert(META_SOURCE_KEY.to_string(), metadata_safe(&event.key));
    metadata.insert(
        META_SOURCE_ETAG.to_string(),
        bare_etag(&info.etag).to_string(),
    );
    metadata.insert(META_CONFIG.to_string(), fingerprint);
    for variant in output.variants {
        let written = variant.bytes.len() as u64;
        let put = ctx.store.put(PutObject {
            bucket: destination.clone(),
            content_type: variant.content_type().to_string(),
            key: variant.key,
            bytes: variant.bytes,
            cache_control: ctx.destination.cache_control.clone(),
            metadata: metadata.clone(),
        });
        telemetry::timed("put", put).await?;
        metrics::counter!(catalogue::OUTPUT_BYTES.name, "variant" => variant.name.clone())
            .increment(written);
        metrics::counter!(catalogue::VARIANTS_WRITTEN.name, "variant" => variant.name).increment(1);
    }
    if let Some(latency) = event.event_time.as_deref().and_then(since_event) {
        metrics::histogram!(catalogue::EVENT_TO_VARIANTS.name).record(latency.as_secs_f64());
    }
    info!(variants = keys.len(), "variants written");
    Ok(RecordOutcome::Processed)
}

/// Stage durations and source size of one pipeline run.
fn record_pipeline(output: &crate::pipeline::Output, source_bytes: usize) {
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

/// S3 user metadata must be ASCII; non-ASCII keys are stored form-encoded.
fn metadata_safe(key: &str) -> String {
    if key.is_ascii() {
        key.to_string()
    } else {
        event::form_encode(key)
    }
}

async fn variants_current<Q: Queue, S: Store>(
    ctx: &Arc<WorkerContext<Q, S>>,
    bucket: &str,
    keys: &[String],
    etag: &str,
    fingerprint: &str,
) -> Result<bool> {
    for key in keys {
        let Some(info) = ctx.store.head(bucket, key).await? else {
            return Ok(false);
        };
        let current = info.metadata.get(META_SOURCE_ETAG).map(|e| bare_etag(e)) == Some(etag)
            && info.metadata.get(META_CONFIG).map(String::as_str) == Some(fingerprint);
        if !current {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Runs the pipeline off the async threads, within the CPU pool and the memory budget.
async fn run_pipeline<Q: Queue, S: Store>(
    ctx: &Arc<WorkerContext<Q, S>>,
    bytes: Vec<u8>,
    key: String,
    draining: &CancellationToken,
) -> Result<crate::pipeline::Output> {
    // One header read: it sizes the memory reservation and is decoded from. A probe error
    // (not an image, over a limit) costs one permit and is returned from the blocking task.
    let probe = ctx.pipeline.probe(&bytes);
    let cost = memory_permits(
        ctx.memory_budget_mib,
        probe.as_ref().map_or(0, |p| p.decode_bytes()),
    );
    let _memory = ctx
        .memory_budget
        .acquire_many(cost)
        .await
        .map_err(|_| Error::io("memory budget closed"))?;
    let _in_use = MemoryInUse::reserve(cost);
    // Waiting for the CPU is not started work: on shutdown, give the message back instead.
    // Biased: a free CPU slot wins over a drain that began meanwhile (the object is fetched;
    // finishing beats fetching it again), where a random pick would release half the time.
    let _cpu = tokio::select! {
        biased;
        permit = ctx.cpu.acquire() => permit.map_err(|_| Error::io("cpu pool closed"))?,
        _ = draining.cancelled() => return Err(Error::new(ErrorKind::Cancelled, "shutting down")),
    };
    let pipeline = ctx.pipeline.clone();
    // The stage spans inside the pipeline become children of this message's span.
    let span = tracing::Span::current();
    let result = tokio::task::spawn_blocking(move || {
        let cpu = ThreadCpuTime::start();
        let output = span.in_scope(|| probe.and_then(|p| pipeline.process_probed(&bytes, p, &key)));
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
