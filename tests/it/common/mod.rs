//! Shared context for the tests that talk to an S3/SQS emulator (moto, started by
//! `scripts/moto.sh`, which exports `RESIZEQ_TEST_ENDPOINT` and test credentials).
//!
//! Without `RESIZEQ_TEST_ENDPOINT` the tests print `MOTO MISSING: … skipped` and pass, unless
//! `RESIZEQ_TEST_REQUIRE_ENDPOINT` is set (as `scripts/test` does), in which case they fail.
//! To run them by hand: `source scripts/moto.sh && cargo test --test aws_adapters`.

pub mod fault_proxy;
pub mod jwt_keys;
pub mod ops_world;
pub mod s3s;

use std::collections::HashMap;
use std::io::Write;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
use aws_sdk_sqs::types::QueueAttributeName;
use resizeq::adapters::aws;
use resizeq::adapters::s3::S3Store;
use resizeq::adapters::sqs::SqsQueue;
use resizeq::config::AwsConfig;

pub const ENDPOINT_VAR: &str = "RESIZEQ_TEST_ENDPOINT";
pub const REQUIRE_VAR: &str = "RESIZEQ_TEST_REQUIRE_ENDPOINT";

pub struct TestAws {
    pub endpoint: String,
    pub aws: AwsConfig,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
}

/// The clients, built as the daemon builds them (`resizeq::adapters::aws`), or `None` (after
/// saying so) when no emulator is configured and none is required.
pub async fn context(test: &str) -> Option<TestAws> {
    let endpoint = match std::env::var(ENDPOINT_VAR) {
        Ok(e) if !e.is_empty() => e,
        _ => {
            if std::env::var_os(REQUIRE_VAR).is_some_and(|v| !v.is_empty()) {
                panic!(
                    "{REQUIRE_VAR} is set but {ENDPOINT_VAR} is not: \
                     start moto with `source scripts/moto.sh`"
                );
            }
            // Straight to stderr, past the test harness's capture, so a plain `cargo test`
            // shows what was skipped.
            let _ = writeln!(
                std::io::stderr(),
                "MOTO MISSING: {ENDPOINT_VAR} is not set; {test} skipped"
            );
            return None;
        }
    };
    let aws = AwsConfig {
        region: Some(std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into())),
        endpoint_url: Some(endpoint.clone()),
        force_path_style: true,
        ..AwsConfig::default()
    };
    let sdk = aws::sdk_config(&aws).await;
    Some(TestAws {
        s3: aws::s3_client(&sdk, &aws),
        sqs: aws::sqs_client(&sdk),
        endpoint,
        aws,
    })
}

/// `prefix-` and 10 random lowercase letters and digits: valid as a bucket or a queue name.
pub fn unique(prefix: &str) -> String {
    let suffix: String = std::iter::repeat_with(fastrand::lowercase)
        .take(6)
        .chain(std::iter::repeat_with(|| fastrand::digit(10)).take(4))
        .collect();
    format!("rq-{prefix}-{suffix}")
}

impl TestAws {
    /// (visible, not visible, delayed) of a queue, as SQS reports them.
    pub async fn depth_of(&self, url: &str) -> (u64, u64, u64) {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .expect("GetQueueAttributes");
        let attrs = out.attributes().cloned().unwrap_or_default();
        let n = |name: QueueAttributeName| -> u64 {
            attrs
                .get(&name)
                .map(|v| v.parse().expect("a count"))
                .unwrap_or(0)
        };
        (
            n(QueueAttributeName::ApproximateNumberOfMessages),
            n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            n(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        )
    }

    /// The `resizeq` binary set up against this emulator, as the end-to-end tests run it: none
    /// of the caller's `RESIZEQ_*` variables, the given queue pair, path-style S3, 1 s polls and
    /// retries (within a 10 s retry window), logs at info (JSON: stderr is a pipe), no fixed metrics port (tests run side by
    /// side), no instance metadata; `args` and `env` come on top.
    pub fn resizeq_command(
        &self,
        dir: &std::path::Path,
        queue: &str,
        dlq: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> tokio::process::Command {
        use std::process::Stdio;
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_resizeq"));
        cmd.args(args);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("RESIZEQ_") {
                cmd.env_remove(name);
            }
        }
        let region = self.aws.region.clone().unwrap_or("us-east-1".into());
        cmd.current_dir(dir)
            .env("RESIZEQ_QUEUE__URL", queue)
            .env("RESIZEQ_QUEUE__DLQ_URL", dlq)
            .env("RESIZEQ_AWS__ENDPOINT_URL", &self.endpoint)
            .env("RESIZEQ_AWS__FORCE_PATH_STYLE", "true")
            .env("RESIZEQ_AWS__REGION", region)
            .env("RESIZEQ_QUEUE__WAIT_TIME_SECS", "1")
            .env("RESIZEQ_QUEUE__RETRY_BASE_SECS", "1")
            // Short enough that 1 s doubling fills it unstretched (1, 2, 4, 8 s).
            .env("RESIZEQ_QUEUE__RETRY_WINDOW_SECS", "10")
            .env("RESIZEQ_LOG", "info")
            .env("RESIZEQ_METRICS__LISTEN", "127.0.0.1:0")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
            if std::env::var_os(var).is_none() {
                cmd.env(var, "testing");
            }
        }
        cmd.envs(env.iter().copied());
        cmd
    }

    pub fn queue(&self, url: &str, dlq_url: Option<&str>) -> SqsQueue {
        SqsQueue::new(self.sqs.clone(), url, dlq_url.map(String::from))
    }

    pub fn store(&self) -> S3Store {
        S3Store::new(self.s3.clone())
    }

    /// A new queue with the given visibility timeout; its URL.
    pub async fn create_queue(&self, prefix: &str, visibility_secs: u32) -> String {
        self.create_queue_with(prefix, visibility_secs, HashMap::new())
            .await
    }

    async fn create_queue_with(
        &self,
        prefix: &str,
        visibility_secs: u32,
        mut attributes: HashMap<QueueAttributeName, String>,
    ) -> String {
        attributes.insert(
            QueueAttributeName::VisibilityTimeout,
            visibility_secs.to_string(),
        );
        let out = self
            .sqs
            .create_queue()
            .queue_name(unique(prefix))
            .set_attributes(Some(attributes))
            .send()
            .await
            .expect("CreateQueue");
        out.queue_url().expect("a queue URL").to_string()
    }

    /// A queue and its dead-letter queue, joined by a RedrivePolicy: `(queue, dlq)` URLs.
    pub async fn create_queue_with_dlq(
        &self,
        prefix: &str,
        visibility_secs: u32,
        max_receive_count: u32,
    ) -> (String, String) {
        let dlq = self.create_queue(&format!("{prefix}-dlq"), 30).await;
        let dlq_arn = self.queue_arn(&dlq).await;
        let policy = serde_json::json!({
            "deadLetterTargetArn": dlq_arn,
            "maxReceiveCount": max_receive_count.to_string(),
        });
        let queue = self
            .create_queue_with(
                prefix,
                visibility_secs,
                HashMap::from([(QueueAttributeName::RedrivePolicy, policy.to_string())]),
            )
            .await;
        (queue, dlq)
    }

    pub async fn queue_arn(&self, url: &str) -> String {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("GetQueueAttributes QueueArn");
        out.attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn))
            .expect("a QueueArn")
            .clone()
    }

    pub async fn create_bucket(&self, prefix: &str) -> String {
        let name = unique(prefix);
        self.s3
            .create_bucket()
            .bucket(&name)
            .send()
            .await
            .expect("CreateBucket");
        name
    }

    /// S3 → SQS notifications of every `s3:ObjectCreated:*` and `s3:ObjectRemoved:*` in
    /// `bucket` (as deploy/ subscribes them), with the queue policy AWS requires for them
    /// (moto does not check it).
    pub async fn notify_queue(&self, bucket: &str, queue_url: &str) {
        let queue_arn = self.queue_arn(queue_url).await;
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnLike": {"aws:SourceArn": format!("arn:aws:s3:::{bucket}")}},
            }],
        });
        self.sqs
            .set_queue_attributes()
            .queue_url(queue_url)
            .attributes(QueueAttributeName::Policy, policy.to_string())
            .send()
            .await
            .expect("SetQueueAttributes Policy");
        let config = NotificationConfiguration::builder()
            .queue_configurations(
                QueueConfiguration::builder()
                    .id("resizeq-test")
                    .queue_arn(queue_arn)
                    .events(Event::from("s3:ObjectCreated:*"))
                    .events(Event::from("s3:ObjectRemoved:*"))
                    .build()
                    .expect("QueueConfiguration"),
            )
            .build();
        self.s3
            .put_bucket_notification_configuration()
            .bucket(bucket)
            .notification_configuration(config)
            .send()
            .await
            .expect("PutBucketNotificationConfiguration");
    }

    /// Uploads with the raw client (as a user would); returns the ETag without quotes.
    pub async fn upload(
        &self,
        bucket: &str,
        key: &str,
        bytes: &[u8],
        content_type: &str,
        metadata: &[(&str, &str)],
    ) -> String {
        let metadata: HashMap<String, String> = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let out = self
            .s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .set_metadata((!metadata.is_empty()).then_some(metadata))
            .body(ByteStream::from(bytes.to_vec()))
            .send()
            .await
            .expect("PutObject");
        out.e_tag().expect("an ETag").trim_matches('"').to_string()
    }
}

/// A received message's string attributes (dead letters carry their reason in them).
pub fn string_attributes(m: &aws_sdk_sqs::types::Message) -> HashMap<String, String> {
    m.message_attributes()
        .map(|a| {
            a.iter()
                .map(|(k, v)| (k.clone(), v.string_value().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `condition` holds, looking every 20 ms, for at most 60 s; then fails naming
/// `what`. For conditions a test cannot be told about (a process's progress, a queue's state).
pub async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !condition().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after 60 s waiting until {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A committed test file under tests/fixtures.
pub fn fixture_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = fixture_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The corpus of real photos (`RESIZEQ_CORPUS`, else `../shared/corpus`), or `None` after
/// saying `CORPUS MISSING`; with `RESIZEQ_TEST_REQUIRE_ENDPOINT` set, a missing corpus fails.
pub fn corpus_dir() -> Option<std::path::PathBuf> {
    let dir = match std::env::var_os("RESIZEQ_CORPUS") {
        Some(d) if !d.is_empty() => std::path::PathBuf::from(d),
        _ => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"),
    };
    if dir.join("README.md").is_file() {
        return Some(dir);
    }
    if std::env::var_os(REQUIRE_VAR).is_some_and(|v| !v.is_empty()) {
        panic!(
            "{REQUIRE_VAR} is set but the corpus is not at {} (set RESIZEQ_CORPUS)",
            dir.display()
        );
    }
    let _ = writeln!(
        std::io::stderr(),
        "CORPUS MISSING: {} not found (set RESIZEQ_CORPUS); corpus tests skipped",
        dir.display()
    );
    None
}

/// One corpus photo's bytes, or `None` when the corpus is missing and not required.
pub fn corpus_file(name: &str) -> Option<Vec<u8>> {
    let path = corpus_dir()?.join(name);
    Some(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}
