//! Start-up of the SQS worker: learn what the queue is (its visibility timeout, its redrive
//! policy's maxReceiveCount) while riding out faults that pass. A transient failure is logged
//! and tried again with backoff (the worker is not ready meanwhile) until the start-up deadline;
//! only a permanent one (a queue that does not exist, a malformed policy) or a refusal
//! (credentials or a policy deny the call) ends the process.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::retry::RetryPlan;
use crate::config::QueueConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::ports::Queue;
use crate::telemetry::{catalogue, health::Health};

/// What the receive loop needs to know about its queue.
#[derive(Debug, Clone)]
pub struct QueueFacts {
    /// The lease of a received message (the queue's, or `queue.visibility_timeout_secs`).
    pub visibility: Duration,
    pub retry: RetryPlan,
}

/// The queue's facts, asked until it answers; `None` if shutdown comes first. Errors say
/// whether the configuration is wrong or the queue never answered in time.
pub async fn learn_queue<Q: Queue>(
    queue: &Q,
    config: &QueueConfig,
    health: &Health,
    shutdown: &CancellationToken,
) -> Result<Option<QueueFacts>> {
    let deadline = Duration::from_secs(config.startup_deadline_secs);
    let started = Instant::now();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        health.progress();
        let e = match ask(queue, config).await {
            Ok(facts) => {
                info!(
                    visibility_s = facts.visibility.as_secs(),
                    retry_schedule = facts.retry.describe(),
                    "queue settings read"
                );
                if !queue.has_dead_letter_queue() && facts.retry.max_receives().is_none() {
                    warn!(
                        "no queue.dlq_url and no redrive policy: a message that keeps failing is \
                         retried until the queue's MessageRetentionPeriod deletes it, with its \
                         reason only in these logs"
                    );
                }
                if facts.retry.retention_binds() && facts.retry.max_receives().is_some() {
                    warn!(
                        retry_window_secs = config.retry_window_secs,
                        "queue.retry_window_secs outlasts the queue's MessageRetentionPeriod: \
                         retries end earlier, when the queue would delete the message"
                    );
                }
                return Ok(Some(facts));
            }
            Err(e) => e,
        };
        if e.kind() == ErrorKind::Denied {
            return Err(Error::new(
                e.kind(),
                format!(
                    "permission error at start-up (not retried: fix the credentials or the \
                     policy): {}",
                    e.message()
                ),
            ));
        }
        if e.is_permanent() {
            return Err(Error::new(
                e.kind(),
                format!(
                    "configuration error at start-up (not retried): {}",
                    e.message()
                ),
            ));
        }
        let left = deadline.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(Error::new(
                ErrorKind::Service,
                format!(
                    "the queue did not answer within queue.startup_deadline_secs ({} s, {attempt} \
                     attempts); last error: {}",
                    deadline.as_secs(),
                    e.message()
                ),
            ));
        }
        metrics::counter!(catalogue::POLL_ERRORS.name).increment(1);
        let delay = Duration::from_millis(500 * 2u64.pow(attempt.min(6))).min(left);
        warn!(
            error = %e,
            attempt,
            retry_in_ms = delay.as_millis() as u64,
            "start-up: the queue did not answer; trying again"
        );
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

async fn ask<Q: Queue>(queue: &Q, config: &QueueConfig) -> Result<QueueFacts> {
    let visibility = match config.visibility_timeout_secs {
        Some(secs) => Duration::from_secs(secs),
        None => queue.visibility_timeout().await?,
    };
    let max_receives = queue.max_receive_count().await?;
    let retention = queue.retention().await?;
    Ok(QueueFacts {
        visibility,
        retry: RetryPlan::new(config, max_receives).with_retention(retention),
    })
}
