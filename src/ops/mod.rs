//! Operator tools: `resizeq dlq stats|peek|replay|purge` and `resizeq backfill`.
//!
//! - [`dlq`]: the dead-letter queue commands, over the
//!   [`DeadLetterQueue`](crate::ports::DeadLetterQueue) port so that the move logic (filters,
//!   limits, send-before-delete) is unit-tested in memory.
//! - [`backfill`]: lists a bucket prefix page by page through the [`Store`](crate::ports::Store)
//!   port and enqueues synthetic S3 events ([`Enqueue`](crate::ports::Enqueue)), or
//!   (`--direct`) runs the worker's own job handler on them in-process.
//!
//! Both use the worker's config and credentials; only their `run` functions pick the adapters
//! (SQS and S3). Results go to stdout (a summary line of `name=value` fields at the end),
//! progress bars and notes to stderr; progress bars only when stderr is a terminal. `replay`
//! and `backfill` stop cleanly on SIGTERM or Ctrl-C ([`crate::signals`]).

pub mod backfill;
pub mod dlq;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::signals;

pub use backfill::BackfillArgs;
pub use dlq::DlqAction;

/// `resizeq dlq …`: runs the command on its own runtime; the exit code for `main`.
pub fn main_dlq(config: &Config, action: DlqAction) -> ExitCode {
    block_on(dlq::run(config, action))
}

/// `resizeq backfill …`: as [`main_dlq`].
pub fn main_backfill(config: &Config, args: BackfillArgs) -> ExitCode {
    block_on(backfill::run(config, args))
}

/// Exit codes: 0 done, 1 failed (the error on stderr), 2 refused (a usage error such as
/// `purge` without `--yes`).
fn block_on(command: impl std::future::Future<Output = Result<ExitCode>>) -> ExitCode {
    let outcome = signals::runtime().and_then(|runtime| runtime.block_on(command));
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", e.message());
            ExitCode::FAILURE
        }
    }
}

/// A progress bar on stderr when it is a terminal, else a hidden one (logs and pipes get the
/// summary line only). `total` unknown: a spinner with the count.
pub fn progress_bar(total: Option<u64>, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template(&format!(
                "{what} [{{bar:30}}] {{pos}}/{{len}} ({{per_sec}}, eta {{eta}}) {{msg}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template(&format!(
                "{{spinner}} {what} {{pos}} ({{per_sec}}) {{msg}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Paces an operation to at most `per_sec` a second (none: unlimited). The first call passes
/// at once; later ones wait for their slot, without bursting after a slow stretch.
pub struct RateLimiter {
    interval: Option<tokio::time::Interval>,
}

impl RateLimiter {
    pub fn new(per_sec: Option<u32>) -> RateLimiter {
        let interval = per_sec.filter(|&n| n > 0).map(|n| {
            let mut interval = tokio::time::interval_at(
                Instant::now(),
                Duration::from_secs_f64(1.0 / f64::from(n)),
            );
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            interval
        });
        RateLimiter { interval }
    }

    pub async fn wait(&mut self) {
        if let Some(interval) = &mut self.interval {
            interval.tick().await;
        }
    }
}

/// `--since`: a date (`2024-05-01`, midnight UTC) or an RFC 3339 UTC time
/// (`2024-05-01T12:00:00Z`).
pub fn parse_since(text: &str) -> Result<SystemTime> {
    let text = text.trim();
    let full = if text.len() == 10 && !text.contains('T') {
        format!("{text}T00:00:00Z")
    } else {
        text.to_string()
    };
    humantime::parse_rfc3339_weak(full.trim_end_matches('Z')).map_err(|e| {
        Error::config(format!(
            "--since `{text}`: {e}; expected a date like 2024-05-01 or a UTC time like \
             2024-05-01T12:00:00Z"
        ))
    })
}

/// How long ago `t` was (zero for a time in the future).
pub fn age(t: SystemTime) -> Duration {
    SystemTime::now().duration_since(t).unwrap_or_default()
}

/// A token cancelled on the first SIGTERM or Ctrl-C, for a command that then finishes the
/// batch in hand and reports (a second signal exits at once).
pub fn cancel_on_signals() -> Result<tokio_util::sync::CancellationToken> {
    signals::cancel_on_signals("finishing the batch in hand, then reporting")
}

/// A duration as an operator reads it: `3h 12m`, `45s` (whole seconds, two units at most).
pub fn short_age(age: Duration) -> String {
    let secs = age.as_secs();
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_a_date_or_an_rfc3339_time() {
        let day = parse_since("2024-05-01").unwrap();
        assert_eq!(
            humantime::format_rfc3339_seconds(day).to_string(),
            "2024-05-01T00:00:00Z"
        );
        let time = parse_since("2024-05-01T12:30:00Z").unwrap();
        assert_eq!(
            time.duration_since(day).unwrap().as_secs(),
            12 * 3600 + 1800
        );
        for bad in ["yesterday", "2024-13-01", "01/05/2024", ""] {
            let e = parse_since(bad).unwrap_err();
            assert!(e.message().contains("--since"), "{bad}: {e}");
        }
    }

    #[test]
    fn ages_are_short() {
        assert_eq!(short_age(Duration::from_secs(42)), "42s");
        assert_eq!(short_age(Duration::from_secs(125)), "2m 5s");
        assert_eq!(
            short_age(Duration::from_secs(3 * 3600 + 12 * 60 + 5)),
            "3h 12m"
        );
        assert_eq!(short_age(Duration::from_secs(2 * 86_400 + 3600)), "2d 1h");
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limiter_paces_calls() {
        let mut limiter = RateLimiter::new(Some(4));
        let started = Instant::now();
        for _ in 0..9 {
            limiter.wait().await;
        }
        // The first passes at once, the other eight a quarter second apart.
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        let mut unlimited = RateLimiter::new(None);
        let started = Instant::now();
        for _ in 0..100 {
            unlimited.wait().await;
        }
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
