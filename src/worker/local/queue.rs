//! [`LocalQueue`]: local mode's in-process queue, with SQS's visibility timeouts and a
//! dead-letter file per bucket.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::adapters::fs::FsStore;
use crate::adapters::memory::Deliveries;
use crate::error::{Error, ErrorKind, Result};
use crate::event::{ObjectCreated, ObjectEvent, ObjectRemoved, Parsed};
use crate::ports::{DeadLetter, ETag, Message, Queue, QueueDepth};

/// The local queue's visibility timeout (leases are extended while a job runs).
pub const VISIBILITY: Duration = Duration::from_secs(60);
/// Deliveries before a message that keeps failing transiently is given up (the local
/// equivalent of a redrive policy's `maxReceiveCount`).
pub const MAX_RECEIVES: u32 = 5;
/// `error_kind` of files given up after [`MAX_RECEIVES`]; unlike permanent failures, they are
/// tried again on the next start.
pub const RETRIES_EXHAUSTED: &str = "retries_exhausted";

/// The dead-letter file of a bucket.
pub fn failed_file(root: &Path, bucket: &str) -> PathBuf {
    root.join(format!("{bucket}-failed.jsonl"))
}

/// An in-process queue of typed object events (no JSON round trip: the queue hands the
/// worker the event it holds). Cheap to clone: clones share the queue.
#[derive(Debug, Clone)]
pub struct LocalQueue {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    root: PathBuf,
    visibility: Duration,
    max_receives: u32,
    messages: Mutex<Deliveries<ObjectEvent>>,
    /// (bucket, key, etag) listed in a failed file: not enqueued again.
    failed: Mutex<HashSet<(String, String, String)>>,
    /// Serialises appends to the failed files.
    failed_writes: Mutex<()>,
    next_id: AtomicU64,
    wake: Notify,
}

/// One line of `<bucket>-failed.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FailedEntry {
    pub key: String,
    pub bucket: String,
    #[serde(default)]
    pub etag: Option<String>,
    pub error_kind: String,
    pub error_reason: String,
    pub failed_at: String,
}

impl LocalQueue {
    /// A queue whose dead letters go to `<root>/<bucket>-failed.jsonl`.
    pub fn new(root: impl Into<PathBuf>) -> LocalQueue {
        LocalQueue {
            shared: Arc::new(Shared {
                root: root.into(),
                visibility: VISIBILITY,
                max_receives: MAX_RECEIVES,
                messages: Mutex::new(Deliveries::default()),
                failed: Mutex::new(HashSet::new()),
                failed_writes: Mutex::new(()),
                next_id: AtomicU64::new(1),
                wake: Notify::new(),
            }),
        }
    }

    /// Reads the failed files in the root, so that the files they list (with the same
    /// content) are not enqueued again. Entries given up for transient failures are retried.
    pub fn load_failed(&self) -> Result<()> {
        let root = &self.shared.root;
        let entries = match std::fs::read_dir(root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(format!("{}: {e}", root.display()))),
        };
        let mut failed = self.shared.failed.lock().unwrap();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.ends_with("-failed.jsonl") || name.starts_with('.') {
                continue;
            }
            let text = std::fs::read_to_string(entry.path())
                .map_err(|e| Error::io(format!("{}: {e}", entry.path().display())))?;
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                match serde_json::from_str::<FailedEntry>(line) {
                    Ok(f) if f.error_kind != RETRIES_EXHAUSTED => {
                        if let Some(etag) = f.etag {
                            failed.insert((f.bucket, f.key, etag));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => warn!(file = name, error = %e, "ignoring an unreadable line"),
                }
            }
        }
        Ok(())
    }

    /// Enqueues an ObjectCreated event for a file. A pending (never delivered) event for the
    /// same file is replaced rather than duplicated. Returns false (and enqueues nothing) for a
    /// file already listed as failed with this content.
    pub fn enqueue(&self, bucket: &str, key: &str, size: u64) -> bool {
        if self.listed_as_failed(bucket, key) {
            debug!(
                bucket,
                key, "listed as failed with this content: not enqueued"
            );
            return false;
        }
        // No ETag: the job learns it from the file.
        self.push(ObjectCreated::new(bucket, key, None, Some(size)).into());
        true
    }

    /// Enqueues an ObjectRemoved event for a file that is gone (its variants follow it).
    pub fn enqueue_removed(&self, bucket: &str, key: &str) {
        // One removal at a time per file: a second, while the first waits or runs, has
        // nothing left to do.
        let queued = self.shared.messages.lock().unwrap().iter().any(
            |d| matches!(&d.extra, ObjectEvent::Removed(r) if r.bucket == bucket && r.key == key),
        );
        if !queued {
            self.push(ObjectRemoved::new(bucket, key).into());
        }
    }

    /// Enqueues an event; one still pending (never delivered) for the same file is replaced
    /// (the newer says how the file is now).
    fn push(&self, event: ObjectEvent) {
        let (bucket, key) = (event.bucket().to_string(), event.key().to_string());
        {
            let mut messages = self.shared.messages.lock().unwrap();
            let pending = messages.iter_mut().find(|d| {
                d.extra.bucket() == bucket && d.extra.key() == key && d.message.receive_count == 0
            });
            if let Some(pending) = pending {
                pending.extra = event;
            } else {
                let id = format!("l{}", self.shared.next_id.fetch_add(1, Ordering::SeqCst));
                let message = Message {
                    id,
                    receipt: String::new(),
                    body: format!("{bucket}/{key}"),
                    receive_count: 0,
                    sent_at: Some(SystemTime::now()),
                    attributes: HashMap::new(),
                };
                messages.push(message, event);
            }
        }
        self.shared.wake.notify_waiters();
    }

    /// Whether the file's current content is listed in a failed file. Only files with an entry
    /// are read here (to compare their content); every other file is read once, by its job.
    fn listed_as_failed(&self, bucket: &str, key: &str) -> bool {
        let listed: Vec<String> = self
            .shared
            .failed
            .lock()
            .unwrap()
            .iter()
            .filter(|(b, k, _)| b == bucket && k == key)
            .map(|(_, _, etag)| etag.clone())
            .collect();
        if listed.is_empty() {
            return false;
        }
        self.etag_now(bucket, key)
            .is_some_and(|etag| listed.iter().any(|l| etag == **l))
    }

    /// The ETag of a file's content as it is now, if it can be read.
    fn etag_now(&self, bucket: &str, key: &str) -> Option<ETag> {
        let path = FsStore::new(&self.shared.root)
            .object_path(bucket, key)
            .ok()?;
        std::fs::read(path).ok().map(|bytes| ETag::of_bytes(&bytes))
    }

    /// Messages in the queue, delivered or not.
    pub fn len(&self) -> usize {
        self.shared.messages.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the event's file to its bucket's failed file, and remembers it (with the ETag
    /// of its content now: the same content is not tried again).
    fn record_failure(
        &self,
        event: &ObjectEvent,
        kind: &str,
        reason: &str,
        at: &str,
    ) -> Result<()> {
        let etag = match event {
            ObjectEvent::Created(created) => created
                .etag
                .clone()
                .or_else(|| self.etag_now(&created.bucket, &created.key)),
            ObjectEvent::Removed(_) => None,
        };
        let entry = FailedEntry {
            key: event.key().to_string(),
            bucket: event.bucket().to_string(),
            etag: etag.map(|e| e.to_string()),
            error_kind: kind.to_string(),
            error_reason: reason.to_string(),
            failed_at: at.to_string(),
        };
        let mut line =
            serde_json::to_string(&entry).map_err(|e| Error::io(format!("failed entry: {e}")))?;
        line.push('\n');
        // Never a path outside the root, whatever the bucket says.
        let bucket_name = if entry.bucket.contains(['/', '\\']) || entry.bucket.starts_with('.') {
            "unknown"
        } else {
            &entry.bucket
        };
        let path = failed_file(&self.shared.root, bucket_name);
        {
            let _guard = self.shared.failed_writes.lock().unwrap();
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| f.write_all(line.as_bytes()))
                .map_err(|e| Error::io(format!("{}: {e}", path.display())))?;
        }
        warn!(
            bucket = %entry.bucket,
            key = %entry.key,
            error_kind = kind,
            file = %path.display(),
            "failed: listed in the failed file"
        );
        if kind != RETRIES_EXHAUSTED {
            if let Some(etag) = entry.etag {
                self.shared
                    .failed
                    .lock()
                    .unwrap()
                    .insert((entry.bucket, entry.key, etag));
            }
        }
        Ok(())
    }

    fn remove(&self, id: &str) -> Option<ObjectEvent> {
        let removed = self.shared.messages.lock().unwrap().remove(id);
        removed.map(|d| d.extra)
    }
}

impl Queue for LocalQueue {
    fn events(&self, message: &Message) -> Result<Parsed> {
        let messages = self.shared.messages.lock().unwrap();
        let delivery = messages.iter().find(|d| d.message.id == message.id);
        match delivery {
            Some(d) => Ok(Parsed::Records(vec![Ok(d.extra.clone())])),
            None => Err(Error::new(
                ErrorKind::Service,
                format!("message {} is no longer in the local queue", message.id),
            )),
        }
    }

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Option<Duration>,
    ) -> Result<Vec<Message>> {
        let deadline = Instant::now() + wait;
        loop {
            let now = Instant::now();
            let (exhausted, out) = {
                let mut messages = self.shared.messages.lock().unwrap();
                // Redrive: a message delivered `max_receives` times is given up.
                let exhausted = messages.take_exhausted(now, self.shared.max_receives);
                let visibility = visibility.unwrap_or(self.shared.visibility);
                (exhausted, messages.deliver(now, max, visibility))
            };
            for delivery in exhausted {
                let reason = format!(
                    "gave up after {} deliveries that failed transiently (see the log)",
                    delivery.message.receive_count
                );
                let at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
                self.record_failure(&delivery.extra, RETRIES_EXHAUSTED, &reason, &at)?;
            }
            if !out.is_empty() || now >= deadline {
                return Ok(out);
            }
            let nap = Duration::from_millis(100).min(deadline - now);
            tokio::select! {
                _ = self.shared.wake.notified() => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    async fn ack(&self, messages: &[Message]) -> Result<()> {
        for m in messages {
            self.remove(&m.id);
        }
        Ok(())
    }

    async fn retry_after(&self, message: &Message, delay: Duration) -> Result<()> {
        {
            let mut messages = self.shared.messages.lock().unwrap();
            let delivery = messages.by_receipt(message)?;
            delivery.visible_at = Instant::now() + delay;
            delivery.leased = false;
        }
        self.shared.wake.notify_waiters();
        Ok(())
    }

    async fn extend_lease(&self, message: &Message, visibility: Duration) -> Result<()> {
        let mut messages = self.shared.messages.lock().unwrap();
        messages.by_receipt(message)?.visible_at = Instant::now() + visibility;
        Ok(())
    }

    fn has_dead_letter_queue(&self) -> bool {
        true
    }

    async fn dead_letter(&self, message: &Message, reason: &DeadLetter) -> Result<()> {
        let (queue, message, reason) = (self.clone(), message.clone(), reason.clone());
        tokio::task::spawn_blocking(move || {
            let Some(event) = queue.remove(&message.id) else {
                return Ok(());
            };
            queue.record_failure(
                &event,
                &reason.error_kind,
                &reason.error_reason,
                &reason.first_failed_at,
            )
        })
        .await
        .map_err(|e| Error::io(format!("dead-letter task failed: {e}")))?
    }

    async fn visibility_timeout(&self) -> Result<Duration> {
        Ok(self.shared.visibility)
    }

    async fn depth(&self) -> Result<QueueDepth> {
        Ok(self.shared.messages.lock().unwrap().depth(Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `bytes` as `<root>/<bucket>/<key>`.
    fn file(root: &Path, bucket: &str, key: &str, bytes: &[u8]) {
        let path = root.join(bucket).join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// The typed event a message stands for.
    fn event_of(q: &LocalQueue, m: &Message) -> ObjectCreated {
        match q.events(m).unwrap() {
            Parsed::Records(mut events) if events.len() == 1 => match events.remove(0) {
                Ok(ObjectEvent::Created(created)) => created,
                other => panic!("a created object expected, got {other:?}"),
            },
            other => panic!("one event expected, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn events_for_one_pending_file_are_coalesced() {
        let dir = tempfile::tempdir().unwrap();
        let q = LocalQueue::new(dir.path());
        assert!(q.enqueue("b", "k", 1));
        assert!(q.enqueue("b", "k", 2));
        assert_eq!(q.len(), 1);
        let got = q.receive(10, Duration::ZERO, None).await.unwrap();
        assert_eq!(
            event_of(&q, &got[0]),
            ObjectCreated::new("b", "k", None, Some(2))
        );
        // Delivered: a new event is a new message.
        assert!(q.enqueue("b", "k", 3));
        assert_eq!(q.len(), 2);
        let depth = q.depth().await.unwrap();
        assert_eq!((depth.visible, depth.in_flight, depth.delayed), (1, 1, 0));
        q.retry_after(&got[0], Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(q.depth().await.unwrap().delayed, 1);
        q.ack(&got).await.unwrap();
        assert_eq!(q.len(), 1);
    }

    #[tokio::test]
    async fn dead_letters_go_to_the_failed_file_and_are_not_enqueued_again() {
        let dir = tempfile::tempdir().unwrap();
        let q = LocalQueue::new(dir.path());
        file(dir.path(), "photos", "a b/bad.jpg", b"not an image");
        q.enqueue("photos", "a b/bad.jpg", 12);
        let got = q.receive(1, Duration::ZERO, None).await.unwrap();
        let reason = DeadLetter {
            error_kind: "unsupported".into(),
            error_reason: "not an image".into(),
            first_failed_at: "2024-05-01T12:00:00Z".into(),
        };
        q.dead_letter(&got[0], &reason).await.unwrap();
        assert!(q.is_empty());
        let text = std::fs::read_to_string(dir.path().join("photos-failed.jsonl")).unwrap();
        let entry: FailedEntry = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(entry.key, "a b/bad.jpg");
        assert_eq!(entry.bucket, "photos");
        assert_eq!(
            entry.etag,
            Some(ETag::of_bytes(b"not an image").to_string())
        );
        assert_eq!(entry.error_kind, "unsupported");
        assert_eq!(entry.error_reason, "not an image");
        assert_eq!(entry.failed_at, "2024-05-01T12:00:00Z");

        assert!(!q.enqueue("photos", "a b/bad.jpg", 12));
        file(dir.path(), "photos", "a b/bad.jpg", b"still not an image");
        assert!(q.enqueue("photos", "a b/bad.jpg", 18), "new content");
        // A new queue over the same root remembers it.
        file(dir.path(), "photos", "a b/bad.jpg", b"not an image");
        let q2 = LocalQueue::new(dir.path());
        q2.load_failed().unwrap();
        assert!(!q2.enqueue("photos", "a b/bad.jpg", 12));
    }

    #[tokio::test]
    async fn messages_that_keep_failing_are_given_up() {
        let dir = tempfile::tempdir().unwrap();
        let q = LocalQueue::new(dir.path());
        file(dir.path(), "b", "k", b"e");
        q.enqueue("b", "k", 1);
        for _ in 0..MAX_RECEIVES {
            let got = q.receive(1, Duration::ZERO, None).await.unwrap();
            q.retry_after(&got[0], Duration::ZERO).await.unwrap();
        }
        assert!(q.receive(1, Duration::ZERO, None).await.unwrap().is_empty());
        assert!(q.is_empty());
        let text = std::fs::read_to_string(dir.path().join("b-failed.jsonl")).unwrap();
        assert!(text.contains(RETRIES_EXHAUSTED));
        // Retried on the next start.
        let q2 = LocalQueue::new(dir.path());
        q2.load_failed().unwrap();
        assert!(q2.enqueue("b", "k", 1));
    }
}
