//! `resizeq-presign`: the upload sidecar. Builds without the image codecs:
//! `cargo build --no-default-features --bin resizeq-presign`. Only wiring lives here.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use resizeq::adapters::aws;
use resizeq::adapters::presign_s3::SdkUploadSigner;
use resizeq::presign::{self, config::SidecarConfig};
use resizeq::signals;

#[derive(Parser)]
#[command(
    name = "resizeq-presign",
    version,
    about = "Short-lived, bound, authenticated upload URLs for S3"
)]
struct Cli {
    /// Config file (default: ./resizeq.toml if present). RESIZEQ_* variables override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Validate the config (file and environment) and exit: 0 if it is usable, 2 naming the
    /// bad key otherwise. Deployment checks run it on the config the Helm chart renders.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let config = match SidecarConfig::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "invalid configuration");
            return ExitCode::from(2);
        }
    };
    if cli.check {
        println!("config ok");
        return ExitCode::SUCCESS;
    }
    let runtime = match signals::runtime() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "resizeq-presign failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: SidecarConfig) -> resizeq::Result<()> {
    let shutdown = signals::cancel_on_signals("finishing requests in flight")?;
    let sdk = aws::sdk_config(&config.aws).await;
    let router = presign::build(&config, SdkUploadSigner::shared(&sdk, &config.aws)?)?;
    let listener = tokio::net::TcpListener::bind(&config.presign.listen)
        .await
        .map_err(|e| {
            resizeq::Error::config(format!("presign.listen {}: {e}", config.presign.listen))
        })?;
    tracing::info!(
        listen = %listener.local_addr().map_or(config.presign.listen.clone(), |a| a.to_string()),
        bucket = config.bucket(),
        "resizeq-presign listening"
    );
    presign::serve(listener, router, shutdown.cancelled_owned()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// JSON lines when stderr is not a terminal; `RESIZEQ_LOG` (or `RUST_LOG`) filters.
fn init_logging() {
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
        builder.json().flatten_event(true).init();
    }
}
