//! In-memory queue and store for unit tests of the worker core: same contracts as SQS and S3
//! (visibility timeouts, receive counts, If-Match), plus switches to inject faults.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::error::{Error, ErrorKind, Result};
use crate::ports::{
    Condition, DeadLetter, ETag, Enqueue, GetOutcome, ListPage, ListQuery, ListedObject, Message,
    ObjectInfo, PutObject, Queue, QueueDepth, Store, Written, MAX_BATCH, MAX_LIST_PAGE,
};

/// One message of an in-process queue, with SQS's bookkeeping around it.
#[derive(Debug)]
pub struct Delivery<T> {
    pub message: Message,
    /// Invisible until then (leased, or delayed by a retry).
    pub visible_at: Instant,
    /// Delivered and not given back since: while invisible it counts as in flight, not delayed.
    pub leased: bool,
    /// What the owning queue keeps beside the message.
    pub extra: T,
}

/// What SQS does between send and delete, in process: visibility deadlines, receive counts and
/// a fresh receipt per delivery (an old receipt goes stale). The core of [`MemoryQueue`] and
/// of local mode's queue (`worker::local::LocalQueue`); time is tokio's clock.
#[derive(Debug)]
pub struct Deliveries<T> {
    entries: VecDeque<Delivery<T>>,
}

impl<T> Default for Deliveries<T> {
    fn default() -> Self {
        Deliveries {
            entries: VecDeque::new(),
        }
    }
}

impl<T> Deliveries<T> {
    /// Adds a message, visible at once.
    pub fn push(&mut self, message: Message, extra: T) {
        self.entries.push_back(Delivery {
            message,
            visible_at: Instant::now(),
            leased: false,
            extra,
        });
    }

    /// Delivers up to `max` visible messages: one more receive each, a fresh receipt, and
    /// invisible for `visibility` from `now`.
    pub fn deliver(&mut self, now: Instant, max: usize, visibility: Duration) -> Vec<Message> {
        self.entries
            .iter_mut()
            .filter(|d| d.visible_at <= now)
            .take(max)
            .map(|d| {
                d.message.receive_count += 1;
                d.message.receipt = format!("{}#{}", d.message.id, d.message.receive_count);
                d.visible_at = now + visibility;
                d.leased = true;
                d.message.clone()
            })
            .collect()
    }

    /// Takes out the visible messages already delivered `max_receives` times (what a redrive
    /// policy moves to the dead-letter queue).
    pub fn take_exhausted(&mut self, now: Instant, max_receives: u32) -> Vec<Delivery<T>> {
        let (exhausted, kept): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|d| d.visible_at <= now && d.message.receive_count >= max_receives);
        self.entries = kept;
        exhausted.into()
    }

    /// The delivery `message` was received from, while its receipt is the current one.
    pub fn by_receipt(&mut self, message: &Message) -> Result<&mut Delivery<T>> {
        self.entries
            .iter_mut()
            .find(|d| d.message.id == message.id && d.message.receipt == message.receipt)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Service,
                    format!("receipt {} is stale", message.receipt),
                )
            })
    }

    /// Deletes a message whatever its receipt (as SQS does for a message still in the queue).
    pub fn remove(&mut self, id: &str) -> Option<Delivery<T>> {
        let i = self.entries.iter().position(|d| d.message.id == id)?;
        self.entries.remove(i)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Delivery<T>> {
        self.entries.iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Delivery<T>> {
        self.entries.iter_mut()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn depth(&self, now: Instant) -> QueueDepth {
        let mut depth = QueueDepth::default();
        for d in &self.entries {
            if d.visible_at <= now {
                depth.visible += 1;
            } else if d.leased {
                depth.in_flight += 1;
            } else {
                depth.delayed += 1;
            }
        }
        depth
    }
}

/// A queue with visibility timeouts on tokio's clock (so `tokio::time::pause` drives it).
#[derive(Debug)]
pub struct MemoryQueue {
    inner: Mutex<QueueState>,
    visibility: Duration,
    has_dlq: bool,
    next_id: AtomicU64,
    /// Receives that fail with a transient error before succeeding again.
    pub fail_receives: AtomicUsize,
    /// Entries of [`Enqueue::send_batch`] that fail with a transient error before sends
    /// succeed again.
    pub fail_sends: AtomicUsize,
}

#[derive(Debug, Default)]
struct QueueState {
    messages: Deliveries<()>,
    dead: Vec<(Message, DeadLetter)>,
    acked: Vec<Message>,
    lease_extensions: usize,
}

impl MemoryQueue {
    pub fn new(visibility: Duration, has_dlq: bool) -> MemoryQueue {
        MemoryQueue {
            inner: Mutex::new(QueueState::default()),
            visibility,
            has_dlq,
            next_id: AtomicU64::new(1),
            fail_receives: AtomicUsize::new(0),
            fail_sends: AtomicUsize::new(0),
        }
    }

    pub fn send(&self, body: impl Into<String>) -> String {
        self.send_with_attributes(body, HashMap::new())
    }

    /// Sends with message attributes (a W3C `traceparent`, an `AWSTraceHeader`...).
    pub fn send_with_attributes(
        &self,
        body: impl Into<String>,
        attributes: HashMap<String, String>,
    ) -> String {
        let id = format!("m{}", self.next_id.fetch_add(1, Ordering::SeqCst));
        let message = Message {
            id: id.clone(),
            receipt: String::new(),
            body: body.into(),
            receive_count: 0,
            sent_at: Some(std::time::SystemTime::now()),
            attributes,
        };
        self.inner.lock().unwrap().messages.push(message, ());
        id
    }

    /// The bodies of the messages still in the queue, in the order they were sent.
    pub fn bodies(&self) -> Vec<String> {
        let state = self.inner.lock().unwrap();
        state
            .messages
            .iter()
            .map(|d| d.message.body.clone())
            .collect()
    }

    pub fn dead_letters(&self) -> Vec<(Message, DeadLetter)> {
        self.inner.lock().unwrap().dead.clone()
    }

    pub fn acked(&self) -> Vec<Message> {
        self.inner.lock().unwrap().acked.clone()
    }

    pub fn lease_extensions(&self) -> usize {
        self.inner.lock().unwrap().lease_extensions
    }

    /// Messages still in the queue (visible or not), with their receive counts.
    pub fn remaining(&self) -> Vec<(String, u32)> {
        let state = self.inner.lock().unwrap();
        state
            .messages
            .iter()
            .map(|s| (s.message.id.clone(), s.message.receive_count))
            .collect()
    }
}

impl Queue for MemoryQueue {
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Option<Duration>,
    ) -> Result<Vec<Message>> {
        if self
            .fail_receives
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(Error::new(
                ErrorKind::Service,
                "ReceiveMessage: injected fault",
            ));
        }
        let deadline = Instant::now() + wait;
        loop {
            let now = Instant::now();
            let out = self.inner.lock().unwrap().messages.deliver(
                now,
                max,
                visibility.unwrap_or(self.visibility),
            );
            if !out.is_empty() || now >= deadline {
                return Ok(out);
            }
            tokio::time::sleep(Duration::from_millis(50).min(deadline - now)).await;
        }
    }

    async fn ack(&self, messages: &[Message]) -> Result<()> {
        for m in messages {
            // Like SQS, deleting with a stale receipt of a message still in the queue works;
            // deleting an already deleted one is a no-op.
            let mut state = self.inner.lock().unwrap();
            if let Some(delivery) = state.messages.remove(&m.id) {
                state.acked.push(delivery.message);
            }
        }
        Ok(())
    }

    async fn retry_after(&self, message: &Message, delay: Duration) -> Result<()> {
        let mut state = self.inner.lock().unwrap();
        let delivery = state.messages.by_receipt(message)?;
        delivery.visible_at = Instant::now() + delay;
        delivery.leased = false;
        Ok(())
    }

    async fn extend_lease(&self, message: &Message, visibility: Duration) -> Result<()> {
        let mut state = self.inner.lock().unwrap();
        state.messages.by_receipt(message)?.visible_at = Instant::now() + visibility;
        state.lease_extensions += 1;
        Ok(())
    }

    fn has_dead_letter_queue(&self) -> bool {
        self.has_dlq
    }

    async fn dead_letter(&self, message: &Message, reason: &DeadLetter) -> Result<()> {
        if !self.has_dlq {
            return Err(Error::config("no dead-letter queue configured"));
        }
        let mut state = self.inner.lock().unwrap();
        state.dead.push((message.clone(), reason.clone()));
        state.messages.remove(&message.id);
        Ok(())
    }

    async fn visibility_timeout(&self) -> Result<Duration> {
        Ok(self.visibility)
    }

    async fn depth(&self) -> Result<QueueDepth> {
        Ok(self.inner.lock().unwrap().messages.depth(Instant::now()))
    }
}

impl Enqueue for MemoryQueue {
    async fn send_batch(&self, bodies: &[String]) -> Result<Vec<Result<()>>> {
        Ok(bodies
            .iter()
            .take(MAX_BATCH)
            .map(|body| {
                let fail = self
                    .fail_sends
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if fail {
                    return Err(Error::new(
                        ErrorKind::Service,
                        "SendMessage: injected fault",
                    ));
                }
                self.send(body.clone());
                Ok(())
            })
            .collect())
    }
}

/// An object's bytes, what a HEAD says, and when it was written.
type Objects = HashMap<(String, String), (Vec<u8>, ObjectInfo, SystemTime)>;

/// Objects by (bucket, key). ETags are a hash of the bytes, like single-part S3 uploads.
#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: Mutex<Objects>,
    /// Buckets that answer every call with a transient error until removed.
    pub unavailable_buckets: Mutex<Vec<String>>,
    /// Keys whose GET panics (a stand-in for a decoder bug on a hostile file).
    pub panicking_keys: Mutex<Vec<String>>,
    /// How long every GET takes (a slow job, on tokio's clock).
    pub get_delay: Mutex<std::time::Duration>,
    puts: AtomicUsize,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    pub fn insert(&self, bucket: &str, key: &str, bytes: Vec<u8>) -> ETag {
        let etag = ETag::of_bytes(&bytes);
        let info = ObjectInfo {
            etag: etag.clone(),
            size: bytes.len() as u64,
            content_type: None,
            metadata: HashMap::new(),
        };
        self.objects.lock().unwrap().insert(
            (bucket.into(), key.into()),
            (bytes, info, SystemTime::now()),
        );
        etag
    }

    pub fn remove(&self, bucket: &str, key: &str) {
        self.objects
            .lock()
            .unwrap()
            .remove(&(bucket.to_string(), key.to_string()));
    }

    pub fn object(&self, bucket: &str, key: &str) -> Option<(Vec<u8>, ObjectInfo)> {
        self.objects
            .lock()
            .unwrap()
            .get(&(bucket.to_string(), key.to_string()))
            .map(|(bytes, info, _)| (bytes.clone(), info.clone()))
    }

    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .objects
            .lock()
            .unwrap()
            .keys()
            .filter(|(b, _)| b == bucket)
            .map(|(_, k)| k.clone())
            .collect();
        keys.sort();
        keys
    }

    /// How many PUTs succeeded.
    pub fn puts(&self) -> usize {
        self.puts.load(Ordering::SeqCst)
    }

    fn check_available(&self, bucket: &str) -> Result<()> {
        if self
            .unavailable_buckets
            .lock()
            .unwrap()
            .iter()
            .any(|b| b == bucket)
        {
            return Err(Error::new(
                ErrorKind::Service,
                format!("{bucket}: injected fault"),
            ));
        }
        Ok(())
    }
}

impl Store for MemoryStore {
    async fn get(&self, bucket: &str, key: &str, if_match: Option<&ETag>) -> Result<GetOutcome> {
        self.check_available(bucket)?;
        if self.panicking_keys.lock().unwrap().iter().any(|k| k == key) {
            panic!("injected panic reading {bucket}/{key}");
        }
        let delay = *self.get_delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let objects = self.objects.lock().unwrap();
        Ok(match objects.get(&(bucket.to_string(), key.to_string())) {
            None => GetOutcome::NotFound,
            Some((_, info, _)) if if_match.is_some_and(|e| *e != info.etag) => GetOutcome::Changed,
            Some((bytes, info, _)) => GetOutcome::Found {
                bytes: bytes.clone(),
                info: info.clone(),
            },
        })
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectInfo>> {
        self.check_available(bucket)?;
        Ok(self.object(bucket, key).map(|(_, info)| info))
    }

    async fn put(&self, object: PutObject) -> Result<Written> {
        self.check_available(&object.bucket)?;
        let mut objects = self.objects.lock().unwrap();
        let id = (object.bucket, object.key);
        if !object
            .condition
            .holds(objects.get(&id).map(|(_, info, _)| &info.etag))
        {
            return Ok(Written::ConditionFailed);
        }
        let info = ObjectInfo {
            etag: ETag::of_bytes(&object.bytes),
            size: object.bytes.len() as u64,
            content_type: Some(object.content_type),
            metadata: object.metadata,
        };
        objects.insert(id, (object.bytes, info, SystemTime::now()));
        self.puts.fetch_add(1, Ordering::SeqCst);
        Ok(Written::Done)
    }

    async fn delete(&self, bucket: &str, key: &str, condition: &Condition) -> Result<Written> {
        self.check_available(bucket)?;
        if *condition == Condition::Absent {
            return Err(Error::new(
                ErrorKind::Config,
                "a delete cannot be conditional on the object being absent",
            ));
        }
        let mut objects = self.objects.lock().unwrap();
        let id = (bucket.to_string(), key.to_string());
        let Some((_, info, _)) = objects.get(&id) else {
            return Ok(match condition {
                Condition::Matches(_) => Written::ConditionFailed,
                _ => Written::Done,
            });
        };
        if !condition.holds(Some(&info.etag)) {
            return Ok(Written::ConditionFailed);
        }
        objects.remove(&id);
        Ok(Written::Done)
    }

    async fn list(&self, bucket: &str, query: ListQuery<'_>) -> Result<ListPage> {
        self.check_available(bucket)?;
        // As S3: a continuation token supersedes start_after (ours is the last key listed).
        let after = query.continuation.or(query.start_after).unwrap_or("");
        let prefix = query.prefix.unwrap_or("");
        let objects = self.objects.lock().unwrap();
        let mut matching: Vec<ListedObject> = objects
            .iter()
            .filter(|((b, key), _)| b == bucket && key.starts_with(prefix) && key.as_str() > after)
            .map(|((_, key), (_, info, modified))| ListedObject {
                key: key.clone(),
                etag: Some(info.etag.clone()),
                size: Some(info.size),
                last_modified: Some(*modified),
            })
            .collect();
        matching.sort_by(|a, b| a.key.cmp(&b.key));
        let page_size = query.max_keys.clamp(1, MAX_LIST_PAGE);
        let next = (matching.len() > page_size).then(|| matching[page_size - 1].key.clone());
        matching.truncate(page_size);
        Ok(ListPage {
            objects: matching,
            next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str) -> Message {
        Message {
            id: id.into(),
            receipt: String::new(),
            body: "{}".into(),
            receive_count: 0,
            sent_at: None,
            attributes: HashMap::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn deliveries_keep_sqs_visibility_receipts_and_redrive() {
        let mut q: Deliveries<()> = Deliveries::default();
        q.push(message("a"), ());
        q.push(message("b"), ());
        let vis = Duration::from_secs(30);
        let first = q.deliver(Instant::now(), 1, vis);
        assert_eq!((first[0].id.as_str(), first[0].receive_count), ("a", 1));
        let depth = q.depth(Instant::now());
        assert_eq!((depth.visible, depth.in_flight, depth.delayed), (1, 1, 0));

        // Given back with a delay: delayed, not in flight; its old receipt still works once.
        let back = q.by_receipt(&first[0]).unwrap();
        back.visible_at = Instant::now() + Duration::from_secs(5);
        back.leased = false;
        assert_eq!(q.depth(Instant::now()).delayed, 1);

        tokio::time::advance(Duration::from_secs(6)).await;
        let again = q.deliver(Instant::now(), 10, vis);
        assert_eq!(again.len(), 2, "both visible now");
        assert!(
            q.by_receipt(&first[0]).is_err(),
            "a redelivery makes the old receipt stale"
        );
        assert!(q.by_receipt(&again[0]).is_ok());

        // Redrive: visible and delivered max_receives times → taken out.
        tokio::time::advance(vis).await;
        let exhausted = q.take_exhausted(Instant::now(), 2);
        assert_eq!(
            exhausted
                .iter()
                .map(|d| d.message.id.as_str())
                .collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(q.len(), 1);
        assert!(q.remove("b").is_some() && q.is_empty());
    }
}
