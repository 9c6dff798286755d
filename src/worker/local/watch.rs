//! Local mode's file watcher: file-system events become enqueued files once each file is
//! quiet and complete.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{LocalQueue, Scope};

/// A changed file is enqueued once it has been quiet this long and its size is stable.
const DEBOUNCE: Duration = Duration::from_millis(200);

pub(super) fn watch_bucket(watcher: &mut impl Watcher, dir: &Path) {
    match watcher.watch(dir, RecursiveMode::Recursive) {
        Ok(()) => info!(folder = %dir.display(), "watching"),
        Err(e) => warn!(folder = %dir.display(), error = %e, "cannot watch"),
    }
}

/// Events that may mean a file has new content (created, written, closed after writing,
/// renamed into place) or is gone (removed, renamed away).
fn is_interesting(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Any
            | EventKind::Other
            | EventKind::Create(_)
            | EventKind::Remove(_)
            | EventKind::Modify(
                ModifyKind::Any | ModifyKind::Other | ModifyKind::Data(_) | ModifyKind::Name(_)
            )
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    )
}

/// A file seen changing: enqueued once quiet for [`DEBOUNCE`] with the same size twice.
#[derive(Debug)]
struct Pending {
    last_event: Instant,
    size: Option<u64>,
}

/// Turns file-system events into enqueued files until `stop`.
pub(super) async fn watch(
    mut watcher: impl Watcher + Send + 'static,
    mut events: mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
    scope: Scope,
    queue: LocalQueue,
    stop: CancellationToken,
) {
    let mut pending: HashMap<PathBuf, Pending> = HashMap::new();
    let mut tick = tokio::time::interval(DEBOUNCE / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            event = events.recv() => match event {
                None => break,
                Some(Err(e)) => warn!(error = %e, "file watcher error"),
                Some(Ok(event)) => {
                    let mut dirs = Vec::new();
                    if event.need_rescan() {
                        warn!("file watcher lost events: rescanning");
                        dirs.extend(scope.buckets().into_iter().map(|b| scope.root.join(b)));
                    }
                    if is_interesting(&event.kind) {
                        for path in event.paths {
                            if path.parent() == Some(scope.root.as_path()) {
                                // A new bucket folder.
                                let is_bucket = path.is_dir()
                                    && path
                                        .file_name()
                                        .and_then(|n| n.to_str())
                                        .is_some_and(|n| scope.is_source_bucket(n));
                                if is_bucket {
                                    watch_bucket(&mut watcher, &path);
                                    dirs.push(path);
                                }
                            } else if scope.object_of(&path).is_some() {
                                if path.is_dir() {
                                    // Moved in whole: its files may predate the watch.
                                    dirs.push(path);
                                } else {
                                    mark(&mut pending, path);
                                }
                            }
                        }
                    }
                    if !dirs.is_empty() {
                        let walk_scope = scope.clone();
                        let files = tokio::task::spawn_blocking(move || {
                            let mut files = Vec::new();
                            for dir in dirs {
                                walk_scope.files_under(&dir, &mut files);
                            }
                            files
                        })
                        .await
                        .unwrap_or_default();
                        for file in files {
                            mark(&mut pending, file);
                        }
                    }
                }
            },
            _ = tick.tick(), if !pending.is_empty() => {
                flush(&mut pending, &scope, &queue).await;
            }
        }
    }
}

fn mark(pending: &mut HashMap<PathBuf, Pending>, path: PathBuf) {
    pending
        .entry(path)
        .and_modify(|p| p.last_event = Instant::now())
        .or_insert(Pending {
            last_event: Instant::now(),
            size: None,
        });
}

/// Enqueues the pending files that have been quiet for [`DEBOUNCE`] and whose size has not
/// changed since the previous look; drops those that are gone.
async fn flush(pending: &mut HashMap<PathBuf, Pending>, scope: &Scope, queue: &LocalQueue) {
    let now = Instant::now();
    let due: Vec<(PathBuf, Option<u64>)> = pending
        .iter()
        .filter(|(_, p)| now.duration_since(p.last_event) >= DEBOUNCE)
        .map(|(path, p)| (path.clone(), p.size))
        .collect();
    if due.is_empty() {
        return;
    }
    let look_scope = scope.clone();
    let looked = tokio::task::spawn_blocking(move || {
        due.into_iter()
            .map(|(path, previous)| {
                let metadata = std::fs::metadata(&path);
                let gone = matches!(&metadata, Err(e) if e.kind() == std::io::ErrorKind::NotFound);
                let size = metadata.ok().filter(|m| m.is_file()).map(|m| m.len());
                let found = match size {
                    Some(size) if previous == Some(size) => look_scope.found(&path),
                    _ => None,
                };
                let removed = gone.then(|| look_scope.object_of(&path)).flatten();
                (path, previous, size, found, removed)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let mut swept = std::collections::HashSet::new();
    for (path, previous, size, found, removed) in looked {
        match size {
            // Gone, or not a file.
            None => {
                pending.remove(&path);
                if let Some((bucket, key)) = removed {
                    debug!(%bucket, %key, "file removed: enqueued");
                    queue.enqueue_removed(&bucket, &key);
                    // A folder moved away is one event for the folder, none for its files.
                    if swept.insert(bucket.clone()) {
                        if let Err(e) = super::enqueue_orphan_removals(scope, queue, &bucket).await
                        {
                            warn!(%bucket, error = %e, "looking for variants without a source");
                        }
                    }
                }
            }
            // Same size as at the previous look: done being written.
            Some(size) if previous == Some(size) => {
                pending.remove(&path);
                // A write after this look gets its own event. `None`: filtered out or gone.
                if let Some(f) = found {
                    debug!(bucket = %f.bucket, key = %f.key, "file changed: enqueued");
                    queue.enqueue(&f.bucket, &f.key, f.size);
                }
            }
            // First look, or still growing: look again after another quiet period.
            Some(size) => {
                if let Some(p) = pending.get_mut(&path) {
                    p.size = Some(size);
                    p.last_event = Instant::now();
                }
            }
        }
    }
}
