//! `resizeq dlq stats|peek|replay|purge`: the dead-letter queue, as an operator sees it.
//!
//! The commands run over [`DeadLetterQueue`], a port of just what they need from SQS
//! (receive with a lease, release, copy to another queue, delete, purge, native move tasks):
//! the move logic is where a bug loses messages, so it is unit-tested against an in-memory
//! implementation that can fail a send or a delete on demand, which an emulator cannot.
//! [`super::sqs_dlq`] implements it on SQS.
//!
//! Reading a queue without consuming it: messages received are kept invisible ("held") until
//! the command ends, so that later receives return new ones, then made visible again at once.
//! The lease (`--lease-secs`) bounds how long they stay hidden if the command dies.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use indicatif::ProgressBar;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{progress_bar, short_age, RateLimiter};
use crate::adapters::aws;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::event::{self, Parsed};
use crate::ports::QueueDepth;

/// The `error_kind` shown for messages without one (moved by a redrive policy, not by us).
pub const NO_KIND: &str = "none";
/// SQS receives at most 10 messages per call.
const RECEIVE_MAX: usize = 10;

/// A message attribute, kept whole (type and binary values too) so a replay can copy it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeValue {
    /// `String`, `Number`, `Binary` or a custom type such as `String.json`.
    pub data_type: String,
    pub string: Option<String>,
    pub binary: Option<Vec<u8>>,
}

impl AttributeValue {
    pub fn text(value: impl Into<String>) -> AttributeValue {
        AttributeValue {
            data_type: "String".into(),
            string: Some(value.into()),
            binary: None,
        }
    }
}

/// A message received from the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqMessage {
    pub id: String,
    /// This receipt's handle: what release and delete need.
    pub receipt: String,
    pub body: String,
    /// As the worker wrote them: `error_kind`, `error_reason`, `source_queue`,
    /// `receive_count`, `first_failed_at` (none on messages moved by a redrive policy).
    pub attributes: HashMap<String, AttributeValue>,
    /// Deliveries from the dead-letter queue itself (our own receives included).
    pub dlq_receive_count: u32,
    /// When it arrived in the dead-letter queue.
    pub sent_at: Option<SystemTime>,
}

impl DlqMessage {
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .get(name)
            .and_then(|v| v.string.as_deref())
            .filter(|v| !v.is_empty())
    }

    pub fn error_kind(&self) -> &str {
        self.attribute("error_kind").unwrap_or(NO_KIND)
    }
}

/// A native move task (SQS StartMessageMoveTask), as ListMessageMoveTasks reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MoveTaskStatus {
    /// RUNNING, COMPLETED, CANCELLING, CANCELLED or FAILED.
    pub status: String,
    pub moved: u64,
    pub to_move: Option<u64>,
    pub failure_reason: Option<String>,
}

impl MoveTaskStatus {
    pub fn is_finished(&self) -> bool {
        matches!(self.status.as_str(), "COMPLETED" | "CANCELLED" | "FAILED")
    }
}

/// What the dlq commands need from a dead-letter queue.
pub trait DeadLetterQueue: Send + Sync {
    fn url(&self) -> &str;

    fn depth(&self) -> impl Future<Output = Result<QueueDepth>> + Send;

    /// Up to `max` (1–10) visible messages, which then stay invisible for `lease`. Waits long
    /// enough that an empty answer means no visible message (SQS: a 1 s long poll).
    fn receive(
        &self,
        max: usize,
        lease: Duration,
    ) -> impl Future<Output = Result<Vec<DlqMessage>>> + Send;

    /// Makes received messages visible again at once.
    fn release(&self, messages: &[DlqMessage]) -> impl Future<Output = Result<()>> + Send;

    /// Sends a copy (body and every attribute) to `queue_url`.
    fn send_copy(
        &self,
        queue_url: &str,
        message: &DlqMessage,
    ) -> impl Future<Output = Result<()>> + Send;

    fn delete(&self, message: &DlqMessage) -> impl Future<Output = Result<()>> + Send;

    /// Deletes every message.
    fn purge(&self) -> impl Future<Output = Result<()>> + Send;

    /// Starts a native move of every message to `destination_url` (none: to the queues they
    /// came from), at most `per_sec` a second; the task's handle. Fails where the endpoint
    /// has no such thing.
    fn start_move_task(
        &self,
        destination_url: Option<&str>,
        per_sec: Option<u32>,
    ) -> impl Future<Output = Result<String>> + Send;

    /// The state of the move task `handle`, if the queue still lists it.
    fn move_task(
        &self,
        handle: &str,
    ) -> impl Future<Output = Result<Option<MoveTaskStatus>>> + Send;
}

/// Messages received and kept invisible until [`Held::release`]; each counted once by id (a
/// message whose lease ran out comes back with a new receipt, which replaces the old one).
#[derive(Default)]
struct Held {
    messages: Vec<DlqMessage>,
    index: HashMap<String, usize>,
}

impl Held {
    /// Holds `message`; whether it is new (not seen before in this command).
    fn hold(&mut self, message: DlqMessage) -> bool {
        match self.index.get(&message.id) {
            Some(&i) => {
                self.messages[i] = message;
                false
            }
            None => {
                self.index.insert(message.id.clone(), self.messages.len());
                self.messages.push(message);
                true
            }
        }
    }

    fn len(&self) -> usize {
        self.messages.len()
    }

    fn seen(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    /// Makes them all visible again; a failure only delays them until their lease ends.
    async fn release<D: DeadLetterQueue>(&self, dlq: &D, note: &mut dyn FnMut(String)) {
        for chunk in self.messages.chunks(RECEIVE_MAX) {
            if let Err(e) = dlq.release(chunk).await {
                note(format!(
                    "warning: {e}; those messages reappear when their lease ends"
                ));
            }
        }
    }
}

/// Receives and holds messages until none is visible or `max` are held; whether the scan saw
/// the whole queue.
async fn scan<D: DeadLetterQueue>(
    dlq: &D,
    held: &mut Held,
    max: usize,
    lease: Duration,
) -> Result<bool> {
    loop {
        if held.len() >= max {
            return Ok(false);
        }
        let batch = dlq
            .receive((max - held.len()).min(RECEIVE_MAX), lease)
            .await?;
        if batch.is_empty() {
            return Ok(true);
        }
        let mut new = 0;
        for message in batch {
            new += usize::from(held.hold(message));
        }
        if new == 0 {
            // Only messages seen already: their lease ran out while scanning. What is left
            // unseen cannot be told apart any more.
            return Ok(false);
        }
    }
}

// --- stats ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DlqStats {
    pub queue: String,
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
    /// When the oldest message read arrived in the dead-letter queue (RFC 3339).
    pub oldest_sent_at: Option<String>,
    pub oldest_age_secs: Option<u64>,
    /// Counts of the messages read, by their `error_kind` attribute.
    pub by_error_kind: BTreeMap<String, u64>,
    /// How many messages were read to count kinds and find the oldest.
    pub scanned: u64,
    /// Whether every visible message was read (not cut by `--scan-max`).
    pub complete: bool,
}

/// Depth first (before our own receives make messages in flight), then a scan of up to
/// `scan_max` messages for the kinds and the oldest.
pub async fn stats<D: DeadLetterQueue>(
    dlq: &D,
    scan_max: usize,
    lease: Duration,
    note: &mut dyn FnMut(String),
) -> Result<DlqStats> {
    let depth = dlq.depth().await?;
    let mut held = Held::default();
    let scanned = scan(dlq, &mut held, scan_max, lease).await;
    held.release(dlq, note).await;
    let complete = scanned?;
    let mut by_error_kind = BTreeMap::new();
    for m in &held.messages {
        *by_error_kind.entry(m.error_kind().to_string()).or_insert(0) += 1;
    }
    let oldest = held.messages.iter().filter_map(|m| m.sent_at).min();
    Ok(DlqStats {
        queue: dlq.url().to_string(),
        visible: depth.visible,
        in_flight: depth.in_flight,
        delayed: depth.delayed,
        oldest_sent_at: oldest.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
        oldest_age_secs: oldest.map(|t| age(t).as_secs()),
        by_error_kind,
        scanned: held.len() as u64,
        complete,
    })
}

fn age(t: SystemTime) -> Duration {
    SystemTime::now().duration_since(t).unwrap_or_default()
}

pub fn render_stats(s: &DlqStats) -> String {
    let mut out = format!(
        "dead-letter queue  {}\nvisible            {}\nin flight          {}\ndelayed            {}\n",
        s.queue, s.visible, s.in_flight, s.delayed
    );
    match (&s.oldest_sent_at, s.oldest_age_secs) {
        (Some(at), Some(secs)) => out.push_str(&format!(
            "oldest             {} (arrived {at})\n",
            short_age(Duration::from_secs(secs))
        )),
        _ => out.push_str("oldest             -\n"),
    }
    out.push_str("error_kind         count\n");
    for (kind, count) in &s.by_error_kind {
        out.push_str(&format!("  {kind:<17}{count}\n"));
    }
    out.push_str(&format!(
        "({} messages read{})\n",
        s.scanned,
        if s.complete {
            ""
        } else {
            "; not all of them: raise --scan-max or --lease-secs"
        }
    ));
    out
}

// --- peek ----------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectRef {
    pub bucket: String,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Peeked {
    pub id: String,
    pub error_kind: String,
    pub error_reason: Option<String>,
    pub source_queue: Option<String>,
    /// Deliveries from the source queue before it was dead-lettered.
    pub receive_count: Option<u32>,
    pub dlq_receive_count: u32,
    pub first_failed_at: Option<String>,
    pub sent_at: Option<String>,
    pub age_secs: Option<u64>,
    /// The objects the event names (none for a body that is not an S3 event).
    pub objects: Vec<ObjectRef>,
    /// Why the body is not an S3 event, when it is not.
    pub body_error: Option<String>,
    pub body: String,
}

impl Peeked {
    fn from_message(m: &DlqMessage) -> Peeked {
        let (objects, body_error) = match event::parse(&m.body) {
            Ok(Parsed::Created(events)) => (
                events
                    .into_iter()
                    .map(|e| ObjectRef {
                        bucket: e.bucket,
                        key: e.key,
                    })
                    .collect(),
                None,
            ),
            Ok(Parsed::Test) => (Vec::new(), None),
            Err(e) => (Vec::new(), Some(e.message().to_string())),
        };
        let text = |name: &str| m.attribute(name).map(String::from);
        Peeked {
            id: m.id.clone(),
            error_kind: m.error_kind().to_string(),
            error_reason: text("error_reason"),
            source_queue: text("source_queue"),
            receive_count: m.attribute("receive_count").and_then(|v| v.parse().ok()),
            dlq_receive_count: m.dlq_receive_count,
            first_failed_at: text("first_failed_at"),
            sent_at: m
                .sent_at
                .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            age_secs: m.sent_at.map(|t| age(t).as_secs()),
            objects,
            body_error,
            body: m.body.clone(),
        }
    }
}

/// Up to `max` messages, left in the queue: each is made visible again before returning.
pub async fn peek<D: DeadLetterQueue>(
    dlq: &D,
    max: usize,
    lease: Duration,
    note: &mut dyn FnMut(String),
) -> Result<Vec<Peeked>> {
    let mut held = Held::default();
    let scanned = scan(dlq, &mut held, max, lease).await;
    held.release(dlq, note).await;
    scanned?;
    Ok(held.messages.iter().map(Peeked::from_message).collect())
}

pub fn render_peeked(messages: &[Peeked]) -> String {
    let mut out = String::new();
    for p in messages {
        out.push_str(&format!("{}  error_kind={}", p.id, p.error_kind));
        if let Some(n) = p.receive_count {
            out.push_str(&format!("  receive_count={n}"));
        }
        if let Some(secs) = p.age_secs {
            out.push_str(&format!(
                "  age={}",
                short_age(Duration::from_secs(secs)).replace(' ', "")
            ));
        }
        out.push('\n');
        for o in &p.objects {
            out.push_str(&format!("  s3://{}/{}\n", o.bucket, o.key));
        }
        if let Some(reason) = &p.error_reason {
            out.push_str(&format!("  reason: {reason}\n"));
        }
        if let Some(e) = &p.body_error {
            let shown: String = p.body.chars().take(200).collect();
            out.push_str(&format!("  body: {shown:?} ({e})\n"));
        }
        if let Some(at) = &p.first_failed_at {
            out.push_str(&format!("  first failed: {at}\n"));
        }
        if let Some(q) = &p.source_queue {
            out.push_str(&format!("  from: {q}\n"));
        }
    }
    out.push_str(&format!(
        "({} messages shown, all left in the queue)\n",
        messages.len()
    ));
    out
}

// --- replay --------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayOptions {
    /// Move at most this many.
    pub max: Option<u64>,
    /// Messages a second.
    pub per_sec: Option<u32>,
    /// Only messages with one of these `error_kind`s (empty: all).
    pub error_kinds: Vec<String>,
    pub dry_run: bool,
    /// Follow a native move task until it ends.
    pub wait: bool,
    /// The destination for every message, over their `source_queue` attribute.
    pub to: Option<String>,
    /// How long received messages stay invisible if this command dies.
    pub lease: Duration,
}

impl ReplayOptions {
    fn matches(&self, message: &DlqMessage) -> bool {
        self.error_kinds.is_empty() || self.error_kinds.iter().any(|k| k == message.error_kind())
    }

    /// SQS's own move task can move everything at a rate but cannot count or filter.
    fn can_use_native_move(&self) -> bool {
        !self.dry_run && self.max.is_none() && self.error_kinds.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplayMode {
    /// StartMessageMoveTask.
    Native,
    /// Send to the source queue, then delete from the dead-letter queue, one by one.
    Manual,
    DryRun,
}

impl ReplayMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplayMode::Native => "native",
            ReplayMode::Manual => "manual",
            ReplayMode::DryRun => "dry-run",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    pub mode: ReplayMode,
    /// Moved (sent to the source queue and deleted here). Native: as the task reports it.
    pub moved: u64,
    /// Dry run: what would have been moved.
    pub would_move: u64,
    /// Seen and left in place: another `error_kind`, past `--max`, or arrived after the
    /// replay started.
    pub left: u64,
    /// Sent but then not deleted here: in both queues now (the worker's idempotency absorbs
    /// the duplicate).
    pub duplicated: u64,
    /// Not moved because of an error (the first one is in `error`).
    pub failed: u64,
    /// Moved per destination queue.
    pub destinations: BTreeMap<String, u64>,
    /// Moved (or would be) per `error_kind`.
    pub by_error_kind: BTreeMap<String, u64>,
    pub task: Option<MoveTaskStatus>,
    pub error: Option<String>,
    pub interrupted: bool,
}

impl ReplayReport {
    fn new(mode: ReplayMode) -> ReplayReport {
        ReplayReport {
            mode,
            moved: 0,
            would_move: 0,
            left: 0,
            duplicated: 0,
            failed: 0,
            destinations: BTreeMap::new(),
            by_error_kind: BTreeMap::new(),
            task: None,
            error: None,
            interrupted: false,
        }
    }

    pub fn succeeded(&self) -> bool {
        self.failed == 0
            && self.error.is_none()
            && !self.interrupted
            && self
                .task
                .as_ref()
                .is_none_or(|t| !t.is_finished() || t.status == "COMPLETED")
    }

    /// One line of `name=value` fields.
    pub fn summary(&self, queue: &str) -> String {
        let mut line = format!("replay {queue}: mode={}", self.mode.as_str());
        if self.mode == ReplayMode::DryRun {
            line.push_str(&format!(" would_move={}", self.would_move));
        } else {
            line.push_str(&format!(" moved={}", self.moved));
        }
        line.push_str(&format!(
            " left={} duplicated={} failed={}",
            self.left, self.duplicated, self.failed
        ));
        for (kind, n) in &self.by_error_kind {
            line.push_str(&format!(" kind.{kind}={n}"));
        }
        if let Some(task) = &self.task {
            line.push_str(&format!(" task_status={}", task.status));
        }
        if self.interrupted {
            line.push_str(" interrupted=true");
        }
        line
    }
}

/// Moves messages back to their source queue: natively when nothing restricts the move and
/// the endpoint supports it, else one by one (send first, delete after the send succeeded).
/// `default_source` (`queue.url`) is the destination of messages without a `source_queue`
/// attribute when `--to` is not given.
pub async fn replay<D: DeadLetterQueue>(
    dlq: &D,
    options: &ReplayOptions,
    default_source: Option<&str>,
    progress: &ProgressBar,
    cancel: &CancellationToken,
    note: &mut dyn FnMut(String),
) -> Result<ReplayReport> {
    if options.can_use_native_move() {
        let destination = options.to.as_deref().or(default_source);
        match dlq.start_move_task(destination, options.per_sec).await {
            Ok(handle) => {
                note(format!(
                    "started a native move task to {} (handle {handle})",
                    destination.unwrap_or("the queues the messages came from")
                ));
                return follow_move_task(dlq, &handle, options.wait, progress, cancel, note).await;
            }
            Err(e) => note(format!(
                "note: no native move ({}); moving the messages one by one instead",
                e.message()
            )),
        }
    }
    manual_move(dlq, options, default_source, progress, cancel, note).await
}

async fn follow_move_task<D: DeadLetterQueue>(
    dlq: &D,
    handle: &str,
    wait: bool,
    progress: &ProgressBar,
    cancel: &CancellationToken,
    note: &mut dyn FnMut(String),
) -> Result<ReplayReport> {
    let mut report = ReplayReport::new(ReplayMode::Native);
    loop {
        let status = dlq.move_task(handle).await?;
        if let Some(status) = &status {
            if let Some(total) = status.to_move {
                progress.set_length(total);
            }
            progress.set_position(status.moved);
            report.moved = status.moved;
        }
        report.task = status.clone();
        let finished = status.as_ref().is_none_or(MoveTaskStatus::is_finished);
        if !wait || finished {
            break;
        }
        let cancelled = tokio::select! {
            _ = cancel.cancelled() => true,
            _ = tokio::time::sleep(Duration::from_secs(2)) => false,
        };
        if cancelled {
            note("stopped following; the move task goes on".to_string());
            break;
        }
    }
    if let Some(task) = &report.task {
        if let Some(reason) = &task.failure_reason {
            report.error = Some(format!("move task {}: {reason}", task.status));
        }
    }
    Ok(report)
}

async fn manual_move<D: DeadLetterQueue>(
    dlq: &D,
    options: &ReplayOptions,
    default_source: Option<&str>,
    progress: &ProgressBar,
    cancel: &CancellationToken,
    note: &mut dyn FnMut(String),
) -> Result<ReplayReport> {
    let mode = if options.dry_run {
        ReplayMode::DryRun
    } else {
        ReplayMode::Manual
    };
    let mut report = ReplayReport::new(mode);
    // Everything received and not moved: made visible again at the end.
    let mut held = Held::default();
    let mut limiter = RateLimiter::new(options.per_sec.filter(|_| !options.dry_run));
    let limit = options.max.unwrap_or(u64::MAX);
    // Messages that arrive after we started are left for another run: with a worker running,
    // a replayed message that fails again comes back with a new id, and moving it again
    // would go round in circles.
    let started = SystemTime::now();
    let done = |r: &ReplayReport| r.moved + r.would_move + r.failed;
    let result: Result<()> = async {
        'receive: while done(&report) < limit && report.error.is_none() {
            if cancel.is_cancelled() {
                report.interrupted = true;
                break;
            }
            // No more at once than the rate moves in a second, so the lease covers the batch.
            let want = (limit - done(&report))
                .min(RECEIVE_MAX as u64)
                .min(options.per_sec.map_or(u64::MAX, u64::from))
                .max(1) as usize;
            let batch = dlq.receive(want, options.lease).await?;
            if batch.is_empty() {
                break;
            }
            let mut new = 0;
            for message in batch {
                if held.seen(&message.id) {
                    // Its lease ran out while we worked: hold it again (new receipt).
                    held.hold(message);
                    continue;
                }
                new += 1;
                let arrived_since = message.sent_at.is_some_and(|t| t > started);
                if done(&report) >= limit
                    || !options.matches(&message)
                    || arrived_since
                    || report.error.is_some()
                {
                    report.left += 1;
                    held.hold(message);
                    continue;
                }
                let kind = message.error_kind().to_string();
                if options.dry_run {
                    report.would_move += 1;
                    *report.by_error_kind.entry(kind).or_insert(0) += 1;
                    held.hold(message);
                    progress.inc(1);
                    continue;
                }
                let destination = options
                    .to
                    .as_deref()
                    .or(message.attribute("source_queue"))
                    .or(default_source);
                let Some(destination) = destination.map(String::from) else {
                    report.failed += 1;
                    report.error = Some(format!(
                        "message {}: no source_queue attribute and no queue.url: pass --to URL",
                        message.id
                    ));
                    held.hold(message);
                    continue;
                };
                let cancelled = tokio::select! {
                    _ = cancel.cancelled() => true,
                    _ = limiter.wait() => false,
                };
                if cancelled {
                    report.interrupted = true;
                    held.hold(message);
                    break 'receive;
                }
                // Send first: a crash before the delete leaves a duplicate, never a loss.
                if let Err(e) = dlq.send_copy(&destination, &message).await {
                    report.failed += 1;
                    report.error = Some(format!("message {}: {}", message.id, e.message()));
                    held.hold(message);
                    continue;
                }
                report.moved += 1;
                *report.by_error_kind.entry(kind).or_insert(0) += 1;
                *report.destinations.entry(destination).or_insert(0) += 1;
                progress.inc(1);
                if let Err(e) = dlq.delete(&message).await {
                    report.duplicated += 1;
                    report.error = Some(format!(
                        "message {} was sent but not deleted from the dead-letter queue \
                         (it is in both now): {}",
                        message.id,
                        e.message()
                    ));
                }
            }
            if new == 0 {
                // Only messages seen already: every other one is held or gone.
                break;
            }
        }
        Ok(())
    }
    .await;
    held.release(dlq, note).await;
    result?;
    Ok(report)
}

// --- purge ---------------------------------------------------------------------------------------

/// What a purge removed: the counts taken just before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PurgeReport {
    pub before: DlqStats,
}

/// Counts (depth and kinds) then deletes every message.
pub async fn purge<D: DeadLetterQueue>(
    dlq: &D,
    scan_max: usize,
    lease: Duration,
    note: &mut dyn FnMut(String),
) -> Result<PurgeReport> {
    let before = stats(dlq, scan_max, lease, note).await?;
    dlq.purge().await?;
    Ok(PurgeReport { before })
}

pub fn render_purge(report: &PurgeReport) -> String {
    let s = &report.before;
    let kinds: Vec<String> = s
        .by_error_kind
        .iter()
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    format!(
        "purged {}: removed={} (visible {}, in flight {}, delayed {}); by error_kind: {}\n",
        s.queue,
        s.visible + s.in_flight + s.delayed,
        s.visible,
        s.in_flight,
        s.delayed,
        if kinds.is_empty() {
            "-".to_string()
        } else {
            kinds.join(" ")
        }
    )
}

// --- command line --------------------------------------------------------------------------------

/// Which dead-letter queue, and how long messages read stay hidden.
#[derive(Debug, Clone, clap::Args)]
pub struct DlqTarget {
    /// The dead-letter queue. Default: queue.dlq_url, else the RedrivePolicy target of
    /// queue.url.
    #[arg(long, value_name = "URL")]
    pub dlq: Option<String>,
    /// How long messages this command reads stay invisible to others if it dies before making
    /// them visible again.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub lease_secs: u64,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum DlqAction {
    /// Messages visible and in flight, the oldest one's age, counts by error_kind.
    Stats {
        #[command(flatten)]
        target: DlqTarget,
        #[arg(long)]
        json: bool,
        /// Read at most this many messages to count kinds and find the oldest.
        #[arg(long, value_name = "N", default_value_t = 10_000)]
        scan_max: usize,
    },
    /// Show messages with their reasons, bucket and key, without consuming them.
    Peek {
        #[command(flatten)]
        target: DlqTarget,
        #[arg(long, value_name = "N", default_value_t = 10)]
        max: usize,
        #[arg(long)]
        json: bool,
    },
    /// Move messages back to their source queue (send there first, then delete here).
    Replay {
        #[command(flatten)]
        target: DlqTarget,
        /// Move at most N messages (moves them one by one).
        #[arg(long, value_name = "N")]
        max: Option<u64>,
        /// At most this many messages a second.
        #[arg(long, value_name = "PER_SEC")]
        rate: Option<u32>,
        /// Only messages with this error_kind (comma-separated list; `none` for messages
        /// without one). Moves them one by one.
        #[arg(long, value_name = "KIND", value_delimiter = ',')]
        error_kind: Vec<String>,
        /// Count what would be moved; move nothing.
        #[arg(long)]
        dry_run: bool,
        /// With a native move task, follow its progress until it ends.
        #[arg(long)]
        wait: bool,
        /// Send every message here instead of its source_queue attribute (default for
        /// messages without one: queue.url).
        #[arg(long, value_name = "URL")]
        to: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Delete every message (refuses without --yes); prints what it removed.
    Purge {
        #[command(flatten)]
        target: DlqTarget,
        #[arg(long)]
        yes: bool,
        /// Read at most this many messages first to report their kinds.
        #[arg(long, value_name = "N", default_value_t = 10_000)]
        scan_max: usize,
    },
}

impl DlqAction {
    fn target(&self) -> &DlqTarget {
        match self {
            DlqAction::Stats { target, .. }
            | DlqAction::Peek { target, .. }
            | DlqAction::Replay { target, .. }
            | DlqAction::Purge { target, .. } => target,
        }
    }
}

fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// Runs one `resizeq dlq` command against SQS with the worker's config and credentials.
pub async fn run(config: &Config, action: DlqAction) -> Result<ExitCode> {
    let target = action.target().clone();
    if target.lease_secs == 0 || target.lease_secs > 43_200 {
        return Err(Error::config("--lease-secs: SQS allows 1 to 43200"));
    }
    let lease = Duration::from_secs(target.lease_secs);
    let sdk = aws::sdk_config(&config.aws).await;
    let client = aws::sqs_client(&sdk);
    let url = super::sqs_dlq::resolve_dlq_url(&client, config, target.dlq.as_deref()).await?;
    let dlq = super::sqs_dlq::SqsDeadLetterQueue::new(client, url.clone());
    let mut note = |text: String| eprintln!("{text}");
    match action {
        DlqAction::Stats { json, scan_max, .. } => {
            let s = stats(&dlq, scan_max.max(1), lease, &mut note).await?;
            if json {
                println!("{}", to_json(&s));
            } else {
                print!("{}", render_stats(&s));
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqAction::Peek { max, json, .. } => {
            let peeked = peek(&dlq, max.max(1), lease, &mut note).await?;
            if json {
                println!("{}", to_json(&peeked));
            } else {
                print!("{}", render_peeked(&peeked));
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqAction::Replay {
            max,
            rate,
            error_kind,
            dry_run,
            wait,
            to,
            json,
            ..
        } => {
            if rate == Some(0) {
                return Err(Error::config("--rate: at least 1 message a second"));
            }
            let options = ReplayOptions {
                max,
                per_sec: rate,
                error_kinds: error_kind,
                dry_run,
                wait,
                to,
                lease,
            };
            let total = match max {
                Some(n) => Some(n),
                None => Some(dlq.depth().await?.visible),
            };
            let bar = progress_bar(total, if dry_run { "counting" } else { "replaying" });
            let cancel = CancellationToken::new();
            let on_ctrl_c = cancel.clone();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    on_ctrl_c.cancel();
                }
            });
            let mut note = |text: String| bar.suspend(|| eprintln!("{text}"));
            let report = replay(
                &dlq,
                &options,
                config.queue.url.as_deref(),
                &bar,
                &cancel,
                &mut note,
            )
            .await;
            bar.finish_and_clear();
            let report = report?;
            if let Some(error) = &report.error {
                eprintln!("error: {error}");
            }
            if json {
                println!("{}", to_json(&report));
            }
            println!("{}", report.summary(&url));
            Ok(if report.succeeded() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        DlqAction::Purge { yes, scan_max, .. } => {
            if !yes {
                let depth = dlq.depth().await?;
                eprintln!(
                    "refusing to purge {url} ({} messages) without --yes",
                    depth.visible + depth.in_flight + depth.delayed
                );
                return Ok(ExitCode::from(2));
            }
            let report = purge(&dlq, scan_max.max(1), lease, &mut note).await?;
            print!("{}", render_purge(&report));
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::memory_dlq::MemoryDlq;
    use super::*;

    const SOURCE: &str = "http://sqs.local/123/photos";
    const OTHER: &str = "http://sqs.local/123/other";

    fn lease() -> Duration {
        Duration::from_secs(60)
    }

    fn options() -> ReplayOptions {
        ReplayOptions {
            max: None,
            per_sec: None,
            error_kinds: Vec::new(),
            dry_run: false,
            wait: false,
            to: None,
            lease: lease(),
        }
    }

    /// `n` dead letters of `kind` from SOURCE, bodies `"{kind}-{i}"`.
    fn fill(dlq: &MemoryDlq, kind: &str, n: usize) {
        for i in 0..n {
            dlq.add(
                &format!("{kind}-{i}"),
                &[
                    ("error_kind", kind),
                    ("error_reason", "s3://b/k: bad bytes"),
                    ("source_queue", SOURCE),
                    ("receive_count", "1"),
                    ("first_failed_at", "2024-05-01T12:00:00Z"),
                ],
            );
        }
    }

    async fn run_replay(dlq: &MemoryDlq, options: &ReplayOptions) -> (ReplayReport, Vec<String>) {
        let mut notes = Vec::new();
        let report = replay(
            dlq,
            options,
            Some(SOURCE),
            &ProgressBar::hidden(),
            &CancellationToken::new(),
            &mut |n| notes.push(n),
        )
        .await
        .unwrap();
        (report, notes)
    }

    #[tokio::test(start_paused = true)]
    async fn stats_count_kinds_and_leave_every_message_visible() {
        let dlq = MemoryDlq::new("http://sqs.local/123/dlq");
        fill(&dlq, "corrupt", 3);
        fill(&dlq, "poison", 1);
        dlq.add("from a redrive policy", &[]);
        let s = stats(&dlq, 100, lease(), &mut |_| {}).await.unwrap();
        assert_eq!((s.visible, s.in_flight), (5, 0));
        assert_eq!(
            s.by_error_kind,
            BTreeMap::from([
                ("corrupt".into(), 3),
                ("poison".into(), 1),
                (NO_KIND.into(), 1)
            ])
        );
        assert!(s.complete);
        assert_eq!(s.scanned, 5);
        assert!(s.oldest_sent_at.is_some());
        assert_eq!(dlq.visible_count(), 5, "all visible again");
        let text = render_stats(&s);
        assert!(text.contains("corrupt          3"), "{text}");

        let cut = stats(&dlq, 2, lease(), &mut |_| {}).await.unwrap();
        assert_eq!((cut.scanned, cut.complete), (2, false));
        assert_eq!(dlq.visible_count(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn peek_shows_reasons_and_objects_and_consumes_nothing() {
        let dlq = MemoryDlq::new("http://sqs.local/123/dlq");
        dlq.add(
            &event::s3_notification("photos", "a b.jpg", Some("e1"), Some(3)),
            &[("error_kind", "corrupt"), ("error_reason", "truncated")],
        );
        dlq.add("not json", &[("error_kind", "poison")]);
        let peeked = peek(&dlq, 10, lease(), &mut |_| {}).await.unwrap();
        assert_eq!(peeked.len(), 2);
        let corrupt = peeked.iter().find(|p| p.error_kind == "corrupt").unwrap();
        assert_eq!(
            corrupt.objects,
            vec![ObjectRef {
                bucket: "photos".into(),
                key: "a b.jpg".into()
            }]
        );
        assert_eq!(corrupt.error_reason.as_deref(), Some("truncated"));
        let poison = peeked.iter().find(|p| p.error_kind == "poison").unwrap();
        assert!(poison.body_error.is_some());
        assert_eq!(dlq.visible_count(), 2);
        assert!(dlq.sent().is_empty());
        let text = render_peeked(&peeked);
        assert!(text.contains("s3://photos/a b.jpg"), "{text}");
        assert!(text.contains("reason: truncated"), "{text}");

        let one = peek(&dlq, 1, lease(), &mut |_| {}).await.unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(dlq.visible_count(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn replay_uses_the_native_move_when_nothing_restricts_it() {
        let dlq = MemoryDlq::new("http://sqs.local/123/dlq").with_native_move();
        fill(&dlq, "corrupt", 4);
        let (report, notes) = run_replay(
            &dlq,
            &ReplayOptions {
                wait: true,
                ..options()
            },
        )
        .await;
        assert_eq!(report.mode, ReplayMode::Native, "{notes:?}");
        assert_eq!(report.moved, 4);
        assert_eq!(report.task.as_ref().unwrap().status, "COMPLETED");
        assert!(report.succeeded());
        assert_eq!(dlq.native_moves(), vec![(Some(SOURCE.to_string()), None)]);
    }

    #[tokio::test(start_paused = true)]
    async fn replay_falls_back_to_moving_one_by_one_and_says_so() {
        let dlq = MemoryDlq::new("http://sqs.local/123/dlq");
        fill(&dlq, "corrupt", 12);
        dlq.add("redriven", &[]);
        let (report, notes) = run_replay(&dlq, &options()).await;
        assert_eq!(report.mode, ReplayMode::Manual);
        assert!(notes.iter().any(|n| n.contains("one by one")), "{notes:?}");
        assert_eq!(report.moved, 13);
        assert!(report.succeeded(), "{report:?}");
        assert_eq!(dlq.remaining(), 0);
        // Bodies and attributes copied; the redriven one goes to queue.url.
        let sent = dlq.sent();
        assert_eq!(sent.len(), 13);
        assert!(sent.iter().all(|(url, _)| url == SOURCE));
        let (_, corrupt) = sent.iter().find(|(_, m)| m.body == "corrupt-0").unwrap();
        assert_eq!(corrupt.attribute("error_kind"), Some("corrupt"));
        assert_eq!(
            corrupt.attribute("first_failed_at"),
            Some("2024-05-01T12:00:00Z")
        );
        assert_eq!(report.by_error_kind["corrupt"], 12);
        assert_eq!(report.by_error_kind[NO_KIND], 1);
    }

    #[tokio::test(start_paused = true)]
    async fn replay_filters_by_kind_and_honours_max_and_dry_run() {
        let dlq = MemoryDlq::new("http://sqs.local/123/dlq").with_native_move();
        fill(&dlq, "corrupt", 5);
        fill(&dlq, "poison", 7);

        let (dry, _) = run_replay(
            &dlq,
            &ReplayOptions {
                dry_run: true,
                error_kinds: vec!["poison".into()],
                ..options()
            },
        )
        .await;
        assert_eq!(dry.mode, ReplayMode::DryRun);
        assert_eq!((dry.would_move, dry.moved, dry.left), (7, 0, 5));
        assert_eq!((dlq.remaining(), dlq.visible_count()), (12, 12));
        assert!(dlq.sent().is_empty());

        let (some, _) = run_replay(
            &dlq,
            &ReplayOptions {
                max: Some(3),
                error_kinds: vec!["poison".into()],
                ..options()
            },
        )
        .await;
        assert_eq!((some.mode, some.moved), (ReplayMode::Manual, 3));
        assert_eq!((dlq.remaining(), dlq.visible_count()), (9, 9));
        assert!(
            dlq.native_moves().is_empty(),
            "a filter never moves natively"
        );

        let (rest, _) = run_replay(
            &dlq,
            &ReplayOptions {
                error_kinds: vec!["poison".into()],
                to: Some(OTHER.into()),
                ..options()
            },
        )
        .await;
        assert_eq!(rest.moved, 4);
        assert_eq!(rest.destinations, BTreeMap::from([(OTHER.to_string(), 4)]));
        let left: Vec<String> = dlq.bodies();
        assert_eq!(left.len(), 5);
        assert!(left.iter().all(|b| b.starts_with("corrupt-")), "{left:?}");
        assert_eq!(dlq.visible_count(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_send_deletes_nothing_and_a_failed_delete_is_a_duplicate_not_a_loss() {
        let dlq = MemoryDlq::new("http://sqs.local/123/dlq");
        fill(&dlq, "corrupt", 6);
        dlq.fail_send_after(2);
        let (report, _) = run_replay(&dlq, &options()).await;
        assert_eq!((report.moved, report.failed), (2, 1));
        assert!(!report.succeeded());
        assert!(report.error.as_deref().unwrap().contains("injected"));
        assert_eq!(dlq.remaining(), 4, "the failed one is still in the DLQ");
        assert_eq!(dlq.visible_count(), 4, "and visible again");

        let dlq = MemoryDlq::new("http://sqs.local/123/dlq");
        fill(&dlq, "corrupt", 3);
        dlq.fail_delete_after(1);
        let (report, _) = run_replay(&dlq, &options()).await;
        assert_eq!((report.moved, report.duplicated), (2, 1));
        assert!(!report.succeeded());
        // Every body is in the source queue or still in the DLQ.
        let mut everywhere: Vec<String> = dlq.sent().into_iter().map(|(_, m)| m.body).collect();
        everywhere.extend(dlq.bodies());
        for i in 0..3 {
            assert!(
                everywhere.contains(&format!("corrupt-{i}")),
                "{everywhere:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn messages_that_arrive_during_a_replay_are_left_for_the_next_one() {
        let dlq = MemoryDlq::new("http://sqs.local/123/dlq");
        fill(&dlq, "corrupt", 2);
        dlq.add_sent_at(
            "failed again",
            &[("error_kind", "corrupt"), ("source_queue", SOURCE)],
            SystemTime::now() + Duration::from_secs(5),
        );
        let (report, _) = run_replay(&dlq, &options()).await;
        assert_eq!((report.moved, report.left), (2, 1));
        assert!(report.succeeded());
        assert_eq!(dlq.bodies(), vec!["failed again".to_string()]);
        assert_eq!(dlq.visible_count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn replay_is_paced_by_the_rate() {
        let dlq = MemoryDlq::new("http://sqs.local/123/dlq");
        fill(&dlq, "corrupt", 10);
        let started = tokio::time::Instant::now();
        let (report, _) = run_replay(
            &dlq,
            &ReplayOptions {
                max: Some(10),
                per_sec: Some(5),
                ..options()
            },
        )
        .await;
        assert_eq!(report.moved, 10);
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(1800) && elapsed < Duration::from_secs(3),
            "{elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_without_a_source_needs_to() {
        let dlq = MemoryDlq::new("http://sqs.local/123/dlq");
        dlq.add("redriven", &[]);
        let mut notes = Vec::new();
        let report = replay(
            &dlq,
            &options(),
            None,
            &ProgressBar::hidden(),
            &CancellationToken::new(),
            &mut |n| notes.push(n),
        )
        .await
        .unwrap();
        assert_eq!((report.moved, report.failed), (0, 1));
        assert!(report.error.unwrap().contains("--to"));
        assert_eq!(dlq.visible_count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn purge_reports_what_it_removed() {
        let dlq = MemoryDlq::new("http://sqs.local/123/dlq");
        fill(&dlq, "corrupt", 2);
        fill(&dlq, "poison", 1);
        let report = purge(&dlq, 100, lease(), &mut |_| {}).await.unwrap();
        assert_eq!(dlq.remaining(), 0);
        let text = render_purge(&report);
        assert!(text.contains("removed=3"), "{text}");
        assert!(text.contains("corrupt=2 poison=1"), "{text}");
    }
}
