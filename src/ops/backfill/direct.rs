//! `--direct`: the worker's job core ([`crate::worker::Processor`]) on each listed object, in
//! this process: the same idempotency check (variants made from this ETag with this config
//! are skipped), the same pipeline, the same bytes.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

use super::Backfill;
use crate::error::{Error, ErrorKind, Result};
use crate::event::ObjectCreated;
use crate::ports::{Enqueue, ListedObject, Store};
use crate::worker::processor::Delivery;
use crate::worker::{Processor, RecordOutcome};

/// Transient failures of a job are retried this many times in all, with a growing pause.
const JOB_ATTEMPTS: u32 = 4;

type JobResult = std::result::Result<(String, Result<RecordOutcome>), JoinError>;

impl<S: Store, Q: Enqueue> Backfill<'_, S, Q> {
    /// Runs the job on each object, up to `--concurrency` at once; whether the page was
    /// finished (not interrupted).
    pub(super) async fn process_page(
        &mut self,
        processor: &Arc<Processor<S>>,
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
            let event = ObjectCreated::new(self.bucket, &object.key, object.etag, object.size);
            let (processor, cancel) = (processor.clone(), self.cancel.clone());
            jobs.spawn(async move {
                let outcome = handle_with_retries(&processor, &event, &cancel).await;
                (event.key, outcome)
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
                    RecordOutcome::Processed => &mut report.processed,
                    // Backfill hands over created objects only.
                    RecordOutcome::Deleted => &mut report.ignored,
                    RecordOutcome::Skipped => &mut report.skipped,
                    RecordOutcome::Superseded => &mut report.superseded,
                    RecordOutcome::Ignored => &mut report.ignored,
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

/// One listed object through the job core. Transient failures are retried here (there is no
/// queue to retry through), permanent ones returned.
async fn handle_with_retries<S: Store>(
    processor: &Processor<S>,
    event: &ObjectCreated,
    cancel: &CancellationToken,
) -> Result<RecordOutcome> {
    let interrupted = || Error::new(ErrorKind::Cancelled, "interrupted");
    let mut attempt = 1;
    loop {
        match processor
            .handle_created(event, Delivery::First, cancel)
            .await
        {
            Err(e) if e.kind() == ErrorKind::Cancelled => return Err(interrupted()),
            Err(e) if !e.is_permanent() => {
                if attempt == JOB_ATTEMPTS {
                    return Err(e.context(format!("after {JOB_ATTEMPTS} attempts")));
                }
                tracing::debug!(error = %e, attempt, "transient failure, retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return Err(interrupted()),
                    _ = tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))) => {}
                }
                attempt += 1;
            }
            done => return done,
        }
    }
}
