//! `resizeq run`: wiring of config, adapters, logging and signals around [`crate::worker::run`].

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::adapters::{aws, events_aws, s3::S3Store, sqs::SqsQueue};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::ports::Queue;
use crate::signals;
use crate::telemetry::{self, catalogue};
use crate::worker::{self, Mode, WorkerContext};

/// `resizeq run` on its own runtime until the first SIGTERM or SIGINT (the second exits at
/// once); the exit code for `main`.
pub fn main(config: &Config, mode: Mode) -> ExitCode {
    let runtime = match signals::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {}", e.message());
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = signals::cancel_on_signals("no new messages, finishing jobs in flight")?;
        run(config, mode, shutdown).await
    });
    // worker::run has already waited the shutdown timeout for jobs in flight; do not let an
    // abandoned image decode on a blocking thread hold the process past it.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "resizeq stopped on an error");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `resizeq run`: the SQS worker when `queue.url` is set, else local mode.
pub async fn run(config: &Config, mode: Mode, shutdown: CancellationToken) -> Result<()> {
    match &config.queue.url {
        Some(_) => run_queue(config, mode, shutdown).await,
        None => {
            info!(root = %config.worker.local_root, "no queue.url: local mode");
            crate::worker::local::run_local(config, mode, shutdown).await
        }
    }
}

/// Runs the SQS worker until shutdown (or until the queue is empty).
pub async fn run_queue(config: &Config, mode: Mode, shutdown: CancellationToken) -> Result<()> {
    let url = config
        .queue
        .url
        .clone()
        .ok_or_else(|| Error::config("queue.url is not set"))?;
    let sdk = aws::sdk_config(&config.aws).await;
    let queue = SqsQueue::new(
        aws::sqs_client(&sdk),
        url.clone(),
        config.queue.dlq_url.clone(),
    );
    let store = S3Store::new(aws::s3_client(&sdk, &config.aws));
    let mut ctx = WorkerContext::new(config, queue, store)?;
    let events = config.events.target()?;
    if let Some(target) = &events {
        ctx.processor = ctx
            .processor
            .with_events(events_aws::publisher(target, &sdk));
    }
    let ctx = Arc::new(ctx);

    let listener = telemetry::server::bind(&config.metrics.listen).await?;
    let prometheus = telemetry::install_prometheus()?;
    metrics::gauge!(catalogue::MEMORY_BUDGET.name)
        .set(config.worker.memory_budget_mib as f64 * (1 << 20) as f64);
    telemetry::server::spawn(listener, Some(prometheus), ctx.health.clone());
    let dlq = config
        .queue
        .dlq_url
        .as_ref()
        .map(|dlq| SqsQueue::new(aws::sqs_client(&sdk), dlq.clone(), None));
    tokio::spawn(poll_queue_depths(ctx.clone(), dlq));

    info!(
        queue = %url,
        dlq = config.queue.dlq_url.as_deref().unwrap_or("(none: redrive policy)"),
        events = %events.map_or("(none)".into(), |t| t.to_string()),
        variants = ctx.processor.pipeline().settings().variants.len(),
        config_fingerprint = ctx.processor.pipeline().fingerprint(),
        "resizeq worker starting"
    );
    let timeout = Duration::from_secs(config.worker.shutdown_timeout_secs);
    worker::run(ctx.clone(), mode, timeout, shutdown).await?;
    let s = &ctx.stats;
    info!(
        received = s.get(&s.received),
        processed = s.get(&s.processed),
        deleted = s.get(&s.deleted),
        skipped = s.get(&s.skipped),
        superseded = s.get(&s.superseded),
        ignored = s.get(&s.ignored),
        retried = s.get(&s.retried),
        dead_lettered = s.get(&s.dead_lettered),
        released = s.get(&s.released),
        "resizeq worker stopped"
    );
    Ok(())
}

/// Keeps `resizeq_queue_messages{queue,state}` current for the dashboard and the alerts (a
/// backlog nobody processes, a growing DLQ): one GetQueueAttributes per queue every 30 s.
async fn poll_queue_depths(ctx: Arc<WorkerContext<SqsQueue, S3Store>>, dlq: Option<SqsQueue>) {
    let mut every = tokio::time::interval(Duration::from_secs(30));
    loop {
        every.tick().await;
        let queues = std::iter::once(("source", &ctx.queue)).chain(dlq.iter().map(|q| ("dlq", q)));
        for (name, queue) in queues {
            match queue.depth().await {
                Ok(depth) => {
                    for (state, count) in [
                        ("visible", depth.visible),
                        ("in_flight", depth.in_flight),
                        ("delayed", depth.delayed),
                    ] {
                        metrics::gauge!(catalogue::QUEUE_MESSAGES.name, "queue" => name, "state" => state)
                            .set(count as f64);
                    }
                }
                Err(e) => warn!(queue = name, error = %e, "queue depth unavailable"),
            }
        }
    }
}
