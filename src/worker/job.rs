//! One message: parse, and for each created object skip, supersede or render it. Decides what
//! happens to the message; the run loop carries the decision out.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::WorkerContext;
use crate::error::{Error, ErrorKind, Result};
use crate::event::{self, ObjectCreated, Parsed};
use crate::ports::{bare_etag, GetOutcome, Message, PutObject, Queue, Store};

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
        let span = tracing::info_span!("record", bucket = %event.bucket, key = %event.key);
        let _enter = span.enter();
        match process_record(ctx, event, draining).await {
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
        None => match ctx.store.head(&event.bucket, &event.key).await? {
            Some(info) => Some(info.etag),
            None => return Ok(RecordOutcome::Superseded),
        },
    };
    if let Some(etag) = &source_etag {
        if variants_current(ctx, &destination, &keys, etag, &fingerprint).await? {
            info!("variants already current");
            return Ok(RecordOutcome::Skipped);
        }
    }

    let (bytes, info) = match ctx
        .store
        .get(&event.bucket, &event.key, source_etag.as_deref())
        .await?
    {
        GetOutcome::Found { bytes, info } => (bytes, info),
        GetOutcome::Changed | GetOutcome::NotFound => {
            info!("object changed or deleted since the event");
            return Ok(RecordOutcome::Superseded);
        }
    };
    let output = run_pipeline(ctx, bytes, event.key.clone(), draining).await?;

    let mut metadata = HashMap::new();
    metadata.insert(META_SOURCE_KEY.to_string(), metadata_safe(&event.key));
    metadata.insert(
        META_SOURCE_ETAG.to_string(),
        bare_etag(&info.etag).to_string(),
    );
    metadata.insert(META_CONFIG.to_string(), fingerprint);
    for variant in output.variants {
        ctx.store
            .put(PutObject {
                bucket: destination.clone(),
                content_type: variant.content_type().to_string(),
                key: variant.key,
                bytes: variant.bytes,
                cache_control: ctx.destination.cache_control.clone(),
                metadata: metadata.clone(),
            })
            .await?;
    }
    info!(variants = keys.len(), "variants written");
    Ok(RecordOutcome::Processed)
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
    let cost = memory_permits(
        ctx.memory_budget_mib,
        ctx.pipeline.estimate_decode_bytes(&bytes),
    );
    let _memory = ctx
        .memory_budget
        .acquire_many(cost)
        .await
        .map_err(|_| Error::io("memory budget closed"))?;
    // Waiting for the CPU is not started work: on shutdown, give the message back instead.
    let _cpu = tokio::select! {
        permit = ctx.cpu.acquire() => permit.map_err(|_| Error::io("cpu pool closed"))?,
        _ = draining.cancelled() => return Err(Error::new(ErrorKind::Cancelled, "shutting down")),
    };
    let pipeline = ctx.pipeline.clone();
    let result = tokio::task::spawn_blocking(move || pipeline.process(&bytes, &key)).await;
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

/// One permit is one MiB of estimated decode memory; a job bigger than the whole budget
/// takes all of it and runs alone rather than never.
fn memory_permits(budget_mib: u32, bytes: u64) -> u32 {
    bytes.div_ceil(1 << 20).clamp(1, budget_mib as u64) as u32
}
