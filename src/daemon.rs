//! `resizeq run`: wiring of config, adapters, logging and signals around [`crate::worker::run`].

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::adapters::{aws, s3::S3Store, sqs::SqsQueue};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::worker::{self, Mode, WorkerContext};

/// Logs: JSON when stderr is not a terminal (containers), human-readable on a terminal.
/// `RESIZEQ_LOG` (or `RUST_LOG`) sets the filter; default `info`.
pub fn init_logging() {
    let filter = std::env::var("RESIZEQ_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    }
}

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
    info!(
        queue = %url,
        dlq = config.queue.dlq_url.as_deref().unwrap_or("(none: redrive policy)"),
        variants = ctx.pipeline.settings().variants.len(),
        config_fingerprint = ctx.pipeline.fingerprint(),
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
