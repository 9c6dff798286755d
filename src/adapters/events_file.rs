//! [`EventsFile`]: the events of local mode, one CloudEvents document per line in
//! `<root>/<bucket>-events.jsonl` (the bucket of the event's source), beside the
//! `<bucket>-failed.jsonl` of the local dead-letter queue.
//!
//! Each line is written by one `write` on a file opened for appending, under a lock shared by
//! all jobs of the process: concurrent jobs never interleave lines, and a reader (`tail -f`)
//! sees whole lines only.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;

use crate::adapters::fs::check_bucket;
use crate::error::{Error, Result};
use crate::events::AppEvent;
use crate::ports::Publish;

/// The events file of `bucket` in the local root.
pub fn events_file(root: &Path, bucket: &str) -> PathBuf {
    root.join(format!("{bucket}-events.jsonl"))
}

#[derive(Debug, Clone)]
pub struct EventsFile {
    root: PathBuf,
    writes: Arc<Mutex<()>>,
}

impl EventsFile {
    pub fn new(root: &Path) -> EventsFile {
        EventsFile {
            root: root.to_path_buf(),
            writes: Arc::default(),
        }
    }

    fn append(&self, bucket: &str, line: String) -> Result<()> {
        check_bucket(bucket)?;
        let path = events_file(&self.root, bucket);
        let _one_writer = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(line.as_bytes()))
            .map_err(|e| Error::io(format!("{}: {e}", path.display())))
    }
}

impl Publish for EventsFile {
    fn publish<'a>(&'a self, event: &'a AppEvent) -> BoxFuture<'a, Result<()>> {
        let mut line = event.to_json();
        line.push('\n');
        let bucket = event.source().bucket.clone();
        let this = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || this.append(&bucket, line))
                .await
                .map_err(|e| Error::io(format!("events file task failed: {e}")))?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::events::{Deleted, DeletedVariant, SourceRef};

    fn deleted(bucket: &str, key: &str) -> AppEvent {
        AppEvent::Deleted(Deleted {
            source: SourceRef::new(bucket, key, None),
            variants: vec![DeletedVariant {
                bucket: format!("{bucket}-resized"),
                key: format!("80/{key}"),
            }],
        })
    }

    #[tokio::test]
    async fn concurrent_events_are_whole_lines_in_their_bucket_file() {
        let dir = tempfile::tempdir().unwrap();
        let events = Arc::new(EventsFile::new(dir.path()));
        // Long keys: lines far over a pipe buffer, so a torn write would show.
        let long = "k".repeat(20_000);
        let jobs: Vec<_> = (0..32)
            .map(|i| {
                let events = events.clone();
                let key = format!("{long}/{i}.jpg");
                let bucket = if i % 2 == 0 { "photos" } else { "avatars" };
                tokio::spawn(async move { events.publish(&deleted(bucket, &key)).await })
            })
            .collect();
        for job in jobs {
            job.await.unwrap().unwrap();
        }
        for bucket in ["photos", "avatars"] {
            let text = std::fs::read_to_string(events_file(dir.path(), bucket)).unwrap();
            let mut keys: Vec<String> = text
                .lines()
                .map(|line| {
                    let doc: serde_json::Value = serde_json::from_str(line).unwrap();
                    assert_eq!(doc["type"], "resizeq.variants.deleted");
                    assert_eq!(doc["source"], format!("s3://{bucket}"));
                    doc["subject"].as_str().unwrap().to_string()
                })
                .collect();
            keys.sort();
            assert_eq!(keys.len(), 16, "{bucket}");
            keys.dedup();
            assert_eq!(keys.len(), 16, "{bucket}");
        }
    }

    #[tokio::test]
    async fn a_bucket_that_is_not_a_folder_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let events = EventsFile::new(dir.path());
        let err = events.publish(&deleted("../x", "a.jpg")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Poison, "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn an_unwritable_root_is_a_transient_failure() {
        let dir = tempfile::tempdir().unwrap();
        let events = EventsFile::new(&dir.path().join("missing"));
        let err = events
            .publish(&deleted("photos", "a.jpg"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io, "{err}");
        assert!(err.message().contains("photos-events.jsonl"), "{err}");
    }
}
