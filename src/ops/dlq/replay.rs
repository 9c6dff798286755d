//! `resizeq dlq replay`: moves messages back to their source queue, natively (SQS's
//! StartMessageMoveTask) when nothing restricts the move, else one by one, send first and
//! delete after the send succeeded.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use indicatif::ProgressBar;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::scan::Held;
use crate::error::Result;
use crate::ops::RateLimiter;
use crate::ports::{DeadLetterQueue, DlqMessage, MoveTaskStatus, MAX_BATCH};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayOptions {
    /// Move at most this many.
    pub max: Option<u64>,
    /// Messages a second.
    pub per_sec: Option<u32>,
    /// Only messages with one of these `error_kind`s (empty: all).
    pub error_kinds: Vec<String>,
    pub dry_run: bool,
    /// Follow a native move task until it ends.
    pub wait: bool,
    /// The destination for every message, over their `source_queue` attribute.
    pub to: Option<String>,
    /// How long received messages stay invisible if this command dies.
    pub lease: Duration,
}

impl ReplayOptions {
    fn matches(&self, message: &DlqMessage) -> bool {
        self.error_kinds.is_empty() || self.error_kinds.iter().any(|k| k == message.error_kind())
    }

    /// SQS's own move task can move everything at a rate but cannot count or filter.
    fn can_use_native_move(&self) -> bool {
        !self.dry_run && self.max.is_none() && self.error_kinds.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplayMode {
    /// StartMessageMoveTask.
    Native,
    /// Send to the source queue, then delete from the dead-letter queue, one by one.
    Manual,
    DryRun,
}

impl ReplayMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplayMode::Native => "native",
            ReplayMode::Manual => "manual",
            ReplayMode::DryRun => "dry-run",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    pub mode: ReplayMode,
    /// Moved (sent to the source queue and deleted here). Native: as the task reports it.
    pub moved: u64,
    /// Dry run: what would have been moved.
    pub would_move: u64,
    /// Seen and left in place: another `error_kind`, past `--max`, or arrived after the
    /// replay started.
    pub left: u64,
    /// Sent but then not deleted here: in both queues now (the worker's idempotency absorbs
    /// the duplicate).
    pub duplicated: u64,
    /// Not moved because of an error (the first one is in `error`).
    pub failed: u64,
    /// Moved per destination queue.
    pub destinations: BTreeMap<String, u64>,
    /// Moved (or would be) per `error_kind`.
    pub by_error_kind: BTreeMap<String, u64>,
    pub task: Option<MoveTaskStatus>,
    pub error: Option<String>,
    pub interrupted: bool,
}

impl ReplayReport {
    fn new(mode: ReplayMode) -> ReplayReport {
        ReplayReport {
            mode,
            moved: 0,
            would_move: 0,
            left: 0,
            duplicated: 0,
            failed: 0,
            destinations: BTreeMap::new(),
            by_error_kind: BTreeMap::new(),
            task: None,
            error: None,
            interrupted: false,
        }
    }

    pub fn succeeded(&self) -> bool {
        self.failed == 0
            && self.error.is_none()
            && !self.interrupted
            && self
                .task
                .as_ref()
                .is_none_or(|t| !t.is_finished() || t.status == "COMPLETED")
    }

    /// One line of `name=value` fields.
    pub fn summary(&self, queue: &str) -> String {
        let mut line = format!("replay {queue}: mode={}", self.mode.as_str());
        if self.mode == ReplayMode::DryRun {
            line.push_str(&format!(" would_move={}", self.would_move));
        } else {
            line.push_str(&format!(" moved={}", self.moved));
        }
        line.push_str(&format!(
            " left={} duplicated={} failed={}",
            self.left, self.duplicated, self.failed
        ));
        for (kind, n) in &self.by_error_kind {
            line.push_str(&format!(" kind.{kind}={n}"));
        }
        if let Some(task) = &self.task {
            line.push_str(&format!(" task_status={}", task.status));
        }
        if self.interrupted {
            line.push_str(" interrupted=true");
        }
        line
    }
}

/// Moves messages back to their source queue: natively when nothing restricts the move and
/// the endpoint supports it, else one by one (send first, delete after the send succeeded).
/// `default_source` (`queue.url`) is the destination of messages without a `source_queue`
/// attribute when `--to` is not given.
pub async fn replay<D: DeadLetterQueue>(
    dlq: &D,
    options: &ReplayOptions,
    default_source: Option<&str>,
    progress: &ProgressBar,
    cancel: &CancellationToken,
    note: &mut dyn FnMut(String),
) -> Result<ReplayReport> {
    if options.can_use_native_move() {
        let destination = options.to.as_deref().or(default_source);
        match dlq.start_move_task(destination, options.per_sec).await {
            Ok(handle) => {
                note(format!(
                    "started a native move task to {} (handle {handle})",
                    destination.unwrap_or("the queues the messages came from")
                ));
                return follow_move_task(dlq, &handle, options.wait, progress, cancel, note).await;
            }
            Err(e) => note(format!(
                "note: no native move ({}); moving the messages one by one instead",
                e.message()
            )),
        }
    }
    manual_move(dlq, options, default_source, progress, cancel, note).await
}

async fn follow_move_task<D: DeadLetterQueue>(
    dlq: &D,
    handle: &str,
    wait: bool,
    progress: &ProgressBar,
    cancel: &CancellationToken,
    note: &mut dyn FnMut(String),
) -> Result<ReplayReport> {
    let mut report = ReplayReport::new(ReplayMode::Native);
    loop {
        let status = dlq.move_task(handle).await?;
        if let Some(status) = &status {
            if let Some(total) = status.to_move {
                progress.set_length(total);
            }
            progress.set_position(status.moved);
            report.moved = status.moved;
        }
        report.task = status.clone();
        let finished = status.as_ref().is_none_or(MoveTaskStatus::is_finished);
        if !wait || finished {
            break;
        }
        let cancelled = tokio::select! {
            _ = cancel.cancelled() => true,
            _ = tokio::time::sleep(Duration::from_secs(2)) => false,
        };
        if cancelled {
            note("stopped following; the move task goes on".to_string());
            break;
        }
    }
    if let Some(task) = &report.task {
        if let Some(reason) = &task.failure_reason {
            report.error = Some(format!("move task {}: {reason}", task.status));
        }
    }
    Ok(report)
}

async fn manual_move<D: DeadLetterQueue>(
    dlq: &D,
    options: &ReplayOptions,
    default_source: Option<&str>,
    progress: &ProgressBar,
    cancel: &CancellationToken,
    note: &mut dyn FnMut(String),
) -> Result<ReplayReport> {
    let mode = if options.dry_run {
        ReplayMode::DryRun
    } else {
        ReplayMode::Manual
    };
    let mut report = ReplayReport::new(mode);
    // Everything received and not moved: made visible again at the end.
    let mut held = Held::default();
    let mut limiter = RateLimiter::new(options.per_sec.filter(|_| !options.dry_run));
    let limit = options.max.unwrap_or(u64::MAX);
    // Messages that arrive after we started are left for another run: with a worker running,
    // a replayed message that fails again comes back with a new id, and moving it again
    // would go round in circles.
    let started = SystemTime::now();
    let done = |r: &ReplayReport| r.moved + r.would_move + r.failed;
    let result: Result<()> = async {
        'receive: while done(&report) < limit && report.error.is_none() {
            if cancel.is_cancelled() {
                report.interrupted = true;
                break;
            }
            // No more at once than the rate moves in a second, so the lease covers the batch.
            let want = (limit - done(&report))
                .min(MAX_BATCH as u64)
                .min(options.per_sec.map_or(u64::MAX, u64::from))
                .max(1) as usize;
            let batch = dlq.receive(want, options.lease).await?;
            if batch.is_empty() {
                break;
            }
            let mut new = 0;
            for message in batch {
                if held.seen(&message.id) {
                    // Its lease ran out while we worked: hold it again (new receipt).
                    held.hold(message);
                    continue;
                }
                new += 1;
                let arrived_since = message.sent_at.is_some_and(|t| t > started);
                if done(&report) >= limit
                    || !options.matches(&message)
                    || arrived_since
                    || report.error.is_some()
                {
                    report.left += 1;
                    held.hold(message);
                    continue;
                }
                let kind = message.error_kind().to_string();
                if options.dry_run {
                    report.would_move += 1;
                    *report.by_error_kind.entry(kind).or_insert(0) += 1;
                    held.hold(message);
                    progress.inc(1);
                    continue;
                }
                let destination = options
                    .to
                    .as_deref()
                    .or(message.attribute("source_queue"))
                    .or(default_source);
                let Some(destination) = destination.map(String::from) else {
                    report.failed += 1;
                    report.error = Some(format!(
                        "message {}: no source_queue attribute and no queue.url: pass --to URL",
                        message.id
                    ));
                    held.hold(message);
                    continue;
                };
                let cancelled = tokio::select! {
                    _ = cancel.cancelled() => true,
                    _ = limiter.wait() => false,
                };
                if cancelled {
                    report.interrupted = true;
                    held.hold(message);
                    break 'receive;
                }
                // Send first: a crash before the delete leaves a duplicate, never a loss.
                if let Err(e) = dlq.send_copy(&destination, &message).await {
                    report.failed += 1;
                    report.error = Some(format!("message {}: {}", message.id, e.message()));
                    held.hold(message);
                    continue;
                }
                report.moved += 1;
                *report.by_error_kind.entry(kind).or_insert(0) += 1;
                *report.destinations.entry(destination).or_insert(0) += 1;
                progress.inc(1);
                if let Err(e) = dlq.delete(&message).await {
                    report.duplicated += 1;
                    report.error = Some(format!(
                        "message {} was sent but not deleted from the dead-letter queue \
                         (it is in both now): {}",
                        message.id,
                        e.message()
                    ));
                }
            }
            if new == 0 {
                // Only messages seen already: every other one is held or gone.
                break;
            }
        }
        Ok(())
    }
    .await;
    held.release(dlq, note).await;
    result?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::memory_dlq::MemoryDlq;
    use crate::ops::dlq::testing::{fill, lease, SOURCE};
    use crate::ports::NO_KIND;

    const OTHER: &str = "http://sqs.local/123/other";

    fn options() -> ReplayOptions {
        ReplayOptions {
            max: None,
            per_sec: None,
            error_kinds: Vec::new(),
            dry_run: false,
            wait: false,
            to: None,
            lease: lease(),
        }
    }

    async fn run_replay(dlq: &MemoryDlq, options: &ReplayOptions) -> (ReplayReport, Vec<String>) {
        let mut notes = Vec::new();
        let report = replay(
            dlq,
            options,
            Some(SOURCE),
            &ProgressBar::hidden(),
            &CancellationToken::new(),
            &mut |n| notes.push(n),
        )
        .await
        .unwrap();
        (report, notes)
    }

    #[tokio::test(start_paused = true)]
    async fn replay_uses_the_native_move_when_nothing_restricts_it() {
        let dlq = MemoryDlq::new("http://sqs.local/123/dlq").with_native_move();
        fill(&dlq, "corrupt", 4);
        let (report, notes) = run_replay(
            &dlq,
            &ReplayOptions {
                wait: true,
                ..options()
            },
        )
        .await;
        assert_eq!(report.mode, ReplayMode::Native, "{notes:?}");
        assert_eq!(report.moved, 4);
        assert_eq!(report.task.as_ref().unwrap().status, "COMPLETED");
        assert!(report.succeeded());
        assert_eq!(dlq.native_moves(), vec![(Some(SOURCE.to_string()), None)]);
    }

    #[tokio::test(start_paused = true)]
    async fn replay_falls_back_to_moving_one_by_one_and_says_so() {
        let dlq = MemoryDlq::new("http://sqs.local/123/dlq");
        fill(&dlq, "corrupt", 12);
        dlq.add("redriven", &[]);
        let (report, notes) = run_replay(&dlq, &options()).await;
        assert_eq!(report.mode, ReplayMode::Manual);
        assert!(notes.iter().any(|n| n.contains("one by one")), "{notes:?}");
        assert_eq!(report.moved, 13);
        assert!(report.succeeded(), "{report:?}");
        assert_eq!(dlq.remaining(), 0);
        // Bodies and attributes copied; the redriven one goes to queue.url.
        let sent = dlq.sent();
        assert_eq!(sent.len(), 13);
        assert!(sent.iter().all(|(url, _)| url == SOURCE));
        let (_, corrupt) = sent.iter().find(|(_, m)| m.body == "corrupt-0").unwrap();
        assert_eq!(corrupt.attribute("error_kind"), Some("corrupt"));
        assert_eq!(
            corrupt.attribute("first_failed_at"),
            Some("2024-05-01T12:00:00Z")
        );
        assert_eq!(report.by_error_kind["corrupt"], 12);
        assert_eq!(report.by_error_kind[NO_KIND], 1);
    }

    #[tokio::test(start_paused = true)]
    async fn replay_filters_by_kind_and_honours_max_and_dry_run() {
        let dlq = MemoryDlq::new("http://sqs.local/123/dlq").with_native_move();
        fill(&dlq, "corrupt", 5);
        fill(&dlq, "poison", 7);

        let (dry, _) = run_replay(
            &dlq,
            &ReplayOptions {
                dry_run: true,
                error_kinds: vec!["poison".into()],
                ..options()
            },
        )
        .await;
        assert_eq!(dry.mode, ReplayMode::DryRun);
        assert_eq!((dry.would_move, dry.moved, dry.left), (7, 0, 5));
        assert_eq!((dlq.remaining(), dlq.visible_count()), (12, 12));
        assert!(dlq.sent().is_empty());

        let (some, _) = run_replay(
            &dlq,
            &ReplayOptions {
                max: Some(3),
                error_kinds: vec!["poison".into()],
                ..options()
            },
        )
        .await;
        assert_eq!((some.mode, some.moved), (ReplayMode::Manual, 3));
        assert_eq!((dlq.remaining(), dlq.visible_count()), (9, 9));
        assert!(
            dlq.native_moves().is_empty(),
            "a filter never moves natively"
        );

        let (rest, _) = run_replay(
            &dlq,
            &ReplayOptions {
                error_kinds: vec!["poison".into()],
                to: Some(OTHER.into()),
                ..options()
            },
        )
        .await;
        assert_eq!(rest.moved, 4);
        assert_eq!(rest.destinations, BTreeMap::from([(OTHER.to_string(), 4)]));
        let left: Vec<String> = dlq.bodies();
        assert_eq!(left.len(), 5);
        assert!(left.iter().all(|b| b.starts_with("corrupt-")), "{left:?}");
        assert_eq!(dlq.visible_count(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_send_deletes_nothing_and_a_failed_delete_is_a_duplicate_not_a_loss() {
        let dlq = MemoryDlq::new("http://sqs.local/123/dlq");
        fill(&dlq, "corrupt", 6);
        dlq.fail_send_after(2);
        let (report, _) = run_replay(&dlq, &options()).await;
        assert_eq!((report.moved, report.failed), (2, 1));
        assert!(!report.succeeded());
        assert!(report.error.as_deref().unwrap().contains("injected"));
        assert_eq!(dlq.remaining(), 4, "the failed one is still in the DLQ");
        assert_eq!(dlq.visible_count(), 4, "and visible again");

        let dlq = MemoryDlq::new("http://sqs.local/123/dlq");
        fill(&dlq, "corrupt", 3);
        dlq.fail_delete_after(1);
        let (report, _) = run_replay(&dlq, &options()).await;
        assert_eq!((report.moved, report.duplicated), (2, 1));
        assert!(!report.succeeded());
        // Every body is in the source queue or still in the DLQ.
        let mut everywhere: Vec<String> = dlq.sent().into_iter().map(|(_, m)| m.body).collect();
        everywhere.extend(dlq.bodies());
        for i in 0..3 {
            assert!(
                everywhere.contains(&format!("corrupt-{i}")),
                "{everywhere:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn messages_that_arrive_during_a_replay_are_left_for_the_next_one() {
        let dlq = MemoryDlq::new("http://sqs.local/123/dlq");
        fill(&dlq, "corrupt", 2);
        dlq.add_sent_at(
            "failed again",
            &[("error_kind", "corrupt"), ("source_queue", SOURCE)],
            SystemTime::now() + Duration::from_secs(5),
        );
        let (report, _) = run_replay(&dlq, &options()).await;
        assert_eq!((report.moved, report.left), (2, 1));
        assert!(report.succeeded());
        assert_eq!(dlq.bodies(), vec!["failed again".to_string()]);
        assert_eq!(dlq.visible_count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn replay_is_paced_by_the_rate() {
        let dlq = MemoryDlq::new("http://sqs.local/123/dlq");
        fill(&dlq, "corrupt", 10);
        let started = tokio::time::Instant::now();
        let (report, _) = run_replay(
            &dlq,
            &ReplayOptions {
                max: Some(10),
                per_sec: Some(5),
                ..options()
            },
        )
        .await;
        assert_eq!(report.moved, 10);
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(1800) && elapsed < Duration::from_secs(3),
            "{elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_without_a_source_needs_to() {
        let dlq = MemoryDlq::new("http://sqs.local/123/dlq");
        dlq.add("redriven", &[]);
        let mut notes = Vec::new();
        let report = replay(
            &dlq,
            &options(),
            None,
            &ProgressBar::hidden(),
            &CancellationToken::new(),
            &mut |n| notes.push(n),
        )
        .await
        .unwrap();
        assert_eq!((report.moved, report.failed), (0, 1));
        assert!(report.error.unwrap().contains("--to"));
        assert_eq!(dlq.visible_count(), 1);
    }
}
