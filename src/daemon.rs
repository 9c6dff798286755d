//! `resizeq run`: wiring of config, adapters, logging and signals around [`crate::worker::run`].

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::adapters::{aws, s3::S3Store, sqs::SqsQueue};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::ports::Queue;
use crate::telemetry::{self, catalogue};
use crate::worker::{self, Mode, WorkerContext};

/// Cancels `token` on the first SIGTERM or SIGINT, naming it; exits the process at once on a
/// second one.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let name = wait_for_signal().await;
        info!(
            signal = name,
            "shutdown requested: no new messages, finishing jobs in flight"
        );
        token.cancel();
        let name = wait_for_signal().await;
        warn!(signal = name, "second signal: exiting now");
        std::process::exit(130);
    });
}

async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
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
    let ctx = Arc::new(WorkerContext::new(config, queue, store)?);

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
