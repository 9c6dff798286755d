//! Configuration: built-in defaults → TOML file → `RESIZEQ_…` environment (`__` nests:
//! `RESIZEQ_LIMITS__MAX_PIXELS=50000000`). Unknown keys are errors that name the key, so a
//! typo never silently falls back to a default.

use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::events::EventsTarget;
use crate::pipeline::settings::{
    default_variants, Limits, OutputSettings, PipelineSettings, VariantSpec,
};
use crate::ports::{MAX_BATCH, MAX_VISIBILITY_SECS};

/// The longest `queue.max_lease_secs`: half of the 12 h SQS allows from a receive, the rest
/// left for the retry delay after it.
pub const MAX_LEASE_SECS: u64 = MAX_VISIBILITY_SECS / 2;

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_FILE: &str = "resizeq.toml";
pub const ENV_PREFIX: &str = "RESIZEQ_";

/// `RESIZEQ_` variables that are not config keys (test and benchmark knobs).
const NON_CONFIG_ENV: &[&str] = &["CORPUS", "BENCH_CMD", "LOG", "TEST_KEEP"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_variants")]
    pub variants: Vec<VariantSpec>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub output: OutputSettings,
    #[serde(default)]
    pub queue: QueueConfig,
    #[serde(default)]
    pub aws: AwsConfig,
    #[serde(default)]
    pub destination: DestinationConfig,
    #[serde(default)]
    pub filters: Filters,
    #[serde(default)]
    pub worker: WorkerConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub lifecycle: LifecycleConfig,
    pub events: EventsConfig,
    /// The sidecar's section: both binaries read one file, each ignores the other's keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presign: Option<figment::value::Value>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            variants: default_variants(),
            limits: Limits::default(),
            output: OutputSettings::default(),
            queue: QueueConfig::default(),
            aws: AwsConfig::default(),
            destination: DestinationConfig::default(),
            filters: Filters::default(),
            worker: WorkerConfig::default(),
            metrics: MetricsConfig::default(),
            lifecycle: LifecycleConfig::default(),
            events: EventsConfig::default(),
            presign: None,
        }
    }
}

/// The SQS queue the worker consumes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Unset: `resizeq run` works on the local folder `local.root` instead (local mode).
    pub url: Option<String>,
    /// Where permanent failures go at once, with their reason. Unset: they are left to the
    /// queue's redrive policy (never deleted).
    pub dlq_url: Option<String>,
    /// Long-poll wait, 0–20 s.
    pub wait_time_secs: u64,
    /// Messages per receive, 1–10.
    pub max_messages: u32,
    /// Overrides the queue's visibility timeout on receive. Unset: the queue's own.
    pub visibility_timeout_secs: Option<u64>,
    /// A job's lease is extended up to this long in all (at most 6 h).
    pub max_lease_secs: u64,
    /// First retry delay of a transient failure; doubles per receive, with jitter.
    pub retry_base_secs: u64,
    /// Longest single retry delay while that doubling alone fills the retry window.
    pub retry_max_secs: u64,
    /// The retries of a transient failure span at least this long within the queue's
    /// maxReceiveCount (delays are stretched to fit); then the worker dead-letters the message
    /// itself as `transient_exhausted`, with the last error as the reason. The queue's
    /// MessageRetentionPeriod ends retries earlier when it is shorter.
    pub retry_window_secs: u64,
    /// How long start-up keeps retrying a queue that does not answer before giving up.
    pub startup_deadline_secs: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            url: None,
            dlq_url: None,
            wait_time_secs: 20,
            max_messages: 10,
            visibility_timeout_secs: None,
            max_lease_secs: 15 * 60,
            retry_base_secs: 5,
            retry_max_secs: 15 * 60,
            retry_window_secs: 30 * 60,
            startup_deadline_secs: 10 * 60,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsConfig {
    /// Unset: aws-config's chain (`AWS_REGION`, profile, IMDS).
    pub region: Option<String>,
    /// An S3/SQS-compatible endpoint (tests, MinIO-likes). Unset: AWS (or `AWS_ENDPOINT_URL`).
    pub endpoint_url: Option<String>,
    /// Path-style S3 addressing (`http://host/bucket/key`), needed by most emulators.
    pub force_path_style: bool,
    /// Time allowed to open a connection to S3 or SQS.
    pub connect_timeout_secs: u64,
    /// Time allowed for one attempt of any AWS call (the SDK retries up to 3 attempts); must
    /// exceed the long-poll wait.
    pub attempt_timeout_secs: u64,
}

impl Default for AwsConfig {
    fn default() -> Self {
        AwsConfig {
            region: None,
            endpoint_url: None,
            force_path_style: false,
            connect_timeout_secs: 5,
            attempt_timeout_secs: 60,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DestinationConfig {
    /// Unset: the source bucket + `-resized`.
    pub bucket: Option<String>,
    pub cache_control: Option<String>,
}

impl Default for DestinationConfig {
    fn default() -> Self {
        DestinationConfig {
            bucket: None,
            cache_control: Some("public, max-age=31536000, immutable".into()),
        }
    }
}

impl DestinationConfig {
    /// Whether `bucket` holds our outputs: the configured destination, or any `*-resized`
    /// bucket (the default destination of every source). Events there are never processed
    /// (that would loop), and local mode never treats such folders as sources.
    pub fn is_destination_bucket(&self, bucket: &str) -> bool {
        self.bucket.as_deref() == Some(bucket) || bucket.ends_with("-resized")
    }

    pub fn bucket_for(&self, source_bucket: &str) -> String {
        self.bucket
            .clone()
            .unwrap_or_else(|| format!("{source_bucket}-resized"))
    }
}

/// What happens to variants when their source goes away.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    /// On `ObjectRemoved` events (and when a source is overwritten by something that is not
    /// an image), delete the variants made from it.
    pub delete_variants: bool,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            delete_variants: true,
        }
    }
}

/// Which keys are processed. Empty include lists include everything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Filters {
    pub include_prefixes: Vec<String>,
    pub exclude_prefixes: Vec<String>,
    /// Matched case-insensitively (`.JPG` is `.jpg`).
    pub include_suffixes: Vec<String>,
    pub exclude_suffixes: Vec<String>,
}

impl Filters {
    pub fn accepts(&self, key: &str) -> bool {
        let lower = key.to_ascii_lowercase();
        let has_suffix = |list: &[String]| {
            list.iter()
                .any(|s| lower.ends_with(&s.to_ascii_lowercase()))
        };
        (self.include_prefixes.is_empty()
            || self
                .include_prefixes
                .iter()
                .any(|p| key.starts_with(p.as_str())))
            && !self
                .exclude_prefixes
                .iter()
                .any(|p| key.starts_with(p.as_str()))
            && (self.include_suffixes.is_empty() || has_suffix(&self.include_suffixes))
            && !has_suffix(&self.exclude_suffixes)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Messages being worked on at once (received and not yet acknowledged).
    pub max_in_flight: usize,
    /// Images decoded at once. 0: the number of cores.
    pub cpu_workers: usize,
    /// Estimated decode memory of the images in the pipeline at once, MiB. A job over the
    /// whole budget still runs, alone.
    pub memory_budget_mib: u64,
    /// After SIGTERM, how long in-flight jobs may take to finish.
    pub shutdown_timeout_secs: u64,
    /// A job still running after this long is stopped and its message retried (transient).
    pub job_deadline_secs: u64,
    /// `/healthz` fails when every job slot has been busy this long without one freeing, or a
    /// job outlives its deadline by this long.
    pub stall_secs: u64,
    /// Local mode: the folder whose `<bucket>/` subfolders are watched.
    pub local_root: String,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            max_in_flight: 16,
            cpu_workers: 0,
            memory_budget_mib: 1024,
            shutdown_timeout_secs: 25,
            job_deadline_secs: 10 * 60,
            stall_secs: 5 * 60,
            local_root: "data".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Prometheus `/metrics`, `/healthz` and `/readyz`.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: "0.0.0.0:9090".into(),
        }
    }
}

/// Events for the application (`crate::events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Where events go: an SQS queue URL, an SNS topic ARN, an EventBridge bus ARN or
    /// `eventbridge:NAME` (see `events::target`). Empty: no events (local mode always appends
    /// them to `<local_root>/<bucket>-events.jsonl`).
    pub target: String,
}

impl EventsConfig {
    /// The parsed target; `None` when events are off.
    pub fn target(&self) -> Result<Option<EventsTarget>> {
        EventsTarget::parse_optional(&self.target)
    }
}

/// The file and environment layers shared by both binaries (the sidecar's config is in
/// `presign::config`): `file` (which must exist), else `resizeq.toml` if present, then the
/// `RESIZEQ_` variables among `env`. Merge it over your own defaults.
pub fn sources(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Figment> {
    let mut figment = Figment::new();
    let file: Option<PathBuf> = match file {
        Some(path) if !path.is_file() => {
            return Err(Error::config(format!(
                "config file {} does not exist",
                path.display()
            )))
        }
        Some(path) => Some(path.to_path_buf()),
        None => Some(PathBuf::from(DEFAULT_FILE)).filter(|p| p.is_file()),
    };
    if let Some(path) = &file {
        figment = figment.merge(Toml::file_exact(path));
    }
    let env: Vec<(String, String)> = env
        .into_iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(ENV_PREFIX)?.to_string(), v)))
        .filter(|(k, _)| !NON_CONFIG_ENV.contains(&k.as_str()))
        .collect();
    if !env.is_empty() {
        // Figment's Env reads the process environment; feed it ours through a dedicated
        // provider so tests can pass their own.
        figment = figment.merge(EnvProvider(env));
    }
    Ok(figment)
}

impl Config {
    /// Loads from `file` (which must exist), else from `resizeq.toml` if present, then the
    /// environment, and validates.
    pub fn load(file: Option<&Path>) -> Result<Config> {
        Self::load_from(file, std::env::vars())
    }

    /// As [`Config::load`], with the environment passed in (tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config> {
        let figment =
            Figment::from(Serialized::defaults(Config::default())).merge(sources(file, env)?);
        let config: Config = figment.extract().map_err(describe_figment_error)?;
        config.pipeline_settings().validate()?;
        config.validate_worker()?;
        Ok(config)
    }

    fn validate_worker(&self) -> Result<()> {
        let q = &self.queue;
        if q.wait_time_secs > 20 {
            return Err(Error::config("queue.wait_time_secs: SQS allows 0 to 20"));
        }
        if !(1..=MAX_BATCH as u32).contains(&q.max_messages) {
            return Err(Error::config("queue.max_messages: SQS allows 1 to 10"));
        }
        if q.visibility_timeout_secs
            .is_some_and(|v| v == 0 || v > MAX_VISIBILITY_SECS)
        {
            return Err(Error::config(
                "queue.visibility_timeout_secs: SQS allows 1 to 43200",
            ));
        }
        // SQS keeps a message hidden at most 12 h from its receive: what the lease used of them
        // is not left for the retry delay that follows.
        if q.max_lease_secs == 0 || q.max_lease_secs > MAX_LEASE_SECS {
            return Err(Error::config(format!(
                "queue.max_lease_secs: need 1 to {MAX_LEASE_SECS} (6 h), so that a retry delay \
                 of up to the rest of SQS's 12 h from the receive follows it"
            )));
        }
        let max_delay = MAX_VISIBILITY_SECS - q.max_lease_secs;
        if q.retry_base_secs == 0
            || q.retry_max_secs < q.retry_base_secs
            || q.retry_max_secs > max_delay
        {
            return Err(Error::config(format!(
                "queue.retry_base_secs / retry_max_secs: need 1 <= base <= max <= {max_delay} \
                 (SQS's 12 h from the receive, less queue.max_lease_secs)"
            )));
        }
        if q.retry_window_secs == 0 || q.startup_deadline_secs == 0 {
            return Err(Error::config(
                "queue.retry_window_secs / startup_deadline_secs: must be at least 1",
            ));
        }
        let aws = &self.aws;
        if aws.connect_timeout_secs == 0 || aws.attempt_timeout_secs <= q.wait_time_secs {
            return Err(Error::config(format!(
                "aws.connect_timeout_secs / attempt_timeout_secs: need connect >= 1 and attempt \
                 > queue.wait_time_secs ({}), or every long poll would time out",
                q.wait_time_secs
            )));
        }
        let w = &self.worker;
        if w.job_deadline_secs == 0 || w.job_deadline_secs > q.max_lease_secs {
            return Err(Error::config(format!(
                "worker.job_deadline_secs: need 1 to queue.max_lease_secs ({}), so that no \
                 lease runs out under a running job",
                q.max_lease_secs
            )));
        }
        if w.stall_secs == 0 {
            return Err(Error::config("worker.stall_secs: must be at least 1"));
        }
        if self.worker.max_in_flight == 0 {
            return Err(Error::config("worker.max_in_flight: must be at least 1"));
        }
        if self.worker.memory_budget_mib == 0 {
            return Err(Error::config(
                "worker.memory_budget_mib: must be at least 1",
            ));
        }
        for (key, url) in [
            ("queue.url", &q.url),
            ("queue.dlq_url", &q.dlq_url),
            ("aws.endpoint_url", &self.aws.endpoint_url),
        ] {
            if let Some(url) = url {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(Error::config(format!(
                        "{key}: `{url}` is not an http(s) URL"
                    )));
                }
            }
        }
        if q.dlq_url.is_some() && q.dlq_url == q.url {
            return Err(Error::config("queue.dlq_url: must not be the queue itself"));
        }
        self.events.target()?;
        if self.metrics.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(Error::config(format!(
                "metrics.listen: `{}` is not an address like 0.0.0.0:9090",
                self.metrics.listen
            )));
        }
        Ok(())
    }

    pub fn pipeline_settings(&self) -> PipelineSettings {
        PipelineSettings {
            variants: self.variants.clone(),
            limits: self.limits.clone(),
            output: self.output.clone(),
        }
    }

    /// The effective config as TOML, secrets redacted.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        if let Some(presign) = &mut shown.presign {
            redact(presign);
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// Key names whose values never leave the process.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["secret", "password", "token", "sha256", "access_key"]
        .iter()
        .any(|s| key.contains(s))
}

fn redact(value: &mut figment::value::Value) {
    use figment::value::Value;
    match value {
        Value::Dict(_, dict) => {
            for (k, v) in dict.iter_mut() {
                if is_secret_key(k) {
                    *v = Value::from("<redacted>");
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(_, items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// One line per problem, naming the key and where its value came from.
pub fn describe_figment_error(e: figment::Error) -> Error {
    let messages: Vec<String> = e
        .into_iter()
        .map(|err| {
            let mut path: Vec<&str> = err.path.iter().map(String::as_str).collect();
            if path.first() == Some(&"default") {
                path.remove(0); // figment's profile, not a key of ours
            }
            let key = if path.is_empty() {
                "(top level)".to_string()
            } else {
                path.join(".")
            };
            let source = err
                .metadata
                .as_ref()
                .map(|m| {
                    format!(
                        " (from {})",
                        m.source
                            .as_ref()
                            .map_or_else(|| m.name.to_string(), |s| s.to_string())
                    )
                })
                .unwrap_or_default();
            format!("key `{key}`: {}{source}", err.kind)
        })
        .collect();
    Error::config(format!("invalid config: {}", messages.join("; ")))
}

/// `RESIZEQ_`-stripped variables as a figment provider, with `__` for nesting and values
/// parsed like figment's own `Env` (numbers, booleans, arrays, inline tables). Figment's `Env`
/// always reads the process environment; this one takes the variables it is given, so tests
/// need not mutate global state.
struct EnvProvider(Vec<(String, String)>);

impl figment::Provider for EnvProvider {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("RESIZEQ_ environment variable(s)")
    }

    fn data(
        &self,
    ) -> std::result::Result<
        figment::value::Map<figment::Profile, figment::value::Dict>,
        figment::Error,
    > {
        let mut figment = Figment::new();
        for (key, value) in &self.0 {
            let key = key.to_ascii_lowercase().replace("__", ".");
            let parsed: figment::value::Value =
                value.parse().unwrap_or_else(|_| value.as_str().into());
            figment = figment.merge(Serialized::global(&key, parsed));
        }
        figment.data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn defaults_are_the_lambda_outputs() {
        let c = Config::load_from(None, env(&[])).unwrap();
        let widths: Vec<_> = c.variants.iter().map(|v| v.width).collect();
        assert_eq!(widths, [Some(80), Some(500)]);
        assert_eq!(c.variants[0].quality, 80);
        assert_eq!(c.limits.max_pixels, 100_000_000);
    }

    #[test]
    fn file_then_environment_override_defaults() {
        let f = file("[limits]\nmax_pixels = 5000\nmax_frames = 7\n[[variants]]\nwidth = 64\nformat = \"webp\"\n");
        let c = Config::load_from(
            Some(f.path()),
            env(&[("RESIZEQ_LIMITS__MAX_PIXELS", "6000")]),
        )
        .unwrap();
        assert_eq!(c.limits.max_pixels, 6000);
        assert_eq!(c.limits.max_frames, 7);
        assert_eq!(c.variants.len(), 1);
        assert_eq!(
            c.variants[0].format,
            crate::pipeline::settings::OutputFormat::Webp
        );
    }

    #[test]
    fn unknown_key_in_file_is_rejected_and_named() {
        let f = file("[limits]\nmax_pixles = 5\n");
        let err = Config::load_from(Some(f.path()), env(&[])).unwrap_err();
        assert!(err.message().contains("max_pixles"), "{err}");
    }

    #[test]
    fn unknown_key_in_environment_is_rejected_and_named() {
        let err =
            Config::load_from(None, env(&[("RESIZEQ_OUTPUT__KEY_TEMPLTE", "x")])).unwrap_err();
        assert!(err.message().contains("key_templte"), "{err}");
    }

    #[test]
    fn invalid_value_names_the_key() {
        let f = file("[limits]\nmax_pixels = \"lots\"\n");
        let err = Config::load_from(Some(f.path()), env(&[])).unwrap_err();
        assert!(err.message().contains("limits.max_pixels"), "{err}");
        let f = file("[[variants]]\nwidth = 80\nquality = 101\n");
        let err = Config::load_from(Some(f.path()), env(&[])).unwrap_err();
        assert!(err.message().contains("variants[0].quality"), "{err}");
        let f = file("[output]\nmetadata = \"some\"\n");
        let err = Config::load_from(Some(f.path()), env(&[])).unwrap_err();
        assert!(err.message().contains("output.metadata"), "{err}");
    }

    #[test]
    fn presign_section_is_accepted_and_its_secrets_redacted() {
        let f = file("[presign]\nbucket = \"b\"\n[presign.auth.jwt]\nhs256_secret = \"hunter2\"\n");
        let c = Config::load_from(Some(f.path()), env(&[])).unwrap();
        let shown = c.to_toml();
        assert!(shown.contains("bucket = \"b\""), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn a_lease_and_retry_delay_must_fit_sqs_12_hours_from_the_receive() {
        let load = |vars: &[(&str, &str)]| Config::load_from(None, env(vars));
        let err = load(&[("RESIZEQ_QUEUE__MAX_LEASE_SECS", "43200")]).unwrap_err();
        assert!(
            err.message()
                .contains("queue.max_lease_secs: need 1 to 21600"),
            "{err}"
        );
        let err = load(&[("RESIZEQ_QUEUE__RETRY_MAX_SECS", "43000")]).unwrap_err();
        assert!(err.message().contains("max <= 42300"), "{err}");
        let c = load(&[
            ("RESIZEQ_QUEUE__MAX_LEASE_SECS", "21600"),
            ("RESIZEQ_QUEUE__RETRY_MAX_SECS", "21600"),
        ])
        .unwrap();
        assert_eq!(c.queue.max_lease_secs, 21600);
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let err = Config::load_from(Some(Path::new("/nonexistent/r.toml")), env(&[])).unwrap_err();
        assert!(err.message().contains("/nonexistent/r.toml"));
    }

    #[test]
    fn worker_keys_come_from_file_and_environment() {
        let f = file(
            "[queue]\nurl = \"http://127.0.0.1:5000/123/q\"\n[destination]\nbucket = \"thumbs\"\n",
        );
        let c = Config::load_from(
            Some(f.path()),
            env(&[
                ("RESIZEQ_QUEUE__DLQ_URL", "http://127.0.0.1:5000/123/dlq"),
                ("RESIZEQ_AWS__FORCE_PATH_STYLE", "true"),
            ]),
        )
        .unwrap();
        assert_eq!(c.queue.url.as_deref(), Some("http://127.0.0.1:5000/123/q"));
        assert_eq!(
            c.queue.dlq_url.as_deref(),
            Some("http://127.0.0.1:5000/123/dlq")
        );
        assert!(c.aws.force_path_style);
        assert_eq!(c.destination.bucket_for("photos"), "thumbs");
        assert_eq!(
            Config::default().destination.bucket_for("photos"),
            "photos-resized"
        );
    }

    #[test]
    fn worker_values_are_checked() {
        let err =
            Config::load_from(None, env(&[("RESIZEQ_QUEUE__MAX_MESSAGES", "11")])).unwrap_err();
        assert!(err.message().contains("queue.max_messages"), "{err}");
        let err = Config::load_from(None, env(&[("RESIZEQ_METRICS__LISTEN", "nine")])).unwrap_err();
        assert!(err.message().contains("metrics.listen"), "{err}");
        let err = Config::load_from(None, env(&[("RESIZEQ_QUEUE__URL", "sqs://q")])).unwrap_err();
        assert!(err.message().contains("queue.url"), "{err}");
    }

    #[test]
    fn events_target_is_read_and_checked() {
        assert_eq!(
            Config::load_from(None, env(&[]))
                .unwrap()
                .events
                .target()
                .unwrap(),
            None
        );
        let topic = "arn:aws:sns:eu-west-1:123456789012:app";
        let c = Config::load_from(None, env(&[("RESIZEQ_EVENTS__TARGET", topic)])).unwrap();
        assert_eq!(
            c.events.target().unwrap(),
            Some(EventsTarget::Sns {
                topic_arn: topic.into()
            })
        );
        assert!(c
            .to_toml()
            .contains(&format!("[events]\ntarget = \"{topic}\"")));
        let f = file("[events]\ntarget = \"app-events\"\n");
        let err = Config::load_from(Some(f.path()), env(&[])).unwrap_err();
        assert!(
            err.message().starts_with("events.target: `app-events`"),
            "{err}"
        );
    }

    #[test]
    fn filters_include_and_exclude() {
        let f = Filters {
            include_prefixes: vec!["uploads/".into()],
            exclude_prefixes: vec!["uploads/tmp/".into()],
            include_suffixes: vec![".jpg".into(), ".heic".into()],
            exclude_suffixes: vec![],
        };
        assert!(f.accepts("uploads/a.JPG"));
        assert!(!f.accepts("uploads/tmp/a.jpg"));
        assert!(!f.accepts("other/a.jpg"));
        assert!(!f.accepts("uploads/a.txt"));
        assert!(Filters::default().accepts("anything"));
    }

    #[test]
    fn test_knobs_in_the_environment_are_not_config_keys() {
        Config::load_from(None, env(&[("RESIZEQ_CORPUS", "/x")])).unwrap();
    }
}
