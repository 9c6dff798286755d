//! `resizeq run`: the receive loop. Long-polls the queue while jobs run (no head-of-line
//! blocking on a slow image), bounds in-flight messages, CPU work and decode memory, keeps
//! leases alive, acknowledges in batches only after every variant is written, and drains on
//! shutdown.

pub mod job;
pub mod local;
mod metadata_value;
pub mod processor;
pub mod reason;
pub mod retry;
pub mod startup;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::FutureExt;

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn, Instrument};

use crate::config::{Config, QueueConfig};
use crate::error::{Error, ErrorKind, Result};
use crate::ports::{DeadLetter, Message, Queue, Store};
use crate::telemetry::{self, catalogue, health::Health, health::JobTicket};
use job::Decision;
pub use processor::{Processor, RecordOutcome};
use reason::{dead_letter_reason, MAX_REASON_BYTES};
pub use retry::backoff;
use retry::{NextTry, RetryPlan};
use startup::QueueFacts;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Everything a job needs, shared by all jobs: the queue, the job core and the loop's limits.
pub struct WorkerContext<Q, S> {
    pub queue: Q,
    pub processor: Processor<S>,
    pub queue_config: QueueConfig,
    pub max_in_flight: usize,
    /// A job still running after this long is stopped and its message retried.
    pub job_deadline: Duration,
    pub stats: Stats,
    /// What `/healthz` and `/readyz` answer; fed by the receive loop.
    pub health: Arc<Health>,
}

impl<Q, S: Store> WorkerContext<Q, S> {
    pub fn new(config: &Config, queue: Q, store: S) -> Result<Self> {
        Ok(WorkerContext {
            queue,
            processor: Processor::new(config, store)?,
            queue_config: config.queue.clone(),
            max_in_flight: config.worker.max_in_flight,
            job_deadline: Duration::from_secs(config.worker.job_deadline_secs),
            stats: Stats::default(),
            health: Arc::new(
                Health::new(Duration::from_secs(config.queue.wait_time_secs))
                    // The SDK's standard retry: 3 attempts, with backoff between them.
                    .with_call_time(
                        Duration::from_secs(config.aws.attempt_timeout_secs) * 3
                            + Duration::from_secs(30),
                    )
                    .with_stall_checks(
                        config.worker.max_in_flight,
                        Duration::from_secs(config.worker.job_deadline_secs),
                        Duration::from_secs(config.worker.stall_secs),
                    ),
            ),
        })
    }

    /// The processor's store.
    pub fn store(&self) -> &S {
        self.processor.store()
    }
}

/// How a message left this worker, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Processed,
    /// The source is gone, and so are its variants.
    Deleted,
    Skipped,
    Superseded,
    Ignored,
    /// Made visible again after a backoff (transient failure).
    Retried,
    DeadLettered,
    /// Given back unstarted at shutdown, or abandoned at the shutdown deadline.
    Released,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Processed => "processed",
            Outcome::Deleted => "deleted",
            Outcome::Skipped => "skipped",
            Outcome::Superseded => "superseded",
            Outcome::Ignored => "ignored",
            Outcome::Retried => "retried",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Released => "released",
        }
    }
}

impl From<RecordOutcome> for Outcome {
    fn from(outcome: RecordOutcome) -> Outcome {
        match outcome {
            RecordOutcome::Processed => Outcome::Processed,
            RecordOutcome::Deleted => Outcome::Deleted,
            RecordOutcome::Skipped => Outcome::Skipped,
            RecordOutcome::Superseded => Outcome::Superseded,
            RecordOutcome::Ignored => Outcome::Ignored,
        }
    }
}

/// Counts of message outcomes, kept in-process (tests, the exit summary) and mirrored to
/// `resizeq_messages_total{outcome}`.
#[derive(Debug, Default)]
pub struct Stats {
    pub received: AtomicU64,
    pub processed: AtomicU64,
    pub deleted: AtomicU64,
    pub skipped: AtomicU64,
    pub superseded: AtomicU64,
    pub ignored: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub released: AtomicU64,
}

impl Stats {
    pub fn record(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Processed => &self.processed,
            Outcome::Deleted => &self.deleted,
            Outcome::Skipped => &self.skipped,
            Outcome::Superseded => &self.superseded,
            Outcome::Ignored => &self.ignored,
            Outcome::Retried => &self.retried,
            Outcome::DeadLettered => &self.dead_lettered,
            Outcome::Released => &self.released,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        telemetry::count_outcome(outcome.as_str());
    }

    fn received(&self, message: &Message) {
        self.received.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(catalogue::MESSAGES_RECEIVED.name).increment(1);
        if let Some(age) = message
            .sent_at
            .and_then(|sent| SystemTime::now().duration_since(sent).ok())
        {
            metrics::histogram!(catalogue::MESSAGE_AGE.name).record(age.as_secs_f64());
        }
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
    let facts = startup::learn_queue(&ctx.queue, &ctx.queue_config, &ctx.health, &shutdown).await?;
    let Some(facts) = facts else {
        return Ok(());
    };
    let facts = Arc::new(facts);
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
        ctx.health.progress();
        // Room for at least one more message before polling; checking in with the health
        // state meanwhile, so that a worker busy with slow images is not reported wedged.
        let permit = loop {
            tokio::select! {
                _ = shutdown.cancelled() => break None,
                p = max_in_flight.clone().acquire_owned() => break Some(p.map_err(|_| Error::io("closed"))?),
                _ = tokio::time::sleep(Duration::from_secs(5)) => ctx.health.busy(),
            }
        };
        let Some(permit) = permit else { break };
        drop(permit);
        let room = max_in_flight
            .available_permits()
            .clamp(1, ctx.queue_config.max_messages as usize);
        // With no jobs running in until-empty mode, a short poll lets us check emptiness.
        let poll_wait = if mode == Mode::UntilEmpty {
            wait.min(Duration::from_secs(1))
        } else {
            wait
        };
        let poll_started = Instant::now();
        let received = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = ctx.queue.receive(room, poll_wait, ctx.queue_config.visibility_timeout_secs.map(Duration::from_secs)) => r,
        };
        if received.as_ref().is_ok_and(|m| !m.is_empty()) {
            // Empty polls are the long-poll wait, not the cost of receiving.
            telemetry::record_stage("receive", poll_started.elapsed());
        }
        while let Some(done) = jobs.try_join_next() {
            if let Err(e) = done {
                error!(error = %e, "job task failed");
            }
        }
        let messages = match received {
            Ok(messages) => {
                poll_failures = 0;
                ctx.health.poll_ok();
                messages
            }
            Err(e) => {
                poll_failures += 1;
                ctx.health.poll_failed();
                metrics::counter!(catalogue::POLL_ERRORS.name).increment(1);
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
                match ctx.queue.depth().await {
                    Ok(depth) if depth.is_empty() => {
                        empty_checks += 1;
                        if empty_checks >= 2 {
                            info!("queue is empty");
                            break;
                        }
                    }
                    Ok(_) => empty_checks = 0,
                    Err(e) if e.is_permanent() => return Err(e),
                    // A blip: not known to be empty; the next empty poll checks again.
                    Err(e) => {
                        empty_checks = 0;
                        metrics::counter!(catalogue::POLL_ERRORS.name).increment(1);
                        warn!(error = %e, "queue depth check failed; checking again");
                    }
                }
            }
            continue;
        }
        empty_checks = 0;
        for message in messages {
            ctx.stats.received(&message);
            let permit = max_in_flight.clone().try_acquire_owned().ok();
            let ctx = ctx.clone();
            let ack_tx = ack_tx.clone();
            let draining = draining.clone();
            let facts = facts.clone();
            let span = tracing::info_span!(
                "message",
                message_id = %message.id,
                receive_count = message.receive_count,
            );
            // Continue the uploader's trace (W3C traceparent or X-Ray header), if any.
            let _ = span.set_parent(telemetry::otel::remote_context(&message));
            jobs.spawn(
                async move {
                    let _permit = permit;
                    run_job(&ctx, message, &facts, &ack_tx, &draining).await;
                }
                .instrument(span),
            );
        }
    }

    // Drain: let jobs in flight finish within the deadline.
    info!(in_flight = jobs.len(), "stopping: finishing jobs in flight");
    ctx.health.start_draining();
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
/// The job gets `ctx.job_deadline`; a job still running then (a stalled call) is stopped and
/// retried as a transient failure.
async fn run_job<Q: Queue, S: Store>(
    ctx: &Arc<WorkerContext<Q, S>>,
    message: Message,
    facts: &QueueFacts,
    acks: &mpsc::Sender<Message>,
    draining: &CancellationToken,
) {
    // Records the outcome, duration and in-flight count on drop: also when the job is aborted
    // at the shutdown deadline (counted as released: the message reappears by itself).
    let mut guard = JobGuard::start(ctx);
    if draining.is_cancelled() {
        guard.outcome = release(ctx, &message).await;
        return;
    }
    // Stops extending the lease when the job ends, also when it is aborted at the shutdown
    // deadline: the message must then reappear after one visibility timeout.
    let _lease = AbortOnDrop(keep_lease(ctx.clone(), message.clone(), facts.visibility));
    // A panic anywhere in the job (a decoder bug on a hostile file) is that message's
    // permanent failure; the worker goes on.
    let job = std::panic::AssertUnwindSafe(job::handle(ctx, &message, draining)).catch_unwind();
    let decision = match tokio::time::timeout(ctx.job_deadline, job).await {
        Ok(done) => done.unwrap_or_else(|_| {
            Decision::DeadLetter(Error::new(
                ErrorKind::Panic,
                "the job panicked on this message",
            ))
        }),
        Err(_) => Decision::Retry(Error::new(
            ErrorKind::Service,
            format!(
                "the job was still running at its deadline of {} s (worker.job_deadline_secs): \
                 stopped",
                ctx.job_deadline.as_secs()
            ),
        )),
    };
    guard.outcome = match decision {
        Decision::Ack(outcome) => {
            info!(outcome = outcome.as_str(), "done");
            if acks.send(message).await.is_err() {
                error!("ack channel closed");
            }
            outcome.into()
        }
        Decision::Retry(e) => {
            count_error(&e);
            let age = age(&message);
            match facts.retry.after_failure(message.receive_count, age) {
                NextTry::In(delay) => {
                    warn!(error = %e, retry_in_s = delay.as_secs(), "transient failure, retrying later");
                    if let Err(e) = ctx.queue.retry_after(&message, delay).await {
                        warn!(error = %e, "could not delay the retry; the message reappears after its visibility timeout");
                    }
                    Outcome::Retried
                }
                NextTry::Exhausted => {
                    warn!(error = %e, "transient failure on the last receive planned");
                    let exhausted = Error::new(
                        ErrorKind::TransientExhausted,
                        format!(
                            "failed on all {} receives planned within the redrive policy; last \
                             error: {}",
                            message.receive_count,
                            e.message()
                        ),
                    );
                    dead_letter(ctx, &message, exhausted, &facts.retry).await
                }
                NextTry::Expiring => {
                    warn!(error = %e, "transient failure, and no time left before the queue deletes the message");
                    let secs = |d: Option<Duration>| {
                        humantime::format_duration(Duration::from_secs(
                            d.unwrap_or_default().as_secs(),
                        ))
                    };
                    let expiring = Error::new(
                        ErrorKind::TransientExhausted,
                        format!(
                            "still failing {} after it was sent, too close to the queue's \
                             MessageRetentionPeriod ({}) for another retry (receive {}); last \
                             error: {}",
                            secs(age),
                            secs(facts.retry.retention()),
                            message.receive_count,
                            e.message()
                        ),
                    );
                    dead_letter(ctx, &message, expiring, &facts.retry).await
                }
            }
        }
        Decision::DeadLetter(e) => {
            count_error(&e);
            dead_letter(ctx, &message, e, &facts.retry).await
        }
        Decision::Release => {
            info!("shutting down: released before its work started");
            release(ctx, &message).await
        }
    };
}

/// When a message that is not done comes back: its planned retry delay, or (on the last
/// receive) soon, for the redrive policy to move it.
fn retry_delay(plan: &RetryPlan, message: &Message) -> Duration {
    match plan.after_failure(message.receive_count, age(message)) {
        NextTry::In(delay) => delay,
        // The redrive policy takes it from here.
        NextTry::Exhausted | NextTry::Expiring if plan.max_receives().is_some() => {
            Duration::from_secs(1)
        }
        // No policy to take it, nor a DLQ: running it every second until the queue deletes it
        // would only burn CPU; the longest regular delay instead.
        NextTry::Exhausted | NextTry::Expiring => plan.longest_delay(),
    }
}

/// How long ago the message was first sent, when the queue says (zero if it says a time ahead
/// of this machine's clock, so that the retention still bounds the retries).
fn age(message: &Message) -> Option<Duration> {
    message
        .sent_at
        .map(|sent| SystemTime::now().duration_since(sent).unwrap_or_default())
}

fn count_error(e: &Error) {
    metrics::counter!(catalogue::ERRORS.name, "error_kind" => e.kind().as_str()).increment(1);
}

/// In-flight gauge, message duration and outcome counter of one job, recorded on drop; the
/// job is known to the health checks meanwhile.
struct JobGuard<'a> {
    stats: &'a Stats,
    health: &'a Health,
    ticket: Option<JobTicket>,
    started: Instant,
    outcome: Outcome,
}

impl<'a> JobGuard<'a> {
    fn start<Q, S>(ctx: &'a WorkerContext<Q, S>) -> JobGuard<'a> {
        metrics::gauge!(catalogue::JOBS_IN_FLIGHT.name).increment(1.0);
        JobGuard {
            stats: &ctx.stats,
            health: &ctx.health,
            ticket: Some(ctx.health.job_started()),
            started: Instant::now(),
            outcome: Outcome::Released,
        }
    }
}

impl Drop for JobGuard<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.health.job_finished(ticket);
        }
        metrics::gauge!(catalogue::JOBS_IN_FLIGHT.name).decrement(1.0);
        metrics::histogram!(catalogue::MESSAGE_DURATION.name)
            .record(self.started.elapsed().as_secs_f64());
        self.stats.record(self.outcome);
    }
}

async fn release<Q: Queue, S: Store>(ctx: &Arc<WorkerContext<Q, S>>, message: &Message) -> Outcome {
    if let Err(e) = ctx.queue.retry_after(message, Duration::ZERO).await {
        warn!(error = %e, "could not release the message; it reappears after its visibility timeout");
    }
    Outcome::Released
}

/// Sends to the DLQ tried in a row (1 s, then 2 s apart) before the message goes back.
const DEAD_LETTER_ATTEMPTS: u32 = 3;

async fn dead_letter<Q: Queue, S: Store>(
    ctx: &Arc<WorkerContext<Q, S>>,
    message: &Message,
    e: Error,
    plan: &RetryPlan,
) -> Outcome {
    if !ctx.queue.has_dead_letter_queue() {
        // Never delete what we could not process: the redrive policy moves it once its
        // receive count runs out.
        let delay = retry_delay(plan, message);
        warn!(error = %e, "permanent failure and no queue.dlq_url: leaving it to the redrive policy");
        let _ = ctx.queue.retry_after(message, delay).await;
        return Outcome::Retried;
    }
    let reason = DeadLetter {
        error_kind: e.kind().as_str().to_string(),
        error_reason: dead_letter_reason(e.message(), MAX_REASON_BYTES),
        first_failed_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string(),
    };
    // A failed send is tried again here, within the lease, before the message goes back: each
    // trip back costs a receive, and the redrive policy's copy would carry no reason.
    let mut pause = Duration::from_secs(1);
    for attempt in 1..=DEAD_LETTER_ATTEMPTS {
        match ctx.queue.dead_letter(message, &reason).await {
            Ok(()) => {
                warn!(error_kind = %reason.error_kind, error = %e, "dead-lettered");
                return Outcome::DeadLettered;
            }
            Err(send) if attempt < DEAD_LETTER_ATTEMPTS => {
                warn!(error = %send, attempt, "dead-lettering failed; trying again");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Err(send) => {
                warn!(error = %send, original = %e, "dead-lettering failed; retrying the message later");
            }
        }
    }
    let _ = ctx
        .queue
        .retry_after(message, retry_delay(plan, message))
        .await;
    Outcome::Retried
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
            match ctx.queue.extend_lease(&message, visibility).await {
                Ok(()) => metrics::counter!(catalogue::LEASE_EXTENSIONS.name).increment(1),
                Err(e) => warn!(error = %e, "lease extension failed"),
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
        if let Err(e) = telemetry::timed("ack", ctx.queue.ack(&batch)).await {
            // The messages reappear and are skipped as already done: a duplicate, not a loss.
            warn!(error = %e, count = batch.len(), "acknowledging failed");
        }
        batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(ago: Duration) -> Message {
        Message {
            id: "m".into(),
            receipt: "r".into(),
            body: String::new(),
            receive_count: 50,
            sent_at: Some(SystemTime::now() - ago),
            attributes: Default::default(),
        }
    }

    fn plan(max_receives: Option<u32>) -> RetryPlan {
        RetryPlan::new(&QueueConfig::default(), max_receives)
            .with_retention(Some(Duration::from_secs(4 * 86400)))
    }

    #[test]
    fn a_message_about_to_expire_is_not_run_every_second_without_a_dlq() {
        // 4 days' retention: retries end at 4 days less an hour.
        let near_the_end = sent(Duration::from_secs(4 * 86400 - 3600 - 2));
        // With no redrive policy (and, here, no DLQ) nothing would ever take it.
        assert_eq!(
            retry_delay(&plan(None), &near_the_end),
            Duration::from_secs(900)
        );
        // With one, the policy moves it on its next receive.
        let mut last = near_the_end.clone();
        last.receive_count = 2;
        assert_eq!(retry_delay(&plan(Some(2)), &last), Duration::from_secs(1));
    }

    #[test]
    fn a_sent_time_ahead_of_this_clock_counts_as_just_sent() {
        let mut ahead = sent(Duration::ZERO);
        ahead.sent_at = Some(SystemTime::now() + Duration::from_secs(60));
        assert_eq!(age(&ahead), Some(Duration::ZERO));
        let unknown = Message {
            sent_at: None,
            ..ahead
        };
        assert_eq!(age(&unknown), None);
    }
}
