//! `--direct`: the worker's own job handler ([`crate::worker::job::handle`]) on each object,
//! in this process: the same idempotency check (variants made from this ETag with this config
//! are skipped), the same pipeline, the same bytes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

use super::Backfill;
use crate::adapters::memory::MemoryQueue;
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::event;
use crate::ports::{Enqueue, ListedObject, Message, Store};
use crate::worker::job::{self, Decision, MessageOutcome};
use crate::worker::WorkerContext;

/// The worker's context around `store`, with a queue it never uses: `job::handle` only reads
/// and writes the store.
pub type DirectContext<S> = WorkerContext<MemoryQueue, S>;

pub fn context<S: Store>(config: &Config, store: S) -> Result<DirectContext<S>> {
    let queue = MemoryQueue::new(Duration::from_secs(30), false);
    WorkerContext::new(config, queue, store)
}

/// Transient failures of a job are retried this many times in all, with a growing pause.
const JOB_ATTEMPTS: u32 = 4;

type JobResult = std::result::Result<(String, Result<MessageOutcome>), JoinError>;

impl<S: Store, Q: Enqueue> Backfill<'_, S, Q> {
    /// Runs the job on each object, up to `--concurrency` at once; whether the page was
    /// finished (not interrupted).
    pub(super) async fn process_page(
        &mut self,
        ctx: &Arc<DirectContext<S>>,
        objects: Vec<ListedObject>,
    ) -> bool {
        let mut jobs = JoinSet::new();
        let mut interrupted = false;
        for object in objects {
            if self.cancel.is_cancelled() {
                interrupted = true;
                break;
            }
            while jobs.len() >= self.concurrency {
                if let Some(done) = jobs.join_next().await {
                    interrupted |= !self.count_job(done);
                }
            }
            let (ctx, cancel, bucket) = (ctx.clone(), self.cancel.clone(), self.bucket.to_string());
            jobs.spawn(async move {
                let outcome = process_object(&ctx, &bucket, &object, &cancel).await;
                (object.key, outcome)
            });
        }
        while let Some(done) = jobs.join_next().await {
            interrupted |= !self.count_job(done);
        }
        !interrupted
    }

    /// Adds a finished job to the report; false if it was interrupted.
    fn count_job(&mut self, done: JobResult) -> bool {
        self.progress.inc(1);
        let report = &mut self.report;
        match done {
            Ok((_, Ok(outcome))) => {
                let counter = match outcome {
                    MessageOutcome::Processed => &mut report.processed,
                    MessageOutcome::Skipped => &mut report.skipped,
                    MessageOutcome::Superseded => &mut report.superseded,
                    MessageOutcome::Ignored => &mut report.ignored,
                };
                *counter += 1;
                true
            }
            Ok((_, Err(e))) if e.kind() == ErrorKind::Cancelled => false,
            Ok((key, Err(e))) => {
                report.failed += 1;
                self.note(format!("error: s3://{}/{key}: {e}", self.bucket));
                true
            }
            Err(e) => {
                report.failed += 1;
                self.note(format!("error: job task failed: {e}"));
                true
            }
        }
    }
}

// TODO(issue 11): hand the typed event to the job core
/// One listed object through the worker's job handler, as the synthetic S3 event the queue
/// path would have sent for it. Transient failures are retried here (there is no queue to
/// retry through), permanent ones returned.
async fn process_object<S: Store>(
    ctx: &Arc<DirectContext<S>>,
    bucket: &str,
    object: &ListedObject,
    cancel: &CancellationToken,
) -> Result<MessageOutcome> {
    let mut message = Message {
        id: object.key.clone(),
        receipt: String::new(),
        body: event::s3_notification(bucket, &object.key, object.etag.as_deref(), object.size),
        receive_count: 1,
        sent_at: None,
        attributes: HashMap::new(),
    };
    let interrupted = || Error::new(ErrorKind::Cancelled, "interrupted");
    for attempt in 1..=JOB_ATTEMPTS {
        message.receive_count = attempt;
        match job::handle(ctx, &message, cancel).await {
            Decision::Ack(outcome) => return Ok(outcome),
            Decision::Retry(e) if attempt < JOB_ATTEMPTS => {
                tokio::select! {
                    _ = cancel.cancelled() => return Err(interrupted()),
                    _ = tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))) => {}
                }
                tracing::debug!(error = %e, attempt, "transient failure, retrying");
            }
            Decision::Retry(e) => {
                return Err(e.context(format!("after {JOB_ATTEMPTS} attempts")));
            }
            Decision::DeadLetter(e) => return Err(e),
            Decision::Release => return Err(interrupted()),
        }
    }
    unreachable!("the last attempt returns")
}
