//! Local mode (no `queue.url`): the worker on a folder instead of S3 + SQS.
//!
//! An image dropped anywhere under `<root>/<bucket>/` gets its variants under
//! `<root>/<bucket>-resized/` (or `destination.bucket`), by the same core as the SQS path:
//! same pipeline, key layout and idempotency (variants carry the source ETag and the config
//! fingerprint in their sidecar metadata, so a restart skips what is done).
//!
//! - [`LocalQueue`]: an in-process queue with visibility timeouts, like SQS. Its dead-letter
//!   queue is `<root>/<bucket>-failed.jsonl`: one JSON line per file that cannot be processed,
//!   with its reason. Files listed there (same content) are not tried again on the next start;
//!   delete the line (or the file) to retry them.
//! - The events for the application go to `<root>/<bucket>-events.jsonl`, one CloudEvents
//!   document per line (`adapters::events_file`), whatever `events.target` says.
//! - [`run_local`]: scans every bucket folder for files at start, then (in `Mode::Forever`)
//!   watches for new or changed files, and runs [`crate::worker::run`] over both.
//!
//! Never watched nor enqueued: output folders (`*-resized`, `destination.bucket`), `.resizeq`
//! (sidecars), dotfiles and `*.tmp` (files being written, ours included).

mod queue;
mod watch;

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::adapters::events_file::EventsFile;
use crate::adapters::fs::{is_hidden_or_partial, FsStore};
use crate::config::{Config, DestinationConfig, Filters};
use crate::error::{Error, Result};
use crate::ports::{ListQuery, Store, MAX_LIST_PAGE};
use crate::worker::processor::META_SOURCE_KEY;
use crate::worker::{self, Mode, WorkerContext};
pub use queue::{
    failed_file, FailedEntry, LocalQueue, MAX_RECEIVES, RETRIES_EXHAUSTED, VISIBILITY,
};

/// Which files of the root are sources, and how they map to (bucket, key).
#[derive(Debug, Clone)]
struct Scope {
    root: PathBuf,
    destination: DestinationConfig,
    filters: Filters,
}

/// A source file (not read: its job reads it).
#[derive(Debug)]
struct Found {
    bucket: String,
    key: String,
    size: u64,
}

impl Scope {
    /// A folder directly under the root that holds sources.
    fn is_source_bucket(&self, name: &str) -> bool {
        !is_hidden_or_partial(name) && !self.destination.is_destination_bucket(name)
    }

    /// The (bucket, key) of a path under a source bucket; `None` for anything else (outputs,
    /// `.resizeq`, dotfiles, `*.tmp`, names that are not UTF-8).
    fn object_of(&self, path: &Path) -> Option<(String, String)> {
        let rel = path.strip_prefix(&self.root).ok()?;
        let mut parts = Vec::new();
        for c in rel.components() {
            let Component::Normal(part) = c else {
                return None;
            };
            let part = part.to_str()?;
            if is_hidden_or_partial(part) {
                return None;
            }
            parts.push(part);
        }
        if parts.len() < 2 || !self.is_source_bucket(parts[0]) {
            return None;
        }
        Some((parts[0].to_string(), parts[1..].join("/")))
    }

    /// The source bucket folders in the root.
    fn buckets(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut buckets: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| self.is_source_bucket(name))
            .collect();
        buckets.sort();
        buckets
    }

    /// Every source file under `dir` (recursively; symlinks are not followed).
    fn files_under(&self, dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if entry.file_name().to_str().is_none_or(is_hidden_or_partial) {
                continue;
            }
            if file_type.is_dir() {
                self.files_under(&path, out);
            } else if file_type.is_file() {
                out.push(path);
            }
        }
    }

    /// A source file, if it is one and passes the filters.
    fn found(&self, path: &Path) -> Option<Found> {
        let (bucket, key) = self.object_of(path)?;
        if !self.filters.accepts(&key) {
            return None;
        }
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() => Some(Found {
                bucket,
                key,
                size: meta.len(),
            }),
            Ok(_) => None,
            Err(e) => {
                debug!(path = %path.display(), error = %e, "not readable now");
                None
            }
        }
    }

    /// Every source file of every bucket.
    fn scan(&self) -> Vec<Found> {
        let mut files = Vec::new();
        for bucket in self.buckets() {
            self.files_under(&self.root.join(bucket), &mut files);
        }
        files.sort();
        files.iter().filter_map(|p| self.found(p)).collect()
    }
}

fn enqueue_all(queue: &LocalQueue, found: Vec<Found>) -> usize {
    found
        .into_iter()
        .filter(|f| queue.enqueue(&f.bucket, &f.key, f.size))
        .count()
}

/// Runs the worker on the folder `config.worker.local_root` (created if missing): every file
/// in a bucket folder that lacks current variants is processed; then, with `Mode::Forever`,
/// new and changed files too, until `shutdown` is cancelled. With `Mode::UntilEmpty` it
/// returns once the files present at start are done. Files that cannot be processed are
/// listed in `<root>/<bucket>-failed.jsonl`; they do not make this fail.
pub async fn run_local(config: &Config, mode: Mode, shutdown: CancellationToken) -> Result<()> {
    let root = PathBuf::from(&config.worker.local_root);
    std::fs::create_dir_all(&root).map_err(|e| Error::io(format!("{}: {e}", root.display())))?;
    let root =
        std::fs::canonicalize(&root).map_err(|e| Error::io(format!("{}: {e}", root.display())))?;
    let queue = LocalQueue::new(&root);
    queue.load_failed()?;
    let scope = Scope {
        root: root.clone(),
        destination: config.destination.clone(),
        filters: config.filters.clone(),
    };
    let mut ctx = WorkerContext::new(config, queue.clone(), FsStore::new(&root))?;
    ctx.processor = ctx.processor.with_events(Arc::new(EventsFile::new(&root)));
    let ctx = Arc::new(ctx);

    // The watcher starts before the scan, so nothing created meanwhile is missed.
    let stop = shutdown.child_token();
    let watching = if mode == Mode::Forever {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |event| {
            let _ = tx.send(event);
        })
        .map_err(|e| Error::io(format!("file watcher: {e}")))?;
        watcher
            .watch(&root, RecursiveMode::NonRecursive)
            .map_err(|e| Error::io(format!("watching {}: {e}", root.display())))?;
        for bucket in scope.buckets() {
            watch::watch_bucket(&mut watcher, &root.join(bucket));
        }
        Some(tokio::spawn(watch::watch(
            watcher,
            rx,
            scope.clone(),
            queue.clone(),
            stop.clone(),
        )))
    } else {
        None
    };

    let scan_scope = scope.clone();
    let found = tokio::task::spawn_blocking(move || scan_scope.scan())
        .await
        .map_err(|e| Error::io(format!("scan task failed: {e}")))?;
    let files = found.len();
    let enqueued = enqueue_all(&queue, found);
    // Files deleted while resizeq was not running.
    let mut orphans = 0;
    for bucket in scope.buckets() {
        orphans += enqueue_orphan_removals(&scope, &queue, &bucket).await?;
    }
    info!(root = %root.display(), files, enqueued, orphans, "local mode: initial scan done");

    let result = worker::run(
        ctx,
        mode,
        Duration::from_secs(config.worker.shutdown_timeout_secs),
        shutdown,
    )
    .await;
    stop.cancel();
    if let Some(task) = watching {
        let _ = task.await;
    }
    result
}

/// Enqueues a removal for every source of `bucket` that has variants but no file any more:
/// deleted while resizeq was not running, or moved away with its folder (the watcher then sees
/// the folder go, not its files). Returns how many. The removal job itself checks that the
/// file is gone and that the variants are its.
async fn enqueue_orphan_removals(scope: &Scope, queue: &LocalQueue, bucket: &str) -> Result<usize> {
    let store = FsStore::new(&scope.root);
    let destination = scope.destination.bucket_for(bucket);
    let mut sources = std::collections::BTreeSet::new();
    let mut continuation: Option<String> = None;
    loop {
        let query = ListQuery {
            continuation: continuation.as_deref(),
            max_keys: MAX_LIST_PAGE,
            ..ListQuery::default()
        };
        let page = store.list(&destination, query).await?;
        for variant in &page.objects {
            let Some(info) = store.head(&destination, &variant.key).await? else {
                continue;
            };
            if let Some(stored) = info.metadata.get(META_SOURCE_KEY) {
                // As stored, and percent-decoded (keys that are not printable ASCII).
                sources.insert(stored.clone());
                sources.extend(percent_decoded(stored));
            }
        }
        match page.next {
            Some(next) => continuation = Some(next),
            None => break,
        }
    }
    let mut enqueued = 0;
    for key in sources {
        let gone = store
            .object_path(bucket, &key)
            .is_ok_and(|path| !path.exists());
        if gone && scope.filters.accepts(&key) {
            debug!(bucket, key, "variants without a source: removal enqueued");
            queue.enqueue_removed(bucket, &key);
            enqueued += 1;
        }
    }
    Ok(enqueued)
}

/// `%XX` sequences decoded, if there are any and the result is UTF-8.
fn percent_decoded(value: &str) -> Option<String> {
    if !value.contains('%') {
        return None;
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_keys_are_percent_decoded_when_they_can_be() {
        assert_eq!(
            percent_decoded("caf%C3%A9.jpg").as_deref(),
            Some("café.jpg")
        );
        assert_eq!(percent_decoded("plain.jpg"), None);
        assert_eq!(percent_decoded("100%/a.jpg"), None);
    }

    fn scope(root: &Path) -> Scope {
        Scope {
            root: root.to_path_buf(),
            destination: DestinationConfig::default(),
            filters: Filters::default(),
        }
    }

    #[test]
    fn only_files_in_source_buckets_are_objects() {
        let s = scope(Path::new("/r"));
        let of = |p: &str| s.object_of(Path::new(p));
        assert_eq!(
            of("/r/photos/a b/c.png"),
            Some(("photos".into(), "a b/c.png".into()))
        );
        assert_eq!(of("/r/photos"), None);
        assert_eq!(of("/r/photos-resized/80/x.jpg"), None);
        assert_eq!(of("/r/.resizeq/meta/photos/x.json"), None);
        assert_eq!(of("/r/photos/.x.jpg.1.2.tmp"), None);
        assert_eq!(of("/r/photos/upload.TMP"), None);
        assert_eq!(of("/r/photos/.hidden/x.jpg"), None);
        assert_eq!(of("/r/photos-failed.jsonl"), None);
        assert_eq!(of("/elsewhere/photos/x.jpg"), None);
        let mut s = s;
        s.destination.bucket = Some("thumbs".into());
        assert_eq!(s.object_of(Path::new("/r/thumbs/80/x.jpg")), None);
    }
}
