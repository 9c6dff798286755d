//! `resizeq dlq replay`: moves messages back to their source queue, natively (SQS's
//! StartMessageMoveTask) when nothing restricts the move, else one by one, send first and
//! delete after the send succeeded.

use std::collections::BTreeMap;
use std::time::Duration;

use indicatif::ProgressBar;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::ports::{DeadLetterQueue, DlqMessage, MoveTaskStatus};

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
    pub(super) fn matches(&self, message: &DlqMessage) -> bool {
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
    pub(super) fn new(mode: ReplayMode) -> ReplayReport {
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
    let replay = Replay {
        dlq,
        options,
        default_source,
        progress,
        cancel,
    };
    if options.can_use_native_move() {
        let destination = options.to.as_deref().or(default_source);
        match dlq.start_move_task(destination, options.per_sec).await {
            Ok(handle) => {
                note(format!(
                    "started a native move task to {} (handle {handle})",
                    destination.unwrap_or("the queues the messages came from")
                ));
                return replay.follow_move_task(&handle, note).await;
            }
            Err(e) => note(format!(
                "note: no native move ({}); moving the messages one by one instead",
                e.message()
            )),
        }
    }
    replay.manual_move(note).await
}

/// One replay: the queue, what to move and where, and where progress goes.
pub(super) struct Replay<'a, D> {
    pub dlq: &'a D,
    pub options: &'a ReplayOptions,
    /// `queue.url`: where messages without a `source_queue` go when `--to` is not given.
    pub default_source: Option<&'a str>,
    pub progress: &'a ProgressBar,
    pub cancel: &'a CancellationToken,
}

impl<D: DeadLetterQueue> Replay<'_, D> {
    /// Reports a native move task's progress, until it ends with `--wait`.
    async fn follow_move_task(
        &self,
        handle: &str,
        note: &mut dyn FnMut(String),
    ) -> Result<ReplayReport> {
        let (progress, cancel) = (self.progress, self.cancel);
        let mut report = ReplayReport::new(ReplayMode::Native);
        loop {
            let status = self.dlq.move_task(handle).await?;
            if let Some(status) = &status {
                if let Some(total) = status.to_move {
                    progress.set_length(total);
                }
                progress.set_position(status.moved);
                report.moved = status.moved;
            }
            report.task = status.clone();
            let finished = status.as_ref().is_none_or(MoveTaskStatus::is_finished);
            if !self.options.wait || finished {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::memory_dlq::MemoryDlq;
    use crate::ops::dlq::testing::{fill, options, run_replay, SOURCE};

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
}
