//! `resizeq run`: the receive loop. Long-polls the queue while jobs run (no head-of-line
//! blocking on a slow image), bounds in-flight messages, CPU work and decode memory, keeps
//! leases alive, acknowledges in batches only after every variant is written, and drains on
//! shutdown.

pub mod job;
pub mod local;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn, Instrument};

use crate::config::{Config, DestinationConfig, Filters, QueueConfig};
use crate::error::{Error, Result};
use crate::pipeline::Pipeline;
use crate::ports::{DeadLetter, Message, Queue, Store};
use job::{Decision, MessageOutcome};

/// Everything a job needs, shared by all jobs.
pub struct WorkerContext<Q, S> {
    pub queue: Q,
    pub store: S,
    pub pipeline: Arc<Pipeline>,
    pub destination: DestinationConfig,
    pub filters: Filters,
    pub queue_config: QueueConfig,
    pub cpu: Semaphore,
    pub memory_budget: Semaphore,
    pub memory_budget_mib: u32,
    pub max_in_flight: usize,
    pub stats: Stats,
}

impl<Q, S> WorkerContext<Q, S> {
    pub fn new(config: &Config, queue: Q, store: S) -> Result<Self> {
        let pipeline = Pipeline::new(config.pipeline_settings())?;
        let cpus = match config.worker.cpu_workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let memory_budget_mib = config.worker.memory_budget_mib.min(u32::MAX as u64 / 2) as u32;
        Ok(WorkerContext {
            queue,
            store,
            pipeline: Arc::new(pipeline),
            destination: config.destination.clone(),
            filters: config.filters.clone(),
            queue_config: config.queue.clone(),
            cpu: Semaphore::new(cpus),
            memory_budget: Semaphore::new(memory_budget_mib as usize),
            memory_budget_mib,
            max_in_flight: config.worker.max_in_flight,
            stats: Stats::default(),
        })
    }

    /// Events on a destination bucket are ours: with the default `<source>-resized`, any
    /// bucket with that suffix.
    pub fn is_destination_bucket(&self, bucket: &str) -> bool {
        match &self.destination.bucket {
            Some(destination) => destination == bucket,
            None => bucket.ends_with("-resized"),
        }
    }
}

/// Counts of message outcomes (the metrics issue exports these).
#[derive(Debug, Default)]
pub struct Stats {
    pub received: AtomicU64,
    pub processed: AtomicU64,
    pub skipped: AtomicU64,
    pub superseded: AtomicU64,
    pub ignored: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub released: AtomicU64,
}

impl Stats {
    fn count(&self, outcome: MessageOutcome) {
        let counter = match outcome {
            MessageOutcome::Processed => &self.processed,
            MessageOutcome::Skipped => &self.skipped,
            MessageOutcome::Superseded => &self.superseded,
            MessageOutcome::Ignored => &self.ignored,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// How `run` ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Until shutdown is requested.
    Forever,
    /// Until the queue is empty (visible, in flight and delayed all 0 on two checks in a row).
    UntilEmpty,
}

/// Runs until `shutdown` is cancelled (or, with `Mode::UntilEmpty`, the queue is empty).
/// In-flight jobs then get `shutdown_timeout` to finish; received messages that have not
/// started are released at once.
pub async fn run<Q: Queue, S: Store>(
    ctx: Arc<WorkerContext<Q, S>>,
    mode: Mode,
    shutdown_timeout: Duration,
    shutdown: CancellationToken,
) -> Result<()> {
    let queue_visibility = match ctx.queue_config.visibility_timeout_secs {
        Some(secs) => Duration::from_secs(secs),
        None => ctx.queue.visibility_timeout().await?,
    };
    let max_in_flight = Arc::new(Semaphore::new(ctx.max_in_flight));
    let (ack_tx, ack_rx) = mpsc::channel::<Message>(1024);
    let acker = tokio::spawn(ack_batcher(ctx.clone(), ack_rx));
    // Cancelled when shutdown starts: work not yet started is released, not begun.
    let draining = CancellationToken::new();
    let mut jobs = JoinSet::new();
    let mut empty_checks = 0;
    let mut poll_failures = 0u32;
    let wait = Duration::from_secs(ctx.queue_config.wait_time_secs);

    loop {
        // Room for at least one more message before polling.
        let permits = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = max_in_flight.clone().acquire_many_owned(1) => p.map_err(|_| Error::io("closed"))?,
        };
        drop(permits);
        let room = max_in_flight
            .available_permits()
            .clamp(1, ctx.queue_config.max_messages as usize);
        // With no jobs running in until-empty mode, a short poll lets us check emptiness.
        let poll_wait = if mode == Mode::UntilEmpty {
            wait.min(Duration::from_secs(1))
        } else {
            wait
        };
        let received = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = ctx.queue.receive(room, poll_wait, ctx.queue_config.visibility_timeout_secs.map(Duration::from_secs)) => r,
        };
        while let Some(done) = jobs.try_join_next() {
            if let Err(e) = done {
                error!(error = %e, "job task failed");
            }
        }
        let messages = match received {
            Ok(messages) => {
                poll_failures = 0;
                messages
            }
            Err(e) => {
                poll_failures += 1;
                let delay = Duration::from_millis(500 * 2u64.pow(poll_failures.min(6)));
                warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "receive failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        };
        if messages.is_empty() {
            if mode == Mode::UntilEmpty && jobs.is_empty() {
                // Empty only counts when nothing is in flight anywhere: a crashed worker's
                // leases must expire and be processed first.
                if ctx.queue.depth().await?.is_empty() {
                    empty_checks += 1;
                    if empty_checks >= 2 {
                        info!("queue is empty");
                        break;
                    }
                } else {
                    empty_checks = 0;
                }
            }
            continue;
        }
        empty_checks = 0;
        for message in messages {
            ctx.stats.received.fetch_add(1, Ordering::Relaxed);
            let permit = max_in_flight.clone().try_acquire_owned().ok();
            let ctx = ctx.clone();
            let ack_tx = ack_tx.clone();
            let draining = draining.clone();
            let span = tracing::info_span!(
                "message",
                message_id = %message.id,
                receive_count = message.receive_count,
            );
            jobs.spawn(
                async move {
                    let _permit = permit;
                    run_job(&ctx, message, queue_visibility, &ack_tx, &draining).await;
                }
                .instrument(span),
            );
        }
    }

    // Drain: let jobs in flight finish within the deadline.
    info!(in_flight = jobs.len(), "stopping: finishing jobs in flight");
    draining.cancel();
    let deadline = tokio::time::sleep(shutdown_timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => {
                warn!(abandoned = jobs.len(), "shutdown timeout: abandoning jobs; their messages reappear after the visibility timeout");
                jobs.abort_all();
                break;
            }
            next = jobs.join_next() => if next.is_none() { break },
        }
    }
    drop(ack_tx);
    let _ = acker.await;
    Ok(())
}

/// One message, start to finish: lease kept alive meanwhile, then ack, retry or dead-letter.
async fn run_job<Q: Queue, S: Store>(
    ctx: &Arc<WorkerContext<Q, S>>,
    message: Message,
    visibility: Duration,
    acks: &mpsc::Sender<Message>,
    draining: &CancellationToken,
) {
    if draining.is_cancelled() {
        release(ctx, &message).await;
        return;
    }
    // Stops extending the lease when the job ends, also when it is aborted at the shutdown
    // deadline: the message must then reappear after one visibility timeout.
    let _lease = AbortOnDrop(keep_lease(ctx.clone(), message.clone(), visibility));
    let decision = job::handle(ctx, &message, draining).await;
    match decision {
        Decision::Ack(outcome) => {
            ctx.stats.count(outcome);
            info!(outcome = outcome.as_str(), "done");
            if acks.send(message).await.is_err() {
                error!("ack channel closed");
            }
        }
        Decision::Retry(e) => {
            let delay = backoff(&ctx.queue_config, message.receive_count);
            warn!(error = %e, retry_in_s = delay.as_secs(), "transient failure, retrying later");
            ctx.stats.retried.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = ctx.queue.retry_after(&message, delay).await {
                warn!(error = %e, "could not delay the retry; the message reappears after its visibility timeout");
            }
        }
        Decision::DeadLetter(e) => dead_letter(ctx, &message, e).await,
        Decision::Release => {
            info!("shutting down: released before its work started");
            release(ctx, &message).await;
        }
    }
}

async fn release<Q: Queue, S: Store>(ctx: &Arc<WorkerContext<Q, S>>, message: &Message) {
    ctx.stats.released.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = ctx.queue.retry_after(message, Duration::ZERO).await {
        warn!(error = %e, "could not release the message; it reappears after its visibility timeout");
    }
}

async fn dead_letter<Q: Queue, S: Store>(
    ctx: &Arc<WorkerContext<Q, S>>,
    message: &Message,
    e: Error,
) {
    if !ctx.queue.has_dead_letter_queue() {
        // Never delete what we could not process: the redrive policy moves it once its
        // receive count runs out.
        let delay = backoff(&ctx.queue_config, message.receive_count);
        warn!(error = %e, "permanent failure and no queue.dlq_url: leaving it to the redrive policy");
        ctx.stats.retried.fetch_add(1, Ordering::Relaxed);
        let _ = ctx.queue.retry_after(message, delay).await;
        return;
    }
    let reason = DeadLetter {
        error_kind: e.kind().as_str().to_string(),
        error_reason: e.message().chars().take(1024).collect(),
        first_failed_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string(),
    };
    match ctx.queue.dead_letter(message, &reason).await {
        Ok(()) => {
            ctx.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
            warn!(error_kind = %reason.error_kind, error = %e, "dead-lettered");
        }
        Err(send) => {
            warn!(error = %send, original = %e, "dead-lettering failed; retrying the message later");
            ctx.stats.retried.fetch_add(1, Ordering::Relaxed);
            let _ = ctx
                .queue
                .retry_after(message, backoff(&ctx.queue_config, message.receive_count))
                .await;
        }
    }
}

/// Exponential backoff with jitter: base × 2^(receives − 1), capped, times 0.5–1.0.
pub fn backoff(config: &QueueConfig, receive_count: u32) -> Duration {
    let exp = receive_count.saturating_sub(1).min(20);
    let secs = (config.retry_base_secs.saturating_mul(1 << exp)).min(config.retry_max_secs) as f64;
    Duration::from_secs_f64(secs * (0.5 + fastrand::f64() / 2.0)).max(Duration::from_secs(1))
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Extends the message's visibility every third of it while the job runs, up to
/// `queue.max_lease_secs` in all. Aborted when the job ends.
fn keep_lease<Q: Queue, S: Store>(
    ctx: Arc<WorkerContext<Q, S>>,
    message: Message,
    visibility: Duration,
) -> tokio::task::AbortHandle {
    let max = Duration::from_secs(ctx.queue_config.max_lease_secs);
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let every = (visibility / 3).max(Duration::from_millis(100));
        loop {
            tokio::time::sleep(every).await;
            if started.elapsed() + visibility > max {
                warn!("lease at queue.max_lease_secs: no more extensions");
                return;
            }
            if let Err(e) = ctx.queue.extend_lease(&message, visibility).await {
                warn!(error = %e, "lease extension failed");
            }
        }
    })
    .abort_handle()
}

/// Deletes acknowledged messages in batches of up to 10, at most 50 ms after the first.
async fn ack_batcher<Q: Queue, S: Store>(
    ctx: Arc<WorkerContext<Q, S>>,
    mut rx: mpsc::Receiver<Message>,
) {
    let mut batch = Vec::with_capacity(10);
    loop {
        let Some(first) = rx.recv().await else { break };
        batch.push(first);
        let flush_at = tokio::time::sleep(Duration::from_millis(50));
        tokio::pin!(flush_at);
        while batch.len() < 10 {
            tokio::select! {
                _ = &mut flush_at => break,
                next = rx.recv() => match next {
                    Some(m) => batch.push(m),
                    None => break,
                },
            }
        }
        if let Err(e) = ctx.queue.ack(&batch).await {
            // The messages reappear and are skipped as already done: a duplicate, not a loss.
            warn!(error = %e, count = batch.len(), "acknowledging failed");
        }
        batch.clear();
    }
}
