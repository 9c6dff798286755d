//! `resizeq`: the worker and its operator commands. Only wiring lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use resizeq::config::Config;
use resizeq::worker::Mode;

// jemalloc also serves the C codecs (unprefixed malloc) and keeps freed pages for the next
// image instead of returning every large buffer to the kernel as glibc does.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "resizeq",
    version,
    about = "Thumbnails of every upload, from S3 events on SQS"
)]
struct Cli {
    /// Config file (default: ./resizeq.toml if present). RESIZEQ_* variables override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume S3 events from SQS and write the variants (queue.url); with no queue
    /// configured, watch the local folder worker.local_root instead.
    Run {
        /// Exit 0 once the queue is empty (visible, in flight and delayed all 0, twice).
        #[arg(long)]
        until_empty: bool,
    },
    /// Run the configured pipeline on local files and print one line per variant.
    Resize {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Where the variants go, under their destination keys.
        #[arg(long, default_value = "out")]
        out: PathBuf,
    },
    /// Exit 0 if the worker's /healthz (on metrics.listen) answers 200: the container
    /// HEALTHCHECK (the slim image has no curl).
    Healthcheck,
    /// Inspect, replay or purge the dead-letter queue (queue.dlq_url).
    Dlq {
        #[command(subcommand)]
        action: resizeq::ops::DlqAction,
    },
    /// Reprocess existing objects: enqueue an S3 event per object (or process with --direct).
    Backfill(resizeq::ops::BackfillArgs),
    /// Print or validate the effective configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print the effective config (defaults, file, environment), secrets redacted.
    Show,
    /// Validate the config; exits non-zero naming the bad key.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {}", e.message());
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Run { until_empty } => {
            let _tracing = resizeq::telemetry::otel::init("resizeq");
            let mode = if until_empty {
                Mode::UntilEmpty
            } else {
                Mode::Forever
            };
            resizeq::daemon::main(&config, mode)
        }
        Command::Resize { files, out } => {
            let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
            match resizeq::cli::resize(&config, &files, &out, &mut stdout, &mut stderr) {
                Ok(0) => ExitCode::SUCCESS,
                Ok(_) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("error: {}", e.message());
                    ExitCode::from(2)
                }
            }
        }
        Command::Healthcheck => {
            match resizeq::telemetry::server::healthcheck(&config.metrics.listen) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("unhealthy: {}", e.message());
                    ExitCode::FAILURE
                }
            }
        }
        Command::Dlq { action } => resizeq::ops::main_dlq(&config, action),
        Command::Backfill(args) => resizeq::ops::main_backfill(&config, args),
        Command::Config {
            action: ConfigAction::Show,
        } => {
            print!(
                "{}{}",
                resizeq::worker::retry::schedule_note(&config.queue),
                config.to_toml()
            );
            ExitCode::SUCCESS
        }
        Command::Config {
            action: ConfigAction::Check,
        } => {
            println!("config ok");
            ExitCode::SUCCESS
        }
    }
}
