//! `resizeq backfill s3://BUCKET[/PREFIX]`: reprocess existing objects after a variant was
//! added or changed.
//!
//! Lists the prefix one page (1000 keys) at a time through the [`Store`] port and, per page,
//! either enqueues one synthetic S3 ObjectCreated event per object on `queue.url`
//! ([`enqueue`], over the [`Enqueue`] port), or with `--direct` runs the worker's own job
//! handler on each in-process ([`direct`]). [`select`] decides which listed objects count.
//!
//! Memory stays constant whatever the bucket holds: one page of keys, and at most
//! `--concurrency` sends or jobs, at a time. A page is finished before the next one starts, so
//! the last key of the last finished page is where `--start-after` resumes. SIGTERM or Ctrl-C
//! stops after the sends or jobs in flight, with that key in the resume hint.

mod direct;
mod enqueue;
mod report;
mod select;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use indicatif::ProgressBar;
use tokio_util::sync::CancellationToken;

use super::{parse_since, progress_bar};
use crate::adapters::{aws, s3::S3Store, sqs::SqsQueue};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::ports::{Enqueue, ListQuery, ListedObject, Store, MAX_LIST_PAGE};
use crate::worker::Processor;

pub use report::BackfillReport;
use report::Mode;
pub use select::Selection;

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

/// Where matched objects go.
pub enum Sink<S, Q> {
    Queue(Arc<Q>),
    Direct(Arc<Processor<S>>),
    DryRun,
}

impl<S, Q> Sink<S, Q> {
    fn mode(&self) -> Mode {
        match self {
            Sink::Queue(_) => Mode::Queue,
            Sink::Direct(_) => Mode::Direct,
            Sink::DryRun => Mode::DryRun,
        }
    }
}

pub async fn run(config: &Config, args: BackfillArgs) -> Result<ExitCode> {
    let (bucket, prefix) = parse_target(&args.target)?;
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let selection = Selection::new(since, &args.suffix, config.filters.clone());
    let sdk = aws::sdk_config(&config.aws).await;
    let store = S3Store::new(aws::s3_client(&sdk, &config.aws));
    let sink: Sink<S3Store, SqsQueue> = if args.dry_run {
        Sink::DryRun
    } else if args.direct {
        Sink::Direct(Arc::new(Processor::new(config, store.clone())?))
    } else {
        let url = config.queue.url.clone().ok_or_else(|| {
            Error::config(
                "backfill enqueues on queue.url, which is not set (RESIZEQ_QUEUE__URL); \
                 or pass --direct to process in this process",
            )
        })?;
        Sink::Queue(Arc::new(SqsQueue::new(aws::sqs_client(&sdk), url, None)))
    };

    let cancel = super::cancel_on_signals()?;
    let progress = progress_bar(None, "backfill");
    let started = Instant::now();
    let mut backfill = Backfill {
        store: &store,
        bucket: &bucket,
        prefix: prefix.as_deref(),
        selection: &selection,
        sink: &sink,
        concurrency: args.concurrency.clamp(1, 1024),
        page_size: MAX_LIST_PAGE,
        progress: &progress,
        cancel: &cancel,
        report: BackfillReport {
            last_key: args.start_after.clone(),
            ..BackfillReport::default()
        },
    };
    let result = backfill.run().await;
    let report = backfill.report;
    progress.finish_and_clear();
    println!(
        "{}",
        report.summary(sink.mode(), &args.target, started.elapsed())
    );
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

/// One backfill run: what it lists, where matches go, and its report so far.
pub struct Backfill<'a, S, Q> {
    pub store: &'a S,
    pub bucket: &'a str,
    pub prefix: Option<&'a str>,
    pub selection: &'a Selection,
    pub sink: &'a Sink<S, Q>,
    /// Batches sent, or jobs run, at once.
    pub concurrency: usize,
    /// Keys per listing call.
    pub page_size: usize,
    pub progress: &'a ProgressBar,
    pub cancel: &'a CancellationToken,
    /// Starts with `last_key` = `--start-after`.
    pub report: BackfillReport,
}

impl<S: Store, Q: Enqueue> Backfill<'_, S, Q> {
    /// Lists page by page until the end, a cancel, or an error that stops the run (the
    /// report says how far it got).
    pub async fn run(&mut self) -> Result<()> {
        let start_after = self.report.last_key.clone();
        let mut continuation = None;
        loop {
            if self.cancel.is_cancelled() {
                self.report.interrupted = true;
                return Ok(());
            }
            let query = ListQuery {
                prefix: self.prefix,
                start_after: start_after.as_deref(),
                continuation: continuation.as_deref(),
                max_keys: self.page_size,
            };
            let page = self.store.list(self.bucket, query).await?;
            let page_last_key = page.objects.last().map(|o| o.key.clone());
            self.report.listed += page.objects.len() as u64;
            let matched: Vec<ListedObject> = page
                .objects
                .into_iter()
                .filter(|o| self.selection.accepts(&o.key, o.last_modified))
                .collect();
            self.report.matched += matched.len() as u64;
            let sink = self.sink;
            let finished = match sink {
                Sink::DryRun => {
                    self.progress.inc(matched.len() as u64);
                    true
                }
                Sink::Queue(queue) => self.enqueue_page(queue, &matched).await?,
                Sink::Direct(processor) => self.process_page(processor, matched).await,
            };
            if !finished {
                self.report.interrupted = true;
                return Ok(());
            }
            if page_last_key.is_some() {
                self.report.last_key = page_last_key;
            }
            self.progress
                .set_message(format!("listed {}", self.report.listed));
            match page.next {
                Some(next) => continuation = Some(next),
                None => return Ok(()),
            }
        }
    }

    /// A line on stderr, above the progress bar.
    fn note(&self, text: String) {
        self.progress.suspend(|| eprintln!("{text}"));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::adapters::memory::{MemoryQueue, MemoryStore};
    use crate::config::Filters;
    use crate::event::{self, Parsed};
    use crate::ports::ETag;

    /// A backfill of `bucket` with pages of 2 keys, over memory.
    async fn backfill<S: Store>(
        store: &S,
        sink: &Sink<S, MemoryQueue>,
        selection: &Selection,
        start_after: Option<&str>,
        cancel: &CancellationToken,
    ) -> (Result<()>, BackfillReport) {
        let progress = ProgressBar::hidden();
        let mut run = Backfill {
            store,
            bucket: "photos",
            prefix: None,
            selection,
            sink,
            concurrency: 2,
            page_size: 2,
            progress: &progress,
            cancel,
            report: BackfillReport {
                last_key: start_after.map(String::from),
                ..BackfillReport::default()
            },
        };
        let result = run.run().await;
        (result, run.report)
    }

    fn queue() -> Arc<MemoryQueue> {
        Arc::new(MemoryQueue::new(Duration::from_secs(30), false))
    }

    fn images() -> Selection {
        Selection::new(None, &[".jpg".into(), ".png".into()], Filters::default())
    }

    /// Five objects, three of them images.
    fn bucket() -> MemoryStore {
        let store = MemoryStore::new();
        for key in ["a.jpg", "b.png", "c.txt", "d/e.jpg", "d/f.gif"] {
            store.insert("photos", key, key.as_bytes().to_vec());
        }
        store.insert("other", "x.jpg", b"x".to_vec());
        store
    }

    /// (key, eTag, size) of each event sent, in order.
    fn sent_events(queue: &MemoryQueue) -> Vec<(String, Option<ETag>, Option<u64>)> {
        queue
            .bodies()
            .iter()
            .flat_map(|body| match event::parse(body).unwrap() {
                Parsed::Records(records) => records,
                Parsed::Test => panic!("a test event: {body}"),
            })
            .map(|record| match record {
                Ok(event::ObjectEvent::Created(e)) => e,
                other => panic!("a created object expected: {other:?}"),
            })
            .map(|e| {
                assert_eq!(e.bucket, "photos");
                (e.key, e.etag, e.size)
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn every_matching_object_is_enqueued_once_with_its_etag_and_size() {
        let store = bucket();
        let queue = queue();
        let sink = Sink::Queue(queue.clone());
        let (result, report) =
            backfill(&store, &sink, &images(), None, &CancellationToken::new()).await;
        result.unwrap();
        let sent = sent_events(&queue);
        let keys: Vec<&str> = sent.iter().map(|(k, _, _)| k.as_str()).collect();
        assert_eq!(keys, ["a.jpg", "b.png", "d/e.jpg"]);
        let (_, info) = store.object("photos", "a.jpg").unwrap();
        assert_eq!(sent[0].1.as_ref(), Some(&info.etag));
        assert_eq!(sent[0].2, Some(5));
        assert_eq!(
            (
                report.listed,
                report.matched,
                report.enqueued,
                report.failed
            ),
            (5, 3, 3, 0)
        );
        assert_eq!(report.last_key.as_deref(), Some("d/f.gif"));
        assert!(!report.interrupted);
    }

    #[tokio::test(start_paused = true)]
    async fn start_after_resumes_behind_the_key_and_dry_run_sends_nothing() {
        let store = bucket();
        let queue = queue();
        let sink = Sink::Queue(queue.clone());
        let cancel = CancellationToken::new();
        let (result, report) = backfill(&store, &sink, &images(), Some("b.png"), &cancel).await;
        result.unwrap();
        assert_eq!(sent_events(&queue).len(), 1);
        assert_eq!(sent_events(&queue)[0].0, "d/e.jpg");
        assert_eq!((report.listed, report.matched), (3, 1));

        let (result, dry) = backfill(&store, &Sink::DryRun, &images(), None, &cancel).await;
        result.unwrap();
        assert_eq!((dry.listed, dry.matched, dry.enqueued), (5, 3, 0));
        assert_eq!(queue.bodies().len(), 1, "a dry run sends nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn sends_that_fail_for_now_are_retried_and_a_cancel_keeps_the_resume_key() {
        let store = bucket();
        let queue = queue();
        queue
            .fail_sends
            .store(3, std::sync::atomic::Ordering::SeqCst);
        let sink = Sink::Queue(queue.clone());
        let (result, report) =
            backfill(&store, &sink, &images(), None, &CancellationToken::new()).await;
        result.unwrap();
        assert_eq!((report.enqueued, report.failed), (3, 0));
        assert_eq!(sent_events(&queue).len(), 3);

        let cancel = CancellationToken::new();
        cancel.cancel();
        let (result, report) = backfill(&store, &sink, &images(), Some("b.png"), &cancel).await;
        result.unwrap();
        assert!(report.interrupted);
        assert_eq!(report.last_key.as_deref(), Some("b.png"));
        assert_eq!(report.listed, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_listing_failure_stops_the_run_where_it_was() {
        let store = bucket();
        store
            .unavailable_buckets
            .lock()
            .unwrap()
            .push("photos".into());
        let queue = queue();
        let sink = Sink::Queue(queue.clone());
        let (result, report) = backfill(
            &store,
            &sink,
            &images(),
            Some("a.jpg"),
            &CancellationToken::new(),
        )
        .await;
        assert!(result.unwrap_err().message().contains("injected"));
        assert_eq!(report.last_key.as_deref(), Some("a.jpg"));
        assert!(queue.bodies().is_empty());
    }

    #[tokio::test]
    async fn direct_runs_the_worker_job_and_a_second_run_skips() {
        let store = MemoryStore::new();
        let jpeg = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gray.jpg"),
        )
        .unwrap();
        store.insert("photos", "a.jpg", jpeg);
        store.insert("photos", "b.jpg", b"not an image".to_vec());
        let processor = Arc::new(Processor::new(&Config::default(), store).unwrap());
        let sink: Sink<MemoryStore, MemoryQueue> = Sink::Direct(processor.clone());
        let cancel = CancellationToken::new();
        let store = processor.store();
        let (result, first) = backfill(store, &sink, &images(), None, &cancel).await;
        result.unwrap();
        assert_eq!((first.processed, first.failed), (1, 1), "{first:?}");
        assert!(store.puts() > 0);
        let (result, second) = backfill(store, &sink, &images(), None, &cancel).await;
        result.unwrap();
        assert_eq!((second.processed, second.skipped), (0, 1), "{second:?}");
    }

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
}
