//! The queue path: one synthetic S3 ObjectCreated event per object, [`MAX_BATCH`] per call,
//! up to `--concurrency` calls at once; entries that failed for a reason that may pass are
//! sent again with a growing pause.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::{JoinError, JoinSet};

use super::Backfill;
use crate::error::{Error, ErrorKind, Result};
use crate::event;
use crate::ports::{Enqueue, ListedObject, Store, MAX_BATCH};

/// At most this many attempts per entry.
const SEND_ATTEMPTS: u32 = 5;

/// What one batch came to.
#[derive(Debug, Default)]
struct BatchResult {
    sent: u64,
    /// (key, reason)
    failed: Vec<(String, String)>,
    /// A permanent failure of the call itself (no such queue, access denied for good).
    fatal: Option<Error>,
}

/// An event not sent yet.
struct Pending {
    key: String,
    body: String,
    /// Why its last attempt failed.
    reason: Option<String>,
}

impl<S: Store, Q: Enqueue> Backfill<'_, S, Q> {
    /// Enqueues one event per object; whether the page was finished (not interrupted). A call
    /// that fails permanently stops the backfill.
    pub(super) async fn enqueue_page(
        &mut self,
        queue: &Arc<Q>,
        objects: &[ListedObject],
    ) -> Result<bool> {
        let mut calls = JoinSet::new();
        let mut first_error = None;
        let mut interrupted = false;
        for chunk in objects.chunks(MAX_BATCH) {
            if self.cancel.is_cancelled() {
                interrupted = true;
                break;
            }
            while calls.len() >= self.concurrency {
                if let Some(done) = calls.join_next().await {
                    if let Some(e) = self.count_batch(done) {
                        first_error.get_or_insert(e);
                    }
                }
            }
            if first_error.is_some() {
                break;
            }
            let entries = chunk
                .iter()
                .map(|o| Pending {
                    key: o.key.clone(),
                    body: event::s3_notification(self.bucket, &o.key, o.etag.as_deref(), o.size),
                    reason: None,
                })
                .collect();
            calls.spawn(send_with_retries(queue.clone(), entries));
        }
        while let Some(done) = calls.join_next().await {
            if let Some(e) = self.count_batch(done) {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(!interrupted),
        }
    }

    /// Adds a finished batch to the report; its permanent error, if any.
    fn count_batch(&mut self, done: std::result::Result<BatchResult, JoinError>) -> Option<Error> {
        let result = done.unwrap_or_else(|e| BatchResult {
            failed: vec![("?".into(), format!("send task failed: {e}"))],
            ..BatchResult::default()
        });
        self.report.enqueued += result.sent;
        self.report.failed += result.failed.len() as u64;
        self.progress.inc(result.sent + result.failed.len() as u64);
        for (key, reason) in result.failed {
            self.note(format!(
                "error: s3://{}/{key}: not enqueued: {reason}",
                self.bucket
            ));
        }
        result.fatal
    }
}

/// One batch, sending again the entries that failed for a reason that may pass.
async fn send_with_retries<Q: Enqueue>(queue: Arc<Q>, mut pending: Vec<Pending>) -> BatchResult {
    let mut result = BatchResult::default();
    for attempt in 0..SEND_ATTEMPTS {
        if pending.is_empty() {
            break;
        }
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        let bodies: Vec<String> = pending.iter().map(|p| p.body.clone()).collect();
        match queue.send_batch(&bodies).await {
            Ok(outcomes) => {
                let mut outcomes = outcomes.into_iter();
                let mut again = Vec::new();
                for mut entry in pending {
                    let outcome = outcomes
                        .next()
                        .unwrap_or_else(|| Err(Error::new(ErrorKind::Service, "not sent")));
                    match outcome {
                        Ok(()) => result.sent += 1,
                        Err(e) if e.is_permanent() => {
                            result.failed.push((entry.key, e.message().to_string()));
                        }
                        Err(e) => {
                            entry.reason = Some(e.message().to_string());
                            again.push(entry);
                        }
                    }
                }
                pending = again;
            }
            Err(e) if e.is_permanent() => {
                result.fatal = Some(e);
                break;
            }
            Err(e) => {
                for entry in &mut pending {
                    entry.reason = Some(e.message().to_string());
                }
            }
        }
    }
    for entry in pending {
        let reason = entry.reason.unwrap_or_else(|| "not sent".to_string());
        result.failed.push((
            entry.key,
            format!("{reason} (after {SEND_ATTEMPTS} attempts)"),
        ));
    }
    result
}
