//! End to end: the real `resizeq run` binary against an S3/SQS emulator (moto; see
//! tests/common/mod.rs). Each test makes its own source bucket, `<source>-resized` destination,
//! queue and dead-letter queue (RedrivePolicy maxReceiveCount 5) and an `s3:ObjectCreated:*`
//! notification, uploads with PutObject so the emulator itself emits the events, runs the
//! worker as a child process and checks the destination bucket and the queues.
//!
//! Skipped (with `MOTO MISSING`) without `RESIZEQ_TEST_ENDPOINT`; `scripts/test` starts moto
//! and requires it. Tests that need the corpus of real photos (`RESIZEQ_CORPUS`, else
//! `../shared/corpus`) say `CORPUS MISSING` and pass without it, unless it is required too.
//! By hand: `bash -c 'source scripts/moto.sh && cargo test --test it worker_e2e -- --nocapture'`.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use common::fault_proxy::{Fault, FaultProxy, Rule};
use common::{corpus_file, fixture, wait_until, TestAws};

/// Generous: a debug build, moto in Python and several tests at once.
pub(crate) const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// One test's buckets and queues, and the worker's working directory.
pub(crate) struct World {
    pub(crate) aws: TestAws,
    pub(crate) source: String,
    pub(crate) dest: String,
    pub(crate) queue: String,
    pub(crate) dlq: String,
    pub(crate) dir: tempfile::TempDir,
}

pub(crate) async fn world(aws: TestAws, prefix: &str, create_dest: bool) -> World {
    let source = aws.create_bucket(prefix).await;
    let dest = format!("{source}-resized");
    if create_dest {
        create_bucket_named(&aws, &dest).await;
    }
    let (queue, dlq) = aws.create_queue_with_dlq(prefix, 30, 5).await;
    aws.notify_queue(&source, &queue).await;
    // Configuring a notification sends an s3:TestEvent: take it out so the counts below are
    // the uploads' only (the worker would ack it as ignored).
    let got = aws
        .sqs
        .receive_message()
        .queue_url(&queue)
        .max_number_of_messages(10)
        .wait_time_seconds(0)
        .send()
        .await
        .expect("ReceiveMessage");
    for m in got.messages() {
        assert!(
            m.body().unwrap_or_default().contains("s3:TestEvent"),
            "unexpected message before any upload: {m:?}"
        );
        delete(&aws, &queue, m.receipt_handle().unwrap()).await;
    }
    World {
        aws,
        source,
        dest,
        queue,
        dlq,
        dir: tempfile::tempdir().expect("tempdir"),
    }
}

pub(crate) async fn create_bucket_named(aws: &TestAws, name: &str) {
    aws.s3
        .create_bucket()
        .bucket(name)
        .send()
        .await
        .expect("CreateBucket");
}

pub(crate) async fn delete(aws: &TestAws, queue: &str, receipt: &str) {
    aws.sqs
        .delete_message()
        .queue_url(queue)
        .receipt_handle(receipt)
        .send()
        .await
        .expect("DeleteMessage");
}

pub(crate) async fn send(aws: &TestAws, queue: &str, body: &str) {
    aws.sqs
        .send_message()
        .queue_url(queue)
        .message_body(body)
        .send()
        .await
        .expect("SendMessage");
}

impl World {
    pub(crate) async fn upload(&self, key: &str, bytes: &[u8], content_type: &str) -> String {
        self.aws
            .upload(&self.source, key, bytes, content_type, &[])
            .await
    }

    /// Uploads JPEG and PNG photos as `<prefix>/<name>`; (key, ETag) of each, in order.
    pub(crate) async fn upload_photos(
        &self,
        prefix: &str,
        files: &[(&str, Vec<u8>)],
    ) -> Vec<(String, String)> {
        let mut uploads = Vec::new();
        for (name, bytes) in files {
            let content_type = if name.ends_with(".png") {
                "image/png"
            } else {
                "image/jpeg"
            };
            let key = format!("{prefix}/{name}");
            let etag = self.upload(&key, bytes, content_type).await;
            uploads.push((key, etag));
        }
        uploads
    }

    /// Deletes a source object with the raw client, as a user would (its ObjectRemoved event
    /// goes to the queue).
    pub(crate) async fn delete_source(&self, key: &str) {
        self.aws
            .s3
            .delete_object()
            .bucket(&self.source)
            .key(key)
            .send()
            .await
            .expect("DeleteObject");
    }

    /// Takes the next ObjectCreated event off the queue (deleting it) and returns its body.
    pub(crate) async fn take_event(&self) -> String {
        let body = self.take_message().await;
        assert!(
            body.contains("ObjectCreated"),
            "not an upload's event: {body}"
        );
        body
    }

    /// Takes the next message off the queue (deleting it) and returns its body.
    pub(crate) async fn take_message(&self) -> String {
        for _ in 0..10 {
            let got = self
                .aws
                .sqs
                .receive_message()
                .queue_url(&self.queue)
                .max_number_of_messages(1)
                .wait_time_seconds(1)
                .send()
                .await
                .expect("ReceiveMessage");
            if let Some(m) = got.messages().first() {
                let body = m.body().expect("a body").to_string();
                delete(&self.aws, &self.queue, m.receipt_handle().unwrap()).await;
                return body;
            }
        }
        panic!("no event arrived on {}", self.queue);
    }

    /// Takes `count` messages off the DLQ: (body, string attributes) of each.
    pub(crate) async fn take_dead_letters(
        &self,
        count: usize,
    ) -> Vec<(String, HashMap<String, String>)> {
        let mut dead = Vec::new();
        for _ in 0..30 {
            if dead.len() >= count {
                break;
            }
            let got = self
                .aws
                .sqs
                .receive_message()
                .queue_url(&self.dlq)
                .max_number_of_messages(10)
                .message_attribute_names("All")
                .wait_time_seconds(1)
                .send()
                .await
                .expect("ReceiveMessage DLQ");
            for m in got.messages() {
                dead.push((
                    m.body().unwrap_or_default().to_string(),
                    common::string_attributes(m),
                ));
                delete(&self.aws, &self.dlq, m.receipt_handle().unwrap()).await;
            }
        }
        assert_eq!(dead.len(), count, "dead letters: {dead:#?}");
        dead
    }

    /// (visible, not visible, delayed) of a queue.
    pub(crate) async fn depth_of(&self, url: &str) -> (u64, u64, u64) {
        self.aws.depth_of(url).await
    }

    pub(crate) async fn assert_queues_empty(&self) {
        assert_eq!(
            self.depth_of(&self.queue).await,
            (0, 0, 0),
            "source queue (visible, not visible, delayed)"
        );
        assert_eq!(
            self.depth_of(&self.dlq).await,
            (0, 0, 0),
            "DLQ (visible, not visible, delayed)"
        );
    }

    /// The destination keys, sorted.
    pub(crate) async fn dest_keys(&self) -> Vec<String> {
        let out = self
            .aws
            .s3
            .list_objects_v2()
            .bucket(&self.dest)
            .send()
            .await;
        match out {
            Ok(out) => {
                let mut keys: Vec<String> = out
                    .contents()
                    .iter()
                    .filter_map(|o| o.key().map(String::from))
                    .collect();
                keys.sort();
                keys
            }
            Err(_) => Vec::new(), // no destination bucket (yet)
        }
    }

    pub(crate) async fn variant(&self, key: &str) -> Variant {
        let out = self
            .aws
            .s3
            .get_object()
            .bucket(&self.dest)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GetObject {}/{key}: {e:?}", self.dest));
        let content_type = out.content_type().unwrap_or_default().to_string();
        let metadata = out.metadata().cloned().unwrap_or_default();
        let last_modified = out.last_modified().map(|t| t.secs());
        let etag = out.e_tag().unwrap_or_default().to_string();
        let bytes = out
            .body
            .collect()
            .await
            .expect("body")
            .into_bytes()
            .to_vec();
        Variant {
            content_type,
            metadata,
            last_modified,
            etag,
            bytes,
        }
    }

    /// Both default variants of `key`: JPEG, with these dimensions, made from `etag`.
    pub(crate) async fn assert_variants(
        &self,
        key: &str,
        etag: &str,
        small: (u32, u32),
        large: (u32, u32),
    ) {
        for (width, dims) in [(80, small), (500, large)] {
            let vkey = format!("{width}/{key}.jpg");
            let v = self.variant(&vkey).await;
            assert_eq!(v.content_type, "image/jpeg", "{vkey}");
            assert_eq!(
                v.metadata.get("resizeq-source-etag").map(String::as_str),
                Some(etag),
                "{vkey}: metadata {:?}",
                v.metadata
            );
            assert!(
                v.metadata.contains_key("resizeq-config"),
                "{vkey}: {:?}",
                v.metadata
            );
            if key.is_ascii() {
                assert_eq!(
                    v.metadata.get("resizeq-source-key").map(String::as_str),
                    Some(key),
                    "{vkey}"
                );
            }
            let img = image::load_from_memory_with_format(&v.bytes, image::ImageFormat::Jpeg)
                .unwrap_or_else(|e| panic!("{vkey} does not decode as JPEG: {e}"));
            assert_eq!((img.width(), img.height()), dims, "{vkey} dimensions");
        }
    }

    pub(crate) fn command(&self, until_empty: bool, extra: &[(&str, &str)]) -> Command {
        let args: &[&str] = if until_empty {
            &["run", "--until-empty"]
        } else {
            &["run"]
        };
        self.aws
            .resizeq_command(self.dir.path(), &self.queue, &self.dlq, args, extra)
    }

    pub(crate) fn spawn(&self, until_empty: bool, extra: &[(&str, &str)]) -> Worker {
        let mut child = self
            .command(until_empty, extra)
            .spawn()
            .expect("spawn resizeq");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = lines.clone();
        let reader = tokio::spawn(async move {
            let mut stderr = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = stderr.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Worker {
            child,
            lines,
            reader,
            started: Instant::now(),
        }
    }

    /// `run --until-empty` to its end; panics if it takes longer than RUN_TIMEOUT.
    pub(crate) async fn run_until_empty(&self, extra: &[(&str, &str)]) -> Run {
        self.spawn(true, extra).finish(RUN_TIMEOUT).await
    }
}

pub(crate) struct Variant {
    pub(crate) content_type: String,
    pub(crate) metadata: HashMap<String, String>,
    pub(crate) last_modified: Option<i64>,
    pub(crate) etag: String,
    pub(crate) bytes: Vec<u8>,
}

pub(crate) struct Worker {
    pub(crate) child: Child,
    pub(crate) lines: Arc<Mutex<Vec<String>>>,
    pub(crate) reader: tokio::task::JoinHandle<()>,
    pub(crate) started: Instant,
}

impl Worker {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id().expect("a running child")
    }

    pub(crate) fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    #[allow(dead_code)]
    pub(crate) fn logs(&self) -> Vec<Value> {
        parse_logs(&self.lines.lock().unwrap())
    }

    /// Whether a log line with this message has been written so far.
    pub(crate) fn has_logged(&self, message: &str) -> bool {
        self.logs().iter().any(|l| log_message(l) == message)
    }

    pub(crate) async fn finish(mut self, timeout: Duration) -> Run {
        let status = match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.expect("wait"),
            Err(_) => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.reader).await;
                panic!(
                    "resizeq did not exit within {timeout:?}; stderr:\n{}",
                    self.lines.lock().unwrap().join("\n")
                );
            }
        };
        let elapsed = self.started.elapsed();
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.reader).await;
        let lines = std::mem::take(&mut *self.lines.lock().unwrap());
        Run {
            status,
            elapsed,
            logs: parse_logs(&lines),
            stderr: lines.join("\n"),
        }
    }
}

pub(crate) fn parse_logs(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

pub(crate) fn log_message(log: &Value) -> &str {
    log.pointer("/fields/message")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub(crate) fn log_time(log: &Value) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339_weak(log.get("timestamp")?.as_str()?.trim_end_matches('Z')).ok()
}

pub(crate) struct Run {
    pub(crate) status: ExitStatus,
    pub(crate) elapsed: Duration,
    pub(crate) logs: Vec<Value>,
    pub(crate) stderr: String,
}

impl Run {
    pub(crate) fn assert_success(&self) {
        assert!(
            self.status.success(),
            "resizeq exited with {}; stderr:\n{}",
            self.status,
            self.stderr
        );
    }

    /// The counters of the final `resizeq worker stopped` line.
    pub(crate) fn stats(&self) -> HashMap<String, u64> {
        let line = self
            .logs
            .iter()
            .rev()
            .find(|l| log_message(l) == "resizeq worker stopped")
            .unwrap_or_else(|| panic!("no `resizeq worker stopped` line in:\n{}", self.stderr));
        line["fields"]
            .as_object()
            .unwrap()
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
            .collect()
    }

    pub(crate) fn stat(&self, name: &str) -> u64 {
        self.stats().get(name).copied().unwrap_or(0)
    }

    pub(crate) fn log_time(&self, message: &str) -> Option<std::time::SystemTime> {
        self.logs
            .iter()
            .find(|l| log_message(l) == message)
            .and_then(log_time)
    }

    /// `done` lines: (outcome, receive_count of the message span).
    pub(crate) fn done(&self) -> Vec<(String, u64)> {
        self.logs
            .iter()
            .filter(|l| log_message(l) == "done")
            .map(|l| {
                (
                    l.pointer("/fields/outcome")
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                        .to_string(),
                    l.pointer("/span/receive_count")
                        .and_then(Value::as_u64)
                        .unwrap_or(0),
                )
            })
            .collect()
    }
}

/// (key, bytes, content type, 80-wide variant's dimensions, 500-wide variant's dimensions).
type Upload = (String, Vec<u8>, &'static str, (u32, u32), (u32, u32));

pub(crate) const TINY: (u32, u32) = (120, 80);
pub(crate) const TINY_SMALL: (u32, u32) = (80, 53);

// --- 1 -------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_format_and_awkward_keys_get_both_variants() {
    let ctx = context!("every_format_and_awkward_keys_get_both_variants");
    let w = world(ctx, "fmt", true).await;
    // (key, fixture, content type, small variant, large variant)
    let mut uploads: Vec<Upload> = vec![
        (
            "formats/tiny.jpg".into(),
            fixture("tiny.jpg"),
            "image/jpeg",
            TINY_SMALL,
            TINY,
        ),
        (
            "formats/tiny.png".into(),
            fixture("tiny.png"),
            "image/png",
            TINY_SMALL,
            TINY,
        ),
        (
            "formats/tiny.heic".into(),
            fixture("tiny.heic"),
            "image/heic",
            TINY_SMALL,
            TINY,
        ),
        (
            "formats/tiny.webp".into(),
            fixture("tiny.webp"),
            "image/webp",
            TINY_SMALL,
            TINY,
        ),
        (
            "formats/tiny.gif".into(),
            fixture("tiny.gif"),
            "image/gif",
            TINY_SMALL,
            TINY,
        ),
        (
            "formats/tiny.tiff".into(),
            fixture("tiny.tiff"),
            "image/tiff",
            TINY_SMALL,
            TINY,
        ),
        // Upright 48x32 after EXIF orientation 6; never upscaled.
        (
            "formats/orient-6.jpg".into(),
            fixture("orient-6.jpg"),
            "image/jpeg",
            (48, 32),
            (48, 32),
        ),
        (
            "with space/my photo.jpg".into(),
            fixture("tiny.jpg"),
            "image/jpeg",
            TINY_SMALL,
            TINY,
        ),
        (
            "plus/a+b.jpg".into(),
            fixture("tiny.jpg"),
            "image/jpeg",
            TINY_SMALL,
            TINY,
        ),
        (
            "été/фото.jpg".into(),
            fixture("tiny.jpg"),
            "image/jpeg",
            TINY_SMALL,
            TINY,
        ),
        (
            "a/b/c/d/e.png".into(),
            fixture("tiny.png"),
            "image/png",
            TINY_SMALL,
            TINY,
        ),
    ];
    if let Some(heic) = corpus_file("heic02_arrow.heic") {
        let dims = image_dims_unknown();
        uploads.push((
            "corpus/heic02_arrow.heic".into(),
            heic,
            "image/heic",
            dims,
            dims,
        ));
    }
    if let Some(jpeg) = corpus_file("small01_greenmeadow.jpg") {
        let dims = image_dims_unknown();
        uploads.push((
            "corpus/small01_greenmeadow.jpg".into(),
            jpeg,
            "image/jpeg",
            dims,
            dims,
        ));
    }
    let mut etags = Vec::new();
    for (key, bytes, content_type, ..) in &uploads {
        etags.push(w.upload(key, bytes, content_type).await);
    }

    let run = w.run_until_empty(&[]).await;
    run.assert_success();

    for ((key, _, _, small, large), etag) in uploads.iter().zip(&etags) {
        if *small == image_dims_unknown() {
            assert_corpus_variants(&w, key, etag).await;
        } else {
            w.assert_variants(key, etag, *small, *large).await;
        }
    }
    assert_eq!(
        w.dest_keys().await.len(),
        uploads.len() * 2,
        "no extra objects"
    );
    assert_eq!(
        run.stat("processed"),
        uploads.len() as u64,
        "{}",
        run.stderr
    );
    assert_eq!(run.stat("dead_lettered"), 0, "{}", run.stderr);
    w.assert_queues_empty().await;
}

/// Marker for "a corpus photo: check width only".
fn image_dims_unknown() -> (u32, u32) {
    (0, 0)
}

/// A corpus photo (larger than 500 px): widths 80 and 500, aspect kept within a pixel.
async fn assert_corpus_variants(w: &World, key: &str, etag: &str) {
    let mut aspect: Option<f64> = None;
    for width in [80, 500] {
        let vkey = format!("{width}/{key}.jpg");
        let v = w.variant(&vkey).await;
        assert_eq!(v.content_type, "image/jpeg", "{vkey}");
        assert_eq!(
            v.metadata.get("resizeq-source-etag").map(String::as_str),
            Some(etag),
            "{vkey}"
        );
        let img = image::load_from_memory_with_format(&v.bytes, image::ImageFormat::Jpeg)
            .unwrap_or_else(|e| panic!("{vkey}: {e}"));
        assert_eq!(img.width(), width, "{vkey}");
        let a = img.height() as f64 / img.width() as f64;
        if let Some(prev) = aspect {
            assert!((a - prev).abs() < 0.05, "{vkey}: aspect {a} vs {prev}");
        }
        aspect = Some(a);
    }
}

// --- 2 -------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_duplicate_event_is_skipped_and_writes_nothing() {
    let ctx = context!("a_duplicate_event_is_skipped_and_writes_nothing");
    let w = world(ctx, "dup", true).await;
    let key = "dup/photo.jpg";
    let etag = w.upload(key, &fixture("tiny.jpg"), "image/jpeg").await;
    let body = w.take_event().await;
    send(&w.aws, &w.queue, &body).await;

    let first = w.run_until_empty(&[]).await;
    first.assert_success();
    assert_eq!(first.stat("processed"), 1, "{}", first.stderr);
    w.assert_variants(key, &etag, TINY_SMALL, TINY).await;
    let before = [
        w.variant(&format!("80/{key}.jpg")).await,
        w.variant(&format!("500/{key}.jpg")).await,
    ];

    // The second run goes through a proxy that counts PUTs into the destination: none may
    // happen (a rewrite of the same bytes would not show in the ETag).
    let proxy = FaultProxy::start(&w.aws.endpoint).await;
    let count = Fault::Delay(Duration::ZERO);
    proxy.add(Rule::new(Some("PUT"), format!("/{}/", w.dest), count));
    send(&w.aws, &w.queue, &body).await;
    let second = w
        .run_until_empty(&[("RESIZEQ_AWS__ENDPOINT_URL", proxy.endpoint.as_str())])
        .await;
    second.assert_success();
    assert_eq!(proxy.faulted(), 0, "a variant was written again");
    assert_eq!(second.stat("skipped"), 1, "{}", second.stderr);
    assert_eq!(second.stat("processed"), 0, "{}", second.stderr);
    assert_eq!(second.done(), vec![("skipped".to_string(), 1)]);

    let after = [
        w.variant(&format!("80/{key}.jpg")).await,
        w.variant(&format!("500/{key}.jpg")).await,
    ];
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b.bytes, a.bytes);
        assert_eq!(b.etag, a.etag);
        assert_eq!(b.last_modified, a.last_modified, "variant rewritten");
    }
    w.assert_queues_empty().await;
}

// --- 3 -------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_event_older_than_the_object_is_superseded() {
    let ctx = context!("an_event_older_than_the_object_is_superseded");
    let w = world(ctx, "sup", true).await;
    let key = "over/written.jpg";
    let old_etag = w.upload(key, &fixture("tiny.jpg"), "image/jpeg").await;
    let old_event = w.take_event().await;
    assert!(old_event.contains(&old_etag), "{old_event}");
    send(&w.aws, &w.queue, &old_event).await;
    let first = w.run_until_empty(&[]).await;
    first.assert_success();
    w.assert_variants(key, &old_etag, TINY_SMALL, TINY).await;

    // A different picture at the same key (60x40: never upscaled).
    let new_etag = w
        .upload(key, &fixture("small-60x40.jpg"), "image/jpeg")
        .await;
    assert_ne!(old_etag, new_etag);
    let second = w.run_until_empty(&[]).await;
    second.assert_success();
    assert_eq!(second.stat("processed"), 1, "{}", second.stderr);
    w.assert_variants(key, &new_etag, (60, 40), (60, 40)).await;

    // The old event again, late.
    send(&w.aws, &w.queue, &old_event).await;
    let third = w.run_until_empty(&[]).await;
    third.assert_success();
    assert_eq!(third.stat("superseded"), 1, "{}", third.stderr);
    assert_eq!(third.stat("processed"), 0, "{}", third.stderr);
    w.assert_variants(key, &new_etag, (60, 40), (60, 40)).await;
    w.assert_queues_empty().await;
}

// --- 4 -------------------------------------------------------------------------------------------

#[tokio::test]
async fn bad_inputs_are_dead_lettered_with_their_reason_and_the_worker_carries_on() {
    let ctx = context!("bad_inputs_are_dead_lettered_with_their_reason_and_the_worker_carries_on");
    let w = world(ctx, "bad", true).await;
    w.upload("bad/truncated.jpg", &fixture("truncated.jpg"), "image/jpeg")
        .await;
    w.upload("bad/page.jpg", &fixture("page.jpg"), "image/jpeg")
        .await;
    send(&w.aws, &w.queue, "not json").await;
    let good = w
        .upload("good/tiny.jpg", &fixture("tiny.jpg"), "image/jpeg")
        .await;

    let run = w.run_until_empty(&[]).await;
    run.assert_success();
    w.assert_variants("good/tiny.jpg", &good, TINY_SMALL, TINY)
        .await;
    assert_eq!(run.stat("processed"), 1, "{}", run.stderr);
    assert_eq!(run.stat("dead_lettered"), 3, "{}", run.stderr);
    assert_eq!(
        w.depth_of(&w.queue).await,
        (0, 0, 0),
        "source queue (visible, not visible, delayed)"
    );

    // The DLQ: three copies with their reasons.
    let dead: HashMap<String, (String, HashMap<String, String>)> = w
        .take_dead_letters(3)
        .await
        .into_iter()
        .map(|(body, attrs)| {
            (
                attrs.get("error_kind").cloned().unwrap_or_default(),
                (body, attrs),
            )
        })
        .collect();
    let kinds: HashSet<&str> = dead.keys().map(String::as_str).collect();
    assert_eq!(
        kinds,
        HashSet::from(["corrupt", "unsupported", "poison"]),
        "{dead:#?}"
    );
    for (kind, (body, attrs)) in &dead {
        for name in [
            "error_reason",
            "source_queue",
            "receive_count",
            "first_failed_at",
        ] {
            assert!(
                attrs.get(name).is_some_and(|v| !v.is_empty()),
                "{kind}: no {name} in {attrs:?}"
            );
        }
        assert_eq!(attrs["source_queue"], w.queue, "{kind}");
        assert_eq!(attrs["receive_count"], "1", "{kind}");
        assert!(
            attrs["first_failed_at"].starts_with("20") && attrs["first_failed_at"].ends_with('Z'),
            "{kind}: {}",
            attrs["first_failed_at"]
        );
        match kind.as_str() {
            "poison" => assert_eq!(body, "not json"),
            "corrupt" => assert!(attrs["error_reason"].contains("truncated.jpg"), "{attrs:?}"),
            "unsupported" => assert!(attrs["error_reason"].contains("page.jpg"), "{attrs:?}"),
            _ => unreachable!(),
        }
    }
    assert!(w.dest_keys().await.iter().all(|k| k.contains("good/")));
}

// --- 5 -------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_missing_destination_bucket_is_retried_until_it_exists() {
    let ctx = context!("a_missing_destination_bucket_is_retried_until_it_exists");
    let w = world(ctx, "tra", false).await;
    let key = "late/bucket.jpg";
    let etag = w.upload(key, &fixture("tiny.jpg"), "image/jpeg").await;

    let worker = w.spawn(true, &[("RESIZEQ_QUEUE__RETRY_BASE_SECS", "1")]);
    wait_until("a PUT into the missing bucket failed", || async {
        worker.has_logged("transient failure, retrying later")
    })
    .await;
    create_bucket_named(&w.aws, &w.dest).await;
    let run = worker.finish(RUN_TIMEOUT).await;
    run.assert_success();

    w.assert_variants(key, &etag, TINY_SMALL, TINY).await;
    assert!(run.stat("retried") >= 1, "{}", run.stderr);
    assert_eq!(run.stat("processed"), 1, "{}", run.stderr);
    assert!(
        run.logs
            .iter()
            .any(|l| log_message(l) == "transient failure, retrying later"),
        "{}",
        run.stderr
    );
    let done = run.done();
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(done[0].1 >= 2, "processed on receive {}", done[0].1);
    w.assert_queues_empty().await;
}

// --- 6 -------------------------------------------------------------------------------------------

#[tokio::test]
async fn sigkill_mid_batch_loses_nothing() {
    let test = "sigkill_mid_batch_loses_nothing";
    let ctx = context!(test);
    let w = world(ctx, "kill", true).await;
    let mut uploads = Vec::new();
    if let Some(jpeg) = corpus_file("jpg05_seeding.jpg") {
        let etag = w.upload("kill/corpus.jpg", &jpeg, "image/jpeg").await;
        uploads.push(("kill/corpus.jpg".to_string(), etag, true));
    }
    let tiny = fixture("tiny.jpg");
    let png = fixture("tiny.png");
    for i in 0..10 - uploads.len() {
        let (key, bytes, ct) = if i % 2 == 0 {
            (format!("kill/{i}.jpg"), &tiny, "image/jpeg")
        } else {
            (format!("kill/{i}.png"), &png, "image/png")
        };
        let etag = w.upload(&key, bytes, ct).await;
        uploads.push((key, etag, false));
    }

    let vis = [("RESIZEQ_QUEUE__VISIBILITY_TIMEOUT_SECS", "2")];
    let mut worker = w.spawn(false, &vis);
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline && w.dest_keys().await.is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.child.start_kill().expect("SIGKILL");
    let status = worker.child.wait().await.expect("wait");
    assert!(!status.success(), "killed: {status}");
    let partial = w.dest_keys().await.len();

    let run = w.run_until_empty(&vis).await;
    run.assert_success();
    for (key, etag, corpus) in &uploads {
        if *corpus {
            assert_corpus_variants(&w, key, etag).await;
        } else {
            w.assert_variants(key, etag, TINY_SMALL, TINY).await;
        }
    }
    assert_eq!(w.dest_keys().await.len(), 20);
    w.assert_queues_empty().await;
    let _ = writeln!(
        std::io::stderr(),
        "{test}: {partial} variants before the kill; second run: {:?}",
        run.stats()
    );
}

// --- 7 -------------------------------------------------------------------------------------------

/// A job whose GET has been answered when SIGTERM comes is finished, written and acknowledged
/// before the worker exits: the GET is held by the proxy until after the signal, so the job is
/// in flight at SIGTERM whatever the machine's speed.
#[tokio::test]
async fn sigterm_during_a_job_finishes_it() {
    let test = "sigterm_during_a_job_finishes_it";
    let ctx = context!(test);
    // A small photo: the held GET, not the decode, keeps the job in flight at SIGTERM, so a
    // loaded machine cannot push the rest of the job past the shutdown timeout.
    let Some(photo) = corpus_file("small01_greenmeadow.jpg") else {
        return;
    };
    let w = world(ctx, "term", true).await;
    let key = "slow/meadow.jpg";
    let etag = w.upload(key, &photo, "image/jpeg").await;
    let proxy = FaultProxy::start(&w.aws.endpoint).await;
    proxy.add(Rule::new(
        Some("GET"),
        format!("/{}/", w.source),
        Fault::Hold,
    ));

    let shutdown_secs = 60;
    let timeout = shutdown_secs.to_string();
    let worker = w.spawn(
        false,
        &[
            ("RESIZEQ_WORKER__SHUTDOWN_TIMEOUT_SECS", timeout.as_str()),
            ("RESIZEQ_AWS__ENDPOINT_URL", proxy.endpoint.as_str()),
        ],
    );
    wait_until("the worker fetches the object", || async {
        proxy.held() == 1
    })
    .await;
    worker.signal("TERM");
    let signalled = Instant::now();
    // Let the drain begin before the object arrives: the job must still finish.
    wait_until("the drain begins", || async {
        worker.has_logged("stopping: finishing jobs in flight")
    })
    .await;
    proxy.release();
    let run = worker.finish(Duration::from_secs(shutdown_secs + 10)).await;
    let took = signalled.elapsed();
    run.assert_success();
    assert!(
        took < Duration::from_secs(shutdown_secs + 2),
        "exit {took:?} after SIGTERM"
    );
    assert!(
        run.logs
            .iter()
            .any(|l| log_message(l).starts_with("shutdown requested")),
        "{}",
        run.stderr
    );
    assert_eq!(run.stat("processed"), 1, "{}", run.stderr);
    assert_eq!(run.stat("released"), 0, "{}", run.stderr);
    assert_corpus_variants(&w, key, &etag).await;
    w.assert_queues_empty().await;
}

// --- 8 -------------------------------------------------------------------------------------------

#[tokio::test]
async fn jobs_slower_than_the_visibility_timeout_are_not_redelivered() {
    let test = "jobs_slower_than_the_visibility_timeout_are_not_redelivered";
    let ctx = context!(test);
    let names = ["jpg03_infinite-sea.jpg", "png03_kay.png", "jpg13_volna.jpg"];
    let mut files = Vec::new();
    for name in names {
        match corpus_file(name) {
            Some(bytes) => files.push((name, bytes)),
            None => return,
        }
    }
    let w = world(ctx, "slow", true).await;
    let uploads = w.upload_photos("slow", &files).await;
    // Every variant's PUT takes 2.5 s: each job outlives the 4 s visibility, however fast the
    // machine. (With 1 s, a starved machine could take longer than the lease's slack, 2/3 of
    // the visibility, to answer one extension, and the message came back legitimately.)
    let proxy = FaultProxy::start(&w.aws.endpoint).await;
    let slow_put = Fault::Delay(Duration::from_millis(2500));
    proxy.add(Rule::new(Some("PUT"), format!("/{}/", w.dest), slow_put));
    let run = w
        .run_until_empty(&[
            ("RESIZEQ_QUEUE__VISIBILITY_TIMEOUT_SECS", "4"),
            ("RESIZEQ_WORKER__CPU_WORKERS", "1"),
            ("RESIZEQ_AWS__ENDPOINT_URL", proxy.endpoint.as_str()),
        ])
        .await;
    run.assert_success();
    assert!(
        proxy.faulted() >= 2 * uploads.len(),
        "every PUT went through the proxy"
    );
    for (key, etag) in &uploads {
        assert_corpus_variants(&w, key, etag).await;
    }
    let done = run.done();
    // Each message stayed in flight longer than the 4 s visibility (two delayed PUTs each).
    let started = run
        .log_time("resizeq worker starting")
        .expect("a start line");
    let last_done = run
        .logs
        .iter()
        .filter(|l| log_message(l) == "done")
        .filter_map(log_time)
        .max()
        .expect("a done line");
    let busy = last_done.duration_since(started).unwrap_or_default();
    let _ = writeln!(
        std::io::stderr(),
        "{test}: run took {:?}; last job done {busy:?} after start; done {done:?}",
        run.elapsed
    );
    assert!(
        busy > Duration::from_secs(5),
        "the jobs ({busy:?}) did not outlive the 4 s visibility timeout"
    );
    assert_eq!(
        done,
        vec![("processed".to_string(), 1); uploads.len()],
        "each message processed once, on its first receive:\n{}",
        run.stderr
    );
    assert_eq!(run.stat("received"), uploads.len() as u64, "{}", run.stderr);
    assert_eq!(run.stat("skipped"), 0);
    w.assert_queues_empty().await;
    // Receive counts as SQS saw them: the messages are gone, so only the worker's logs tell;
    // and the variants were written once (a redelivery would have been `skipped`, above).
}

// --- 8b: S3 answering 503 SlowDown for a while ------------------------------------------------

/// A source GET answered `503 SlowDown` is a transient fault: the message is retried (not
/// dead-lettered) and processed once S3 answers again.
#[tokio::test]
async fn a_slow_down_from_s3_is_retried_until_it_passes() {
    let ctx = context!("a_slow_down_from_s3_is_retried_until_it_passes");
    let w = world(ctx, "slowdown", true).await;
    let etag = w
        .upload("s/a.jpg", &fixture("tiny.jpg"), "image/jpeg")
        .await;
    let proxy = FaultProxy::start(&w.aws.endpoint).await;
    let slow_down = Fault::Status(
        503,
        "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
    );
    proxy.add(Rule::new(Some("GET"), format!("/{}/", w.source), slow_down));
    let worker = w.spawn(
        false,
        &[("RESIZEQ_AWS__ENDPOINT_URL", proxy.endpoint.as_str())],
    );
    // The SDK retries within one receive; two receives prove the message came back.
    wait_until("two receives met the 503", || async {
        worker.has_logged("transient failure, retrying later") && proxy.faulted() >= 2
    })
    .await;
    proxy.release();
    wait_until("the variants exist", || async {
        w.dest_keys().await.len() == 2
    })
    .await;
    worker.signal("TERM");
    let run = worker.finish(RUN_TIMEOUT).await;
    run.assert_success();
    assert!(run.stat("retried") >= 1, "{}", run.stderr);
    assert_eq!(run.stat("dead_lettered"), 0, "{}", run.stderr);
    assert_eq!(run.stat("processed"), 1, "{}", run.stderr);
    let variant = w.variant("80/s/a.jpg.jpg").await;
    assert_eq!(variant.metadata["resizeq-source-etag"], etag);
}

// --- 7b: SIGTERM with jobs waiting for the CPU ------------------------------------------------

#[tokio::test]
async fn sigterm_releases_jobs_that_have_not_started() {
    let test = "sigterm_releases_jobs_that_have_not_started";
    let ctx = context!(test);
    // Three copies of a 15 MP PNG: each holds the only CPU slot long enough to be seen.
    let Some(png) = corpus_file("png03_kay.png") else {
        return;
    };
    let files: Vec<(&str, Vec<u8>)> = ["a.png", "b.png", "c.png"]
        .into_iter()
        .map(|name| (name, png.clone()))
        .collect();
    let w = world(ctx, "rel", true).await;
    let uploads = w.upload_photos("rel", &files).await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let worker = w.spawn(
        false,
        &[
            ("RESIZEQ_WORKER__CPU_WORKERS", "1"),
            // Room for the 15 MP job in flight to finish on a loaded machine (it takes ~1 s
            // alone; on two cores shared with other tests and builds, 30 s was seen to be short).
            ("RESIZEQ_WORKER__SHUTDOWN_TIMEOUT_SECS", "90"),
            ("RESIZEQ_METRICS__LISTEN", listen.as_str()),
        ],
    );
    // One job has the only CPU slot; the other two have their object and wait for it.
    wait_until("two jobs wait for the CPU", || async {
        let metrics = http_get(port, "/metrics").await;
        metrics.is_some_and(|(_, text)| {
            sample(&text, "resizeq_jobs_waiting_for_cpu", &[]) == Some(2.0)
        })
    })
    .await;
    worker.signal("TERM");
    let signalled = Instant::now();
    let run = worker.finish(Duration::from_secs(100)).await;
    let took = signalled.elapsed();
    run.assert_success();
    let (processed, released) = (run.stat("processed"), run.stat("released"));
    let (visible, not_visible, delayed) = w.depth_of(&w.queue).await;
    let _ = writeln!(
        std::io::stderr(),
        "{test}: exit {took:?} after SIGTERM; processed {processed}, released {released}; \
         queue after ({visible}, {not_visible}, {delayed})"
    );
    assert_eq!(processed + released, uploads.len() as u64, "{}", run.stderr);
    assert!(
        released >= 1,
        "with one CPU worker some job must still have been waiting"
    );
    // Released messages are visible again at once, not after the visibility timeout.
    assert_eq!((visible, not_visible, delayed), (released, 0, 0));
    assert_eq!(w.dest_keys().await.len() as u64, processed * 2);

    let again = w.run_until_empty(&[]).await;
    again.assert_success();
    assert_eq!(again.stat("processed"), released, "{}", again.stderr);
    for (key, etag) in &uploads {
        assert_corpus_variants(&w, key, etag).await;
    }
    w.assert_queues_empty().await;
}

// --- 7c: SIGTERM with a job longer than the shutdown timeout ------------------------------------

/// A job still writing at the shutdown deadline is abandoned (its PUT is held by the proxy,
/// a stalled connection), the worker exits on time, and the message is not lost.
#[tokio::test]
async fn sigterm_abandons_a_job_at_the_shutdown_timeout() {
    let test = "sigterm_abandons_a_job_at_the_shutdown_timeout";
    let ctx = context!(test);
    let Some(big) = corpus_file("png03_kay.png") else {
        return;
    };
    let w = world(ctx, "aban", true).await;
    let key = "abandon/kay.png";
    let etag = w.upload(key, &big, "image/png").await;
    let proxy = FaultProxy::start(&w.aws.endpoint).await;
    proxy.add(Rule::new(Some("PUT"), format!("/{}/", w.dest), Fault::Hold));
    let settings = [
        ("RESIZEQ_WORKER__SHUTDOWN_TIMEOUT_SECS", "1"),
        ("RESIZEQ_QUEUE__VISIBILITY_TIMEOUT_SECS", "2"),
    ];
    let mut through_proxy = settings.to_vec();
    through_proxy.push(("RESIZEQ_AWS__ENDPOINT_URL", proxy.endpoint.as_str()));
    let worker = w.spawn(false, &through_proxy);
    wait_until("the job writes its first variant", || async {
        proxy.held() == 1
    })
    .await;
    worker.signal("TERM");
    let signalled = Instant::now();
    let signalled_at = std::time::SystemTime::now();
    let run = worker.finish(Duration::from_secs(30)).await;
    let took = signalled.elapsed();
    run.assert_success();
    let stopped_log = run
        .log_time("resizeq worker stopped")
        .and_then(|t| t.duration_since(signalled_at).ok());
    assert!(
        run.logs
            .iter()
            .any(|l| log_message(l).starts_with("shutdown timeout: abandoning jobs")),
        "{}",
        run.stderr
    );
    assert_eq!(run.stat("processed"), 0);
    assert_eq!(
        run.stat("released"),
        1,
        "an abandoned job counts as released"
    );
    assert!(
        took < Duration::from_millis(2500),
        "worker.shutdown_timeout_secs = 1 but the process took {took:?} to exit after \
         SIGTERM (its `resizeq worker stopped` line came {stopped_log:?} after SIGTERM)"
    );
    // Not lost: it reappears after its visibility timeout and a later run makes the variants.
    let again = w.run_until_empty(&settings).await;
    again.assert_success();
    assert_corpus_variants(&w, key, &etag).await;
    w.assert_queues_empty().await;
}

// --- 7d: a second signal during the drain exits at once -----------------------------------------

#[tokio::test]
async fn a_second_signal_exits_at_once() {
    let ctx = context!("a_second_signal_exits_at_once");
    let w = world(ctx, "sig2", true).await;
    let key = "twice/tiny.png";
    let etag = w.upload(key, &fixture("tiny.png"), "image/png").await;
    // The job's first PUT is held: it is still in flight when both signals come.
    let proxy = FaultProxy::start(&w.aws.endpoint).await;
    proxy.add(Rule::new(Some("PUT"), format!("/{}/", w.dest), Fault::Hold));
    let worker = w.spawn(
        false,
        &[
            ("RESIZEQ_WORKER__SHUTDOWN_TIMEOUT_SECS", "60"),
            ("RESIZEQ_QUEUE__VISIBILITY_TIMEOUT_SECS", "2"),
            ("RESIZEQ_AWS__ENDPOINT_URL", proxy.endpoint.as_str()),
        ],
    );
    wait_until("the job writes its first variant", || async {
        proxy.held() == 1
    })
    .await;
    worker.signal("TERM");
    wait_until("the drain begins", || async {
        worker.has_logged("stopping: finishing jobs in flight")
    })
    .await;
    worker.signal("INT");
    let run = worker.finish(Duration::from_secs(30)).await;
    assert!(!run.stderr.contains("variants written"), "{}", run.stderr);
    assert_eq!(run.status.code(), Some(130), "{}", run.stderr);
    assert!(
        run.logs
            .iter()
            .any(|l| log_message(l).starts_with("second signal")),
        "{}",
        run.stderr
    );
    // Nothing was acknowledged: the message comes back and is processed.
    let again = w
        .run_until_empty(&[("RESIZEQ_QUEUE__VISIBILITY_TIMEOUT_SECS", "2")])
        .await;
    again.assert_success();
    assert_eq!(w.dest_keys().await.len(), 2, "{}", again.stderr);
    let v = w.variant("500/twice/tiny.png.jpg").await;
    assert_eq!(
        v.metadata.get("resizeq-source-etag").map(String::as_str),
        Some(etag.as_str())
    );
    w.assert_queues_empty().await;
}

// --- Observability: /metrics, /healthz, /readyz ------------------------------------------------

/// A port free right now (the worker binds it a moment later).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET over plain HTTP/1.0: (status, body); `None` while nothing listens.
pub(crate) async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// One sample of a scrape: the value of `name` whose labels include all of `labels`.
pub(crate) fn sample(scrape: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            let matches = metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            matches.then(|| value.parse().ok()).flatten()
        })
}

#[tokio::test]
async fn metrics_count_what_the_worker_did() {
    let test = "metrics_count_what_the_worker_did";
    let ctx = context!(test);
    let w = world(ctx, "metr", true).await;
    w.upload("m/a.jpg", &fixture("tiny.jpg"), "image/jpeg")
        .await;
    w.upload("m/b.jpg", &fixture("tiny.jpg"), "image/jpeg")
        .await;
    w.upload("m/c.png", &fixture("tiny.png"), "image/png").await;
    w.upload("m/poison.jpg", b"not an image at all", "image/jpeg")
        .await;

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let worker = w.spawn(false, &[("RESIZEQ_METRICS__LISTEN", listen.as_str())]);
    let deadline = Instant::now() + RUN_TIMEOUT;
    let scrape = loop {
        assert!(
            Instant::now() < deadline,
            "the worker never finished the four uploads"
        );
        if let Some((200, text)) = http_get(port, "/metrics").await {
            let done = |outcome| {
                sample(&text, "resizeq_messages_total", &[("outcome", outcome)]).unwrap_or(0.0)
            };
            // Acks are batched after the outcome is counted: wait for the ack stage too.
            let acked = sample(
                &text,
                "resizeq_stage_duration_seconds_count",
                &[("stage", "ack")],
            );
            if done("processed") + done("dead_lettered") >= 4.0 && acked.is_some() {
                break text;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let value = |name: &str, labels: &[(&str, &str)]| {
        sample(&scrape, name, labels)
            .unwrap_or_else(|| panic!("{name}{labels:?} missing from /metrics:\n{scrape}"))
    };
    assert_eq!(value("resizeq_messages_received_total", &[]), 4.0);
    assert_eq!(
        value("resizeq_messages_total", &[("outcome", "processed")]),
        3.0
    );
    assert_eq!(
        value("resizeq_messages_total", &[("outcome", "dead_lettered")]),
        1.0
    );
    assert_eq!(
        value("resizeq_errors_total", &[("error_kind", "unsupported")]),
        1.0
    );
    // Real histograms (buckets), per stage.
    for (stage, count) in [
        ("get", 4.0), // the poison upload is fetched too
        ("decode", 3.0),
        ("resize", 3.0),
        ("encode", 3.0),
        ("put", 6.0),
    ] {
        assert_eq!(
            value("resizeq_stage_duration_seconds_count", &[("stage", stage)]),
            count,
            "{stage}"
        );
        assert_eq!(
            value(
                "resizeq_stage_duration_seconds_bucket",
                &[("stage", stage), ("le", "+Inf")]
            ),
            count,
            "{stage}"
        );
    }
    for stage in ["receive", "head", "ack"] {
        assert!(
            value("resizeq_stage_duration_seconds_count", &[("stage", stage)]) >= 1.0,
            "{stage}"
        );
    }
    assert_eq!(value("resizeq_message_duration_seconds_count", &[]), 4.0);
    assert_eq!(value("resizeq_message_age_seconds_count", &[]), 4.0);
    assert_eq!(value("resizeq_event_to_variants_seconds_count", &[]), 3.0);
    assert_eq!(value("resizeq_pipeline_cpu_seconds_count", &[]), 4.0); // the poison one fails inside the pipeline
    assert_eq!(
        value("resizeq_source_bytes_count", &[("format", "jpeg")]),
        2.0
    );
    assert_eq!(
        value("resizeq_source_bytes_count", &[("format", "png")]),
        1.0
    );
    assert_eq!(
        value("resizeq_source_pixels_count", &[("format", "png")]),
        1.0
    );
    for variant in ["80", "500"] {
        assert_eq!(
            value("resizeq_variants_written_total", &[("variant", variant)]),
            3.0
        );
        assert!(value("resizeq_output_bytes_total", &[("variant", variant)]) > 100.0);
    }
    assert_eq!(value("resizeq_jobs_in_flight", &[]), 0.0);
    assert_eq!(value("resizeq_memory_budget_bytes_in_use", &[]), 0.0);
    assert_eq!(
        value("resizeq_memory_budget_bytes", &[]),
        1024.0 * 1024.0 * 1024.0
    );
    assert_eq!(
        value(
            "resizeq_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(
        value(
            "resizeq_queue_messages",
            &[("queue", "source"), ("state", "visible")]
        ) >= 0.0
    );
    assert!(
        value(
            "resizeq_queue_messages",
            &[("queue", "dlq"), ("state", "visible")]
        ) >= 0.0
    );
    assert!(
        !scrape.contains("m/poison.jpg") && !scrape.contains(&w.source),
        "keys and bucket names never become labels"
    );

    assert_eq!(http_get(port, "/healthz").await.map(|r| r.0), Some(200));
    let (status, body) = http_get(port, "/readyz").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let (_, scrape) = http_get(port, "/metrics").await.unwrap();
    assert_eq!(sample(&scrape, "resizeq_ready", &[]), Some(1.0));

    worker.signal("TERM");
    worker.finish(RUN_TIMEOUT).await.assert_success();
}

#[tokio::test]
async fn not_ready_until_the_queue_answers_and_a_taken_port_fails_start_up() {
    let test = "not_ready_until_the_queue_answers_and_a_taken_port_fails_start_up";
    let ctx = context!(test);
    let w = world(ctx, "rdy", true).await;
    // Nothing listens on the AWS endpoint: polls fail, the process lives, it is not ready.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let worker = w.spawn(
        false,
        &[
            ("RESIZEQ_METRICS__LISTEN", listen.as_str()),
            ("RESIZEQ_AWS__ENDPOINT_URL", dead.as_str()),
            ("RESIZEQ_QUEUE__VISIBILITY_TIMEOUT_SECS", "30"),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let (status, body) = loop {
        if let Some(answer) = http_get(port, "/readyz").await {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "the metrics listener never came up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no successful poll"), "{body}");
    wait_until("a call to the queue has failed", || async {
        worker.has_logged("start-up: the queue did not answer; trying again")
            || worker.has_logged("receive failed")
    })
    .await;
    assert_eq!(http_get(port, "/readyz").await.map(|r| r.0), Some(503));
    assert_eq!(
        http_get(port, "/healthz").await.map(|r| r.0),
        Some(200),
        "alive, just not ready"
    );

    // A second worker on the same port exits non-zero, naming the address.
    let clash = w
        .spawn(false, &[("RESIZEQ_METRICS__LISTEN", listen.as_str())])
        .finish(RUN_TIMEOUT)
        .await;
    assert!(!clash.status.success());
    assert!(clash.stderr.contains(&listen), "{}", clash.stderr);
    worker.signal("TERM");
    worker.finish(RUN_TIMEOUT).await.assert_success();
}
