//! `resizeq backfill s3://BUCKET[/PREFIX]`: reprocess existing objects after a variant was
//! added or changed.
//!
//! Lists the prefix one page (1000 keys) at a time and, per page, either enqueues one synthetic
//! S3 ObjectCreated event per object on `queue.url` (SendMessageBatch, 10 a call, failed
//! entries retried), or with `--direct` runs the worker's own job handler
//! ([`crate::worker::Processor`]) on each in-process: the same idempotency check (variants
//! made from this ETag with this config are skipped), the same pipeline, the same bytes.
//!
//! Memory stays constant whatever the bucket holds: one page of keys, and at most
//! `--concurrency` sends or jobs, at a time. A page is finished before the next one starts, so
//! the last key of the last finished page is where `--start-after` resumes.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use indicatif::ProgressBar;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{parse_since, progress_bar};
use crate::adapters::{aws, s3::S3Store};
use crate::config::{Config, Filters};
use crate::error::{Error, ErrorKind, Result};
use crate::event::{self, ObjectCreated};
use crate::ports::ETag;
use crate::worker::{Processor, RecordOutcome};

#[derive(Debug, Clone, clap::Args)]
pub struct BackfillArgs {
    /// What to reprocess: s3://BUCKET or s3://BUCKET/PREFIX.
    #[arg(value_name = "S3_URL")]
    pub target: String,
    /// Only objects last modified at or after this date (2024-05-01) or UTC time
    /// (2024-05-01T12:00:00Z).
    #[arg(long, value_name = "DATE")]
    pub since: Option<String>,
    /// Only keys ending in one of these (comma-separated, case-insensitive), e.g. .jpg,.png.
    #[arg(long, value_name = "SUFFIXES", value_delimiter = ',')]
    pub suffix: Vec<String>,
    /// List and count; enqueue or process nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Process in this process with the worker's pipeline instead of enqueueing events.
    #[arg(long)]
    pub direct: bool,
    /// Batches sent (or, with --direct, objects processed) at once.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub concurrency: usize,
    /// Resume after this key (the `last_key` of an earlier run).
    #[arg(long, value_name = "KEY")]
    pub start_after: Option<String>,
}

/// `s3://BUCKET[/PREFIX]` → (bucket, prefix).
pub fn parse_target(target: &str) -> Result<(String, Option<String>)> {
    let rest = target
        .strip_prefix("s3://")
        .ok_or_else(|| Error::config(format!("`{target}` is not an s3://BUCKET[/PREFIX] URL")))?;
    let (bucket, prefix) = match rest.split_once('/') {
        Some((bucket, prefix)) => (bucket, Some(prefix).filter(|p| !p.is_empty())),
        None => (rest, None),
    };
    if bucket.is_empty() {
        return Err(Error::config(format!("`{target}`: no bucket name")));
    }
    Ok((bucket.to_string(), prefix.map(String::from)))
}

/// Which listed objects are backfilled: `--since`, `--suffix`, and the worker's own filters
/// (what the worker would ignore is not worth a message).
#[derive(Debug, Clone)]
pub struct Selection {
    pub since_secs: Option<i64>,
    /// Lower-cased.
    pub suffixes: Vec<String>,
    pub filters: Filters,
}

impl Selection {
    pub fn new(since: Option<SystemTime>, suffixes: &[String], filters: Filters) -> Selection {
        Selection {
            since_secs: since.map(|t| {
                t.duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64)
            }),
            suffixes: suffixes
                .iter()
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect(),
            filters,
        }
    }

    /// `last_modified` in seconds since the epoch.
    pub fn accepts(&self, key: &str, last_modified: Option<i64>) -> bool {
        // A "folder" placeholder, not an image.
        if key.ends_with('/') {
            return false;
        }
        if let Some(since) = self.since_secs {
            if last_modified.is_none_or(|t| t < since) {
                return false;
            }
        }
        let lower = key.to_ascii_lowercase();
        (self.suffixes.is_empty() || self.suffixes.iter().any(|s| lower.ends_with(s)))
            && self.filters.accepts(key)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    key: String,
    etag: Option<String>,
    size: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Queue,
    Direct,
    DryRun,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BackfillReport {
    pub listed: u64,
    pub matched: u64,
    pub enqueued: u64,
    pub processed: u64,
    pub skipped: u64,
    pub superseded: u64,
    pub ignored: u64,
    pub failed: u64,
    /// The last key of the last page finished: `--start-after` resumes there.
    pub last_key: Option<String>,
    pub interrupted: bool,
}

impl BackfillReport {
    fn summary(&self, mode: Mode, target: &str, elapsed: Duration) -> String {
        let counts = match mode {
            Mode::Queue => format!("enqueued={}", self.enqueued),
            Mode::Direct => format!(
                "processed={} skipped={} superseded={} ignored={}",
                self.processed, self.skipped, self.superseded, self.ignored
            ),
            Mode::DryRun => format!("would_backfill={}", self.matched),
        };
        let mode = match mode {
            Mode::Queue => "queue",
            Mode::Direct => "direct",
            Mode::DryRun => "dry-run",
        };
        let mut line = format!(
            "backfill {target}: mode={mode} listed={} matched={} {counts} failed={} elapsed={:.1}s",
            self.listed,
            self.matched,
            self.failed,
            elapsed.as_secs_f64()
        );
        if let Some(key) = &self.last_key {
            line.push_str(&format!(" last_key={key}"));
        }
        if self.interrupted {
            line.push_str(" interrupted=true");
        }
        line
    }
}

/// Where matched objects go.
enum Sink {
    Queue {
        client: aws_sdk_sqs::Client,
        url: String,
    },
    Direct {
        processor: Arc<Processor<S3Store>>,
    },
    DryRun,
}

pub async fn run(config: &Config, args: BackfillArgs) -> Result<ExitCode> {
    let (bucket, prefix) = parse_target(&args.target)?;
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let selection = Selection::new(since, &args.suffix, config.filters.clone());
    let concurrency = args.concurrency.clamp(1, 1024);
    let sdk = aws::sdk_config(&config.aws).await;
    let s3 = aws::s3_client(&sdk, &config.aws);
    let (mode, sink) = if args.dry_run {
        (Mode::DryRun, Sink::DryRun)
    } else if args.direct {
        let processor = Processor::new(config, S3Store::new(s3.clone()))?;
        (
            Mode::Direct,
            Sink::Direct {
                processor: Arc::new(processor),
            },
        )
    } else {
        let url = config.queue.url.clone().ok_or_else(|| {
            Error::config(
                "backfill enqueues on queue.url, which is not set (RESIZEQ_QUEUE__URL); \
                 or pass --direct to process in this process",
            )
        })?;
        (
            Mode::Queue,
            Sink::Queue {
                client: aws::sqs_client(&sdk),
                url,
            },
        )
    };

    let cancel = CancellationToken::new();
    let on_ctrl_c = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_ctrl_c.cancel();
        }
    });
    let bar = progress_bar(None, "backfill");
    let started = Instant::now();
    let mut report = BackfillReport {
        last_key: args.start_after.clone(),
        ..BackfillReport::default()
    };
    let result = backfill(
        &s3,
        &bucket,
        prefix.as_deref(),
        &selection,
        &sink,
        concurrency,
        &mut report,
        &bar,
        &cancel,
    )
    .await;
    bar.finish_and_clear();
    println!("{}", report.summary(mode, &args.target, started.elapsed()));
    if report.interrupted || result.is_err() || report.failed > 0 {
        if let Some(key) = &report.last_key {
            eprintln!(
                "to resume: resizeq backfill {} --start-after '{key}'",
                args.target
            );
        }
    }
    result?;
    Ok(if report.failed > 0 || report.interrupted {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[allow(clippy::too_many_arguments)]
async fn backfill(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: Option<&str>,
    selection: &Selection,
    sink: &Sink,
    concurrency: usize,
    report: &mut BackfillReport,
    bar: &ProgressBar,
    cancel: &CancellationToken,
) -> Result<()> {
    let mut pages = s3
        .list_objects_v2()
        .bucket(bucket)
        .set_prefix(prefix.map(String::from))
        .set_start_after(report.last_key.clone())
        .into_paginator()
        .page_size(1000)
        .send();
    let mut note = |text: String| bar.suspend(|| eprintln!("{text}"));
    while let Some(page) = pages.next().await {
        if cancel.is_cancelled() {
            report.interrupted = true;
            break;
        }
        let page = page.map_err(|e| aws::classify(&format!("s3 ListObjectsV2 {bucket}"), e))?;
        let mut matched = Vec::new();
        let mut page_last_key = None;
        for object in page.contents() {
            let Some(key) = object.key() else { continue };
            report.listed += 1;
            page_last_key = Some(key.to_string());
            if selection.accepts(key, object.last_modified().map(|t| t.secs())) {
                matched.push(Listed {
                    key: key.to_string(),
                    etag: object.e_tag().map(|e| e.trim_matches('"').to_string()),
                    size: object.size().and_then(|s| u64::try_from(s).ok()),
                });
            }
        }
        report.matched += matched.len() as u64;
        let finished = match sink {
            Sink::DryRun => {
                bar.inc(matched.len() as u64);
                true
            }
            Sink::Queue { client, url } => {
                enqueue_page(
                    client,
                    url,
                    bucket,
                    &matched,
                    concurrency,
                    report,
                    bar,
                    cancel,
                    &mut note,
                )
                .await?
            }
            Sink::Direct { processor } => {
                process_page(
                    processor,
                    bucket,
                    matched,
                    concurrency,
                    report,
                    bar,
                    cancel,
                    &mut note,
                )
                .await
            }
        };
        if !finished {
            report.interrupted = true;
            break;
        }
        if page_last_key.is_some() {
            report.last_key = page_last_key;
        }
        bar.set_message(format!("listed {}", report.listed));
    }
    Ok(())
}

/// At most this many attempts per SendMessageBatch entry.
const SEND_ATTEMPTS: u32 = 5;

/// Enqueues one event per object, 10 per SendMessageBatch, up to `concurrency` calls at once;
/// whether the page was finished (not interrupted). A call that fails permanently (no such
/// queue, access denied for good) stops the backfill.
#[allow(clippy::too_many_arguments)]
async fn enqueue_page(
    client: &aws_sdk_sqs::Client,
    url: &str,
    bucket: &str,
    objects: &[Listed],
    concurrency: usize,
    report: &mut BackfillReport,
    bar: &ProgressBar,
    cancel: &CancellationToken,
    note: &mut dyn FnMut(String),
) -> Result<bool> {
    let mut calls = JoinSet::new();
    let mut first_error = None;
    let mut interrupted = false;
    for chunk in objects.chunks(10) {
        if cancel.is_cancelled() {
            interrupted = true;
            break;
        }
        while calls.len() >= concurrency {
            if let Some(done) = calls.join_next().await {
                if let Some(e) = count_batch(done, bucket, report, bar, note) {
                    first_error.get_or_insert(e);
                }
            }
        }
        if first_error.is_some() {
            break;
        }
        let entries: Vec<(String, String)> = chunk
            .iter()
            .map(|o| {
                let body = event::s3_notification(bucket, &o.key, o.etag.as_deref(), o.size);
                (o.key.clone(), body)
            })
            .collect();
        calls.spawn(send_batch(client.clone(), url.to_string(), entries));
    }
    while let Some(done) = calls.join_next().await {
        if let Some(e) = count_batch(done, bucket, report, bar, note) {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(!interrupted),
    }
}

/// Adds a finished batch to the report; its permanent error, if any.
fn count_batch(
    done: std::result::Result<BatchResult, tokio::task::JoinError>,
    bucket: &str,
    report: &mut BackfillReport,
    bar: &ProgressBar,
    note: &mut dyn FnMut(String),
) -> Option<Error> {
    let result = done.unwrap_or_else(|e| BatchResult {
        sent: 0,
        failed: vec![("?".into(), format!("send task failed: {e}"))],
        fatal: None,
    });
    report.enqueued += result.sent;
    report.failed += result.failed.len() as u64;
    bar.inc(result.sent + result.failed.len() as u64);
    for (key, reason) in result.failed {
        note(format!(
            "error: s3://{bucket}/{key}: not enqueued: {reason}"
        ));
    }
    result.fatal
}

struct BatchResult {
    sent: u64,
    /// (key, reason)
    failed: Vec<(String, String)>,
    /// A permanent failure of the call itself.
    fatal: Option<Error>,
}

/// One SendMessageBatch of (key, body) entries, retrying failed entries that are not the
/// sender's fault with a growing pause.
async fn send_batch(
    client: aws_sdk_sqs::Client,
    url: String,
    entries: Vec<(String, String)>,
) -> BatchResult {
    let mut pending: HashMap<usize, (String, String)> = entries.into_iter().enumerate().collect();
    let mut result = BatchResult {
        sent: 0,
        failed: Vec::new(),
        fatal: None,
    };
    let mut last_reason = HashMap::new();
    for attempt in 0..SEND_ATTEMPTS {
        if pending.is_empty() {
            break;
        }
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        let batch = pending
            .iter()
            .map(|(i, (_, body))| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body)
                    .build()
                    .expect("id and body are set")
            })
            .collect();
        let out = client
            .send_message_batch()
            .queue_url(&url)
            .set_entries(Some(batch))
            .send()
            .await;
        match out {
            Ok(out) => {
                for ok in out.successful() {
                    if let Ok(i) = ok.id().parse::<usize>() {
                        if pending.remove(&i).is_some() {
                            result.sent += 1;
                        }
                    }
                }
                for failed in out.failed() {
                    let Ok(i) = failed.id().parse::<usize>() else {
                        continue;
                    };
                    let reason = format!(
                        "{}{}",
                        failed.code(),
                        failed
                            .message()
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    );
                    if failed.sender_fault() {
                        if let Some((key, _)) = pending.remove(&i) {
                            result.failed.push((key, reason));
                        }
                    } else {
                        last_reason.insert(i, reason);
                    }
                }
            }
            Err(e) => {
                let e = aws::classify(&format!("sqs SendMessageBatch {url}"), e);
                if e.is_permanent() {
                    result.fatal = Some(e);
                    break;
                }
                for i in pending.keys() {
                    last_reason.insert(*i, e.message().to_string());
                }
            }
        }
    }
    for (i, (key, _)) in pending {
        let reason = last_reason
            .remove(&i)
            .unwrap_or_else(|| "not sent".to_string());
        result
            .failed
            .push((key, format!("{reason} (after {SEND_ATTEMPTS} attempts)")));
    }
    result
}

/// Transient failures of a job are retried this many times in all, with a growing pause.
const JOB_ATTEMPTS: u32 = 4;

/// Runs the worker's job handler on each object, up to `concurrency` at once; whether the
/// page was finished (not interrupted).
#[allow(clippy::too_many_arguments)]
async fn process_page(
    processor: &Arc<Processor<S3Store>>,
    bucket: &str,
    objects: Vec<Listed>,
    concurrency: usize,
    report: &mut BackfillReport,
    bar: &ProgressBar,
    cancel: &CancellationToken,
    note: &mut dyn FnMut(String),
) -> bool {
    let mut jobs = JoinSet::new();
    let mut interrupted = false;
    for object in objects {
        if cancel.is_cancelled() {
            interrupted = true;
            break;
        }
        while jobs.len() >= concurrency {
            if let Some(done) = jobs.join_next().await {
                interrupted |= !count_job(done, bucket, report, bar, note);
            }
        }
        let event = ObjectCreated::new(
            bucket,
            &object.key,
            object.etag.as_deref().map(ETag::new),
            object.size,
        );
        let processor = processor.clone();
        let cancel = cancel.clone();
        jobs.spawn(async move {
            let outcome = handle_with_retries(&processor, &event, &cancel).await;
            (event.key, outcome)
        });
    }
    while let Some(done) = jobs.join_next().await {
        interrupted |= !count_job(done, bucket, report, bar, note);
    }
    !interrupted
}

type JobResult = std::result::Result<(String, Result<RecordOutcome>), tokio::task::JoinError>;

/// Adds a finished job to the report; false if it was interrupted.
fn count_job(
    done: JobResult,
    bucket: &str,
    report: &mut BackfillReport,
    bar: &ProgressBar,
    note: &mut dyn FnMut(String),
) -> bool {
    bar.inc(1);
    match done {
        Ok((_, Ok(outcome))) => {
            let counter = match outcome {
                RecordOutcome::Processed => &mut report.processed,
                RecordOutcome::Skipped => &mut report.skipped,
                RecordOutcome::Superseded => &mut report.superseded,
                RecordOutcome::Ignored => &mut report.ignored,
            };
            *counter += 1;
            true
        }
        Ok((_, Err(e))) if e.kind() == ErrorKind::Cancelled => false,
        Ok((key, Err(e))) => {
            report.failed += 1;
            note(format!("error: s3://{bucket}/{key}: {e}"));
            true
        }
        Err(e) => {
            report.failed += 1;
            note(format!("error: job task failed: {e}"));
            true
        }
    }
}

/// The job core on one listed object; transient failures retried here (there is no queue to
/// retry through), permanent ones returned.
async fn handle_with_retries(
    processor: &Processor<S3Store>,
    event: &ObjectCreated,
    cancel: &CancellationToken,
) -> Result<RecordOutcome> {
    let mut attempt = 1;
    loop {
        match processor.handle(event, cancel).await {
            Err(e) if !e.is_permanent() && e.kind() != ErrorKind::Cancelled => {
                if attempt == JOB_ATTEMPTS {
                    return Err(e.context(format!("after {JOB_ATTEMPTS} attempts")));
                }
                tracing::debug!(error = %e, attempt, "transient failure, retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return Err(Error::new(ErrorKind::Cancelled, "interrupted")),
                    _ = tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))) => {}
                }
                attempt += 1;
            }
            Err(e) if e.kind() == ErrorKind::Cancelled => {
                return Err(Error::new(ErrorKind::Cancelled, "interrupted"))
            }
            done => return done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_s3_urls() {
        assert_eq!(
            parse_target("s3://photos").unwrap(),
            ("photos".to_string(), None)
        );
        assert_eq!(
            parse_target("s3://photos/").unwrap(),
            ("photos".to_string(), None)
        );
        assert_eq!(
            parse_target("s3://photos/2024/05/").unwrap(),
            ("photos".to_string(), Some("2024/05/".to_string()))
        );
        for bad in [
            "photos",
            "s3://",
            "s3:///x",
            "https://photos.s3.amazonaws.com/x",
        ] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn selection_applies_since_suffixes_and_the_worker_filters() {
        let since = parse_since("2024-05-01").unwrap();
        let may_first = since
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let filters = Filters {
            exclude_prefixes: vec!["tmp/".into()],
            ..Filters::default()
        };
        let s = Selection::new(Some(since), &[".jpg".into(), " .PNG".into()], filters);
        assert!(s.accepts("a/b.JPG", Some(may_first)));
        assert!(s.accepts("a/b.png", Some(may_first + 10)));
        assert!(!s.accepts("a/b.jpg", Some(may_first - 1)), "too old");
        assert!(
            !s.accepts("a/b.jpg", None),
            "no date, no proof it is recent"
        );
        assert!(!s.accepts("a/b.gif", Some(may_first)), "suffix");
        assert!(!s.accepts("tmp/b.jpg", Some(may_first)), "worker filter");
        assert!(!s.accepts("a/", Some(may_first)), "folder marker");

        let all = Selection::new(None, &[], Filters::default());
        assert!(all.accepts("anything", None));
    }

    #[test]
    fn the_summary_names_every_count() {
        let report = BackfillReport {
            listed: 3,
            matched: 2,
            enqueued: 2,
            last_key: Some("p/c.jpg".into()),
            ..BackfillReport::default()
        };
        let line = report.summary(Mode::Queue, "s3://b/p/", Duration::from_millis(1500));
        assert_eq!(
            line,
            "backfill s3://b/p/: mode=queue listed=3 matched=2 enqueued=2 failed=0 elapsed=1.5s \
             last_key=p/c.jpg"
        );
        let line = report.summary(Mode::Direct, "s3://b", Duration::ZERO);
        assert!(
            line.contains("processed=0 skipped=0 superseded=0 ignored=0"),
            "{line}"
        );
    }
}
