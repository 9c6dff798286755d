//! Helpers for the operator-tool tests (tests/ops_dlq.rs, tests/ops_backfill.rs): one test's
//! buckets and queues, the real `resizeq` binary run against moto with the config in the
//! environment, and queue inspection.
//!
//! Included with `#[path = "common/ops_world.rs"] mod ops_world;` next to `mod common;`.
#![allow(dead_code)] // each test crate uses its own share of these helpers

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use aws_sdk_sqs::types::{ChangeMessageVisibilityBatchRequestEntry, MessageAttributeValue};
use serde_json::Value;
use tokio::process::Command;

use crate::common::TestAws;

/// Generous: a debug build, moto in Python and several tests at once.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(180);

pub fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A source bucket, its `-resized` destination, a queue and its dead-letter queue (no bucket
/// notification: the tests put messages where they want them).
pub struct World {
    pub aws: TestAws,
    pub source: String,
    pub dest: String,
    pub queue: String,
    pub dlq: String,
    pub dir: tempfile::TempDir,
}

/// A message as a test sees it: body and string attributes.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: String,
    pub attributes: HashMap<String, String>,
}

/// What a `resizeq` run printed, and how it ended.
#[derive(Debug)]
pub struct Ran {
    pub output: Output,
}

impl Ran {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    pub fn assert_success(&self) -> &Ran {
        assert!(
            self.output.status.success(),
            "resizeq exited with {}\nstdout:\n{}\nstderr:\n{}",
            self.output.status,
            self.stdout(),
            self.stderr()
        );
        self
    }

    /// The `name=value` fields of the last stdout line (the summary line).
    pub fn summary(&self) -> HashMap<String, String> {
        let stdout = self.stdout();
        let line = stdout.lines().last().unwrap_or_default().to_string();
        line.split_whitespace()
            .filter_map(|f| f.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub fn field(&self, name: &str) -> u64 {
        let summary = self.summary();
        summary
            .get(name)
            .unwrap_or_else(|| panic!("no {name}= in the summary: {}", self.stdout()))
            .parse()
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout()))
    }

    /// The counters of the worker's final `resizeq worker stopped` log line.
    pub fn worker_stats(&self) -> HashMap<String, u64> {
        let stderr = self.stderr();
        let line = stderr
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| {
                l.pointer("/fields/message").and_then(Value::as_str)
                    == Some("resizeq worker stopped")
            })
            .unwrap_or_else(|| panic!("no `resizeq worker stopped` line in:\n{stderr}"));
        line["fields"]
            .as_object()
            .unwrap()
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
            .collect()
    }
}

pub async fn world(aws: TestAws, prefix: &str) -> World {
    let source = aws.create_bucket(prefix).await;
    let dest = format!("{source}-resized");
    aws.s3
        .create_bucket()
        .bucket(&dest)
        .send()
        .await
        .expect("CreateBucket destination");
    let (queue, dlq) = aws.create_queue_with_dlq(prefix, 30, 5).await;
    World {
        aws,
        source,
        dest,
        queue,
        dlq,
        dir: tempfile::tempdir().expect("tempdir"),
    }
}

impl World {
    /// `resizeq ARGS…` with the worker's config in the environment (queue, DLQ, endpoint),
    /// nothing inherited from the test's own RESIZEQ_ variables.
    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        self.aws
            .resizeq_command(self.dir.path(), &self.queue, &self.dlq, args, env)
    }

    /// Runs `resizeq ARGS…` to its end.
    pub async fn resizeq(&self, args: &[&str], env: &[(&str, &str)]) -> Ran {
        let child = self.command(args, env).spawn().expect("spawn resizeq");
        let output = tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("resizeq {args:?} did not exit within {RUN_TIMEOUT:?}"))
            .expect("wait for resizeq");
        Ran { output }
    }

    /// `resizeq run --until-empty`, successful.
    pub async fn work(&self, env: &[(&str, &str)]) -> Ran {
        let ran = self.resizeq(&["run", "--until-empty"], env).await;
        ran.assert_success();
        ran
    }

    /// Uploads `copies` copies of `bytes` as `{prefix}{i:03}.jpg`, 16 at a time; the keys.
    pub async fn upload_copies(&self, prefix: &str, bytes: &[u8], copies: usize) -> Vec<String> {
        let keys: Vec<String> = (0..copies).map(|i| format!("{prefix}{i:03}.jpg")).collect();
        for chunk in keys.chunks(16) {
            let mut uploads = tokio::task::JoinSet::new();
            for key in chunk {
                let (s3, bucket, key, bytes) = (
                    self.aws.s3.clone(),
                    self.source.clone(),
                    key.clone(),
                    bytes.to_vec(),
                );
                uploads.spawn(async move {
                    s3.put_object()
                        .bucket(bucket)
                        .key(&key)
                        .content_type("image/jpeg")
                        .body(bytes.into())
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("PutObject {key}: {e:?}"));
                });
            }
            while let Some(done) = uploads.join_next().await {
                done.expect("upload task");
            }
        }
        keys
    }

    /// Sends a message with these string attributes.
    pub async fn send(&self, url: &str, body: &str, attributes: &[(&str, &str)]) {
        let attributes: HashMap<String, MessageAttributeValue> = attributes
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    MessageAttributeValue::builder()
                        .data_type("String")
                        .string_value(*v)
                        .build()
                        .unwrap(),
                )
            })
            .collect();
        self.aws
            .sqs
            .send_message()
            .queue_url(url)
            .message_body(body)
            .set_message_attributes((!attributes.is_empty()).then_some(attributes))
            .send()
            .await
            .expect("SendMessage");
    }

    /// A dead letter as the worker writes it (see adapters::sqs::dead_letter_attributes).
    pub async fn dead_letter(&self, body: &str, kind: &str) {
        self.send(
            &self.dlq,
            body,
            &[
                ("error_kind", kind),
                ("error_reason", &format!("{body}: it went wrong")),
                ("source_queue", &self.queue),
                ("receive_count", "1"),
                ("first_failed_at", "2024-05-01T12:00:00Z"),
            ],
        )
        .await;
    }

    /// (visible, not visible, delayed).
    pub async fn depth_of(&self, url: &str) -> (u64, u64, u64) {
        self.aws.depth_of(url).await
    }

    /// Waits until `url` has at least `count` visible messages (a command under way has moved
    /// that many); panics after `timeout`.
    pub async fn wait_for_visible(&self, url: &str, count: u64, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (visible, _, _) = self.depth_of(url).await;
            if visible >= count {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{url}: only {visible} visible after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until nothing in `url` is in flight (leases ended); panics after `timeout`.
    pub async fn settle(&self, url: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (_, in_flight, delayed) = self.depth_of(url).await;
            if in_flight == 0 && delayed == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{url}: still {in_flight} in flight, {delayed} delayed after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Receives every visible message of `url`; with `delete`, takes them out, else makes
    /// them visible again before returning.
    pub async fn receive_all(&self, url: &str, delete: bool) -> Vec<Received> {
        let mut all = Vec::new();
        let mut receipts = Vec::new();
        loop {
            let got = self
                .aws
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(resizeq::ports::MAX_BATCH as i32)
                .visibility_timeout(60)
                .message_attribute_names("All")
                .wait_time_seconds(1)
                .send()
                .await
                .expect("ReceiveMessage");
            if got.messages().is_empty() {
                break;
            }
            for m in got.messages() {
                all.push(Received {
                    body: m.body().unwrap_or_default().to_string(),
                    attributes: crate::common::string_attributes(m),
                });
                receipts.push(m.receipt_handle().unwrap().to_string());
            }
        }
        for chunk in receipts.chunks(resizeq::ports::MAX_BATCH) {
            if delete {
                for receipt in chunk {
                    self.aws
                        .sqs
                        .delete_message()
                        .queue_url(url)
                        .receipt_handle(receipt)
                        .send()
                        .await
                        .expect("DeleteMessage");
                }
            } else {
                let entries = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        ChangeMessageVisibilityBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(r)
                            .visibility_timeout(0)
                            .build()
                            .unwrap()
                    })
                    .collect();
                self.aws
                    .sqs
                    .change_message_visibility_batch()
                    .queue_url(url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .expect("ChangeMessageVisibilityBatch");
            }
        }
        all
    }

    /// Keys in a bucket (all pages), sorted.
    pub async fn keys(&self, bucket: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut pages = self
            .aws
            .s3
            .list_objects_v2()
            .bucket(bucket)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.expect("ListObjectsV2");
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(String::from)),
            );
        }
        keys.sort();
        keys
    }

    pub async fn object(&self, bucket: &str, key: &str) -> (Vec<u8>, HashMap<String, String>) {
        let out = self
            .aws
            .s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GetObject {bucket}/{key}: {e:?}"));
        let metadata = out.metadata().cloned().unwrap_or_default();
        let bytes = out
            .body
            .collect()
            .await
            .expect("body")
            .into_bytes()
            .to_vec();
        (bytes, metadata)
    }
}

/// The keys named by S3 event bodies (one record each), counted.
pub fn event_keys(messages: &[Received]) -> (HashSet<String>, usize) {
    let mut keys = HashSet::new();
    let mut count = 0;
    for m in messages {
        let parsed = resizeq::event::parse(&m.body).expect("an S3 event");
        let created = parsed.created();
        assert!(!created.is_empty(), "no created object in {parsed:?}");
        for e in created {
            count += 1;
            keys.insert(e.key.clone());
        }
    }
    (keys, count)
}
