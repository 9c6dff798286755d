//! `resizeq dlq stats|peek|replay|purge`: the dead-letter queue, as an operator sees it.
//!
//! The commands run over the [`DeadLetterQueue`] port, just what they need from SQS: the move
//! logic is where a bug loses messages, so it is unit-tested against
//! [`MemoryDlq`](crate::adapters::memory_dlq::MemoryDlq), which can fail a send or a delete on
//! demand. This module holds the command line and its wiring to SQS; each command is in its
//! own module, over the port.
//!
//! - [`scan`]: reading messages without consuming them (held under a lease, then released).
//! - [`stats`], [`peek`], [`replay`] (natively, or [`manual_move`]), [`purge`]: the
//!   commands.

mod manual_move;
mod peek;
mod purge;
mod replay;
mod scan;
mod stats;
#[cfg(test)]
mod testing;

use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use super::progress_bar;
use crate::adapters::sqs_dlq::SqsDeadLetterQueue;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::ports::{DeadLetterQueue, MAX_VISIBILITY_SECS};

pub use peek::{peek, render_peeked, ObjectRef, Peeked};
pub use purge::{purge, render_purge, PurgeReport};
pub use replay::{replay, ReplayMode, ReplayOptions, ReplayReport};
pub use stats::{render_stats, stats, DlqStats};

/// Which dead-letter queue, and how long messages read stay hidden.
#[derive(Debug, Clone, clap::Args)]
pub struct DlqTarget {
    /// The dead-letter queue. Default: queue.dlq_url, else the RedrivePolicy target of
    /// queue.url.
    #[arg(long, value_name = "URL")]
    pub dlq: Option<String>,
    /// How long messages this command reads stay invisible to others if it dies before making
    /// them visible again.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub lease_secs: u64,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum DlqAction {
    /// Messages visible and in flight, the oldest one's age, counts by error_kind.
    Stats {
        #[command(flatten)]
        target: DlqTarget,
        #[arg(long)]
        json: bool,
        /// Read at most this many messages to count kinds and find the oldest.
        #[arg(long, value_name = "N", default_value_t = 10_000)]
        scan_max: usize,
    },
    /// Show messages with their reasons, bucket and key, without consuming them.
    Peek {
        #[command(flatten)]
        target: DlqTarget,
        #[arg(long, value_name = "N", default_value_t = 10)]
        max: usize,
        #[arg(long)]
        json: bool,
    },
    /// Move messages back to their source queue (send there first, then delete here).
    Replay {
        #[command(flatten)]
        target: DlqTarget,
        /// Move at most N messages (moves them one by one).
        #[arg(long, value_name = "N")]
        max: Option<u64>,
        /// At most this many messages a second.
        #[arg(long, value_name = "PER_SEC")]
        rate: Option<u32>,
        /// Only messages with this error_kind (comma-separated list; `none` for messages
        /// without one). Moves them one by one.
        #[arg(long, value_name = "KIND", value_delimiter = ',')]
        error_kind: Vec<String>,
        /// Count what would be moved; move nothing.
        #[arg(long)]
        dry_run: bool,
        /// With a native move task, follow its progress until it ends.
        #[arg(long)]
        wait: bool,
        /// Send every message here instead of its source_queue attribute (default for
        /// messages without one: queue.url).
        #[arg(long, value_name = "URL")]
        to: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Delete every message (refuses without --yes); prints what it removed.
    Purge {
        #[command(flatten)]
        target: DlqTarget,
        #[arg(long)]
        yes: bool,
        /// Read at most this many messages first to report their kinds.
        #[arg(long, value_name = "N", default_value_t = 10_000)]
        scan_max: usize,
    },
}

impl DlqAction {
    fn target(&self) -> &DlqTarget {
        match self {
            DlqAction::Stats { target, .. }
            | DlqAction::Peek { target, .. }
            | DlqAction::Replay { target, .. }
            | DlqAction::Purge { target, .. } => target,
        }
    }
}

fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// Runs one `resizeq dlq` command against SQS with the worker's config and credentials.
pub async fn run(config: &Config, action: DlqAction) -> Result<ExitCode> {
    let target = action.target().clone();
    if target.lease_secs == 0 || target.lease_secs > MAX_VISIBILITY_SECS {
        return Err(Error::config(format!(
            "--lease-secs: SQS allows 1 to {MAX_VISIBILITY_SECS}"
        )));
    }
    let lease = Duration::from_secs(target.lease_secs);
    let dlq = SqsDeadLetterQueue::from_config(config, target.dlq.as_deref()).await?;
    let url = dlq.url().to_string();
    let mut note = |text: String| eprintln!("{text}");
    match action {
        DlqAction::Stats { json, scan_max, .. } => {
            let s = stats(&dlq, scan_max.max(1), lease, &mut note).await?;
            if json {
                println!("{}", to_json(&s));
            } else {
                print!("{}", render_stats(&s));
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqAction::Peek { max, json, .. } => {
            let peeked = peek(&dlq, max.max(1), lease, &mut note).await?;
            if json {
                println!("{}", to_json(&peeked));
            } else {
                print!("{}", render_peeked(&peeked));
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqAction::Replay {
            max,
            rate,
            error_kind,
            dry_run,
            wait,
            to,
            json,
            ..
        } => {
            if rate == Some(0) {
                return Err(Error::config("--rate: at least 1 message a second"));
            }
            let options = ReplayOptions {
                max,
                per_sec: rate,
                error_kinds: error_kind,
                dry_run,
                wait,
                to,
                lease,
            };
            let total = match max {
                Some(n) => Some(n),
                None => Some(dlq.depth().await?.visible),
            };
            let bar = progress_bar(total, if dry_run { "counting" } else { "replaying" });
            let cancel = super::cancel_on_signals()?;
            let mut note = |text: String| bar.suspend(|| eprintln!("{text}"));
            let report = replay(
                &dlq,
                &options,
                config.queue.url.as_deref(),
                &bar,
                &cancel,
                &mut note,
            )
            .await;
            bar.finish_and_clear();
            let report = report?;
            if let Some(error) = &report.error {
                eprintln!("error: {error}");
            }
            if json {
                println!("{}", to_json(&report));
            }
            println!("{}", report.summary(&url));
            Ok(if report.succeeded() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        DlqAction::Purge { yes, scan_max, .. } => {
            if !yes {
                let depth = dlq.depth().await?;
                eprintln!(
                    "refusing to purge {url} ({} messages) without --yes",
                    depth.visible + depth.in_flight + depth.delayed
                );
                return Ok(ExitCode::from(2));
            }
            let report = purge(&dlq, scan_max.max(1), lease, &mut note).await?;
            print!("{}", render_purge(&report));
            Ok(ExitCode::SUCCESS)
        }
    }
}
