//! Replay one by one, where no native move can do it (a filter, `--max`, a dry run, or an
//! endpoint without move tasks): receive, send a copy to the destination, then delete here.
//! Messages that are not moved are held and made visible again at the end.

use std::time::SystemTime;

use super::replay::{Replay, ReplayMode, ReplayReport};
use super::scan::Held;
use crate::error::Result;
use crate::ops::RateLimiter;
use crate::ports::{DeadLetterQueue, MAX_BATCH};

impl<D: DeadLetterQueue> Replay<'_, D> {
    pub(super) async fn manual_move(&self, note: &mut dyn FnMut(String)) -> Result<ReplayReport> {
        let Replay {
            dlq,
            options,
            default_source,
            progress,
            cancel,
        } = *self;
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
                let mut batch = batch.into_iter();
                while let Some(message) = batch.next() {
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
                        // The rest of the batch too, so that all of it is visible again at
                        // once rather than when its lease ends.
                        held.hold(message);
                        for rest in batch.by_ref() {
                            held.hold(rest);
                        }
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
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use indicatif::ProgressBar;
    use tokio_util::sync::CancellationToken;

    use super::super::replay::{replay, ReplayOptions};
    use super::*;
    use crate::adapters::memory_dlq::MemoryDlq;
    use crate::ops::dlq::testing::{fill, options, run_replay, SOURCE};
    use crate::ports::NO_KIND;

    const OTHER: &str = "http://sqs.local/123/other";

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_replay_finishes_the_message_in_hand_and_releases_the_batch() {
        let dlq = MemoryDlq::new("http://sqs.local/123/dlq");
        fill(&dlq, "corrupt", 12);
        let cancel = CancellationToken::new();
        let stop_after_three = async {
            while dlq.sent().len() < 3 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            cancel.cancel();
        };
        let paced = ReplayOptions {
            per_sec: Some(10),
            ..options()
        };
        let (progress, mut note) = (ProgressBar::hidden(), |_| {});
        let moving = replay(&dlq, &paced, Some(SOURCE), &progress, &cancel, &mut note);
        let (report, ()) = tokio::join!(moving, stop_after_three);
        let report = report.unwrap();
        assert!(report.interrupted);
        assert_eq!((report.moved, report.duplicated), (3, 0));
        assert_eq!(dlq.remaining(), 9);
        assert_eq!(dlq.visible_count(), 9, "nothing left hidden under a lease");
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
