//! In-memory queue and store for unit tests of the worker core: same contracts as SQS and S3
//! (visibility timeouts, receive counts, If-Match), plus switches to inject faults.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, ErrorKind, Result};
use crate::ports::{
    DeadLetter, GetOutcome, Message, ObjectInfo, PutObject, Queue, QueueDepth, Store,
};

#[derive(Debug)]
struct Stored {
    message: Message,
    visible_at: Instant,
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
}

#[derive(Debug, Default)]
struct QueueState {
    messages: VecDeque<Stored>,
    dead: Vec<(Message, DeadLetter)>,
    acked: Vec<Message>,
    lease_extensions: usize,
    /// receipt → (message id, is current)
    receipts: HashMap<String, String>,
}

impl MemoryQueue {
    pub fn new(visibility: Duration, has_dlq: bool) -> MemoryQueue {
        MemoryQueue {
            inner: Mutex::new(QueueState::default()),
            visibility,
            has_dlq,
            next_id: AtomicU64::new(1),
            fail_receives: AtomicUsize::new(0),
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
        self.inner.lock().unwrap().messages.push_back(Stored {
            message,
            visible_at: Instant::now(),
        });
        id
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

    fn with_receipt<T>(
        &self,
        receipt: &str,
        f: impl FnOnce(&mut QueueState, usize) -> T,
    ) -> Result<T> {
        let mut state = self.inner.lock().unwrap();
        let id =
            state.receipts.get(receipt).cloned().ok_or_else(|| {
                Error::new(ErrorKind::Service, format!("unknown receipt {receipt}"))
            })?;
        let index = state
            .messages
            .iter()
            .position(|s| s.message.id == id && s.message.receipt == receipt)
            .ok_or_else(|| Error::new(ErrorKind::Service, format!("receipt {receipt} is stale")))?;
        Ok(f(&mut state, index))
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
            let mut out = Vec::new();
            {
                let mut state = self.inner.lock().unwrap();
                let QueueState {
                    messages, receipts, ..
                } = &mut *state;
                for stored in messages
                    .iter_mut()
                    .filter(|s| s.visible_at <= now)
                    .take(max)
                {
                    stored.message.receive_count += 1;
                    stored.message.receipt =
                        format!("{}#{}", stored.message.id, stored.message.receive_count);
                    stored.visible_at = now + visibility.unwrap_or(self.visibility);
                    receipts.insert(stored.message.receipt.clone(), stored.message.id.clone());
                    out.push(stored.message.clone());
                }
            }
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
            if let Some(i) = state.messages.iter().position(|s| s.message.id == m.id) {
                let stored = state.messages.remove(i).unwrap();
                state.acked.push(stored.message);
            }
        }
        Ok(())
    }

    async fn retry_after(&self, message: &Message, delay: Duration) -> Result<()> {
        self.with_receipt(&message.receipt, |state, i| {
            state.messages[i].visible_at = Instant::now() + delay
        })
    }

    async fn extend_lease(&self, message: &Message, visibility: Duration) -> Result<()> {
        self.with_receipt(&message.receipt, |state, i| {
            state.messages[i].visible_at = Instant::now() + visibility;
            state.lease_extensions += 1;
        })
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
        if let Some(i) = state
            .messages
            .iter()
            .position(|s| s.message.id == message.id)
        {
            state.messages.remove(i);
        }
        Ok(())
    }

    async fn visibility_timeout(&self) -> Result<Duration> {
        Ok(self.visibility)
    }

    async fn depth(&self) -> Result<QueueDepth> {
        let now = Instant::now();
        let state = self.inner.lock().unwrap();
        let visible = state
            .messages
            .iter()
            .filter(|s| s.visible_at <= now)
            .count() as u64;
        Ok(QueueDepth {
            visible,
            in_flight: state.messages.len() as u64 - visible,
            delayed: 0,
        })
    }
}

type Objects = HashMap<(String, String), (Vec<u8>, ObjectInfo)>;

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

    pub fn insert(&self, bucket: &str, key: &str, bytes: Vec<u8>) -> String {
        let etag = format!("{:016x}", fnv(&bytes));
        let info = ObjectInfo {
            etag: etag.clone(),
            size: bytes.len() as u64,
            content_type: None,
            metadata: HashMap::new(),
        };
        self.objects
            .lock()
            .unwrap()
            .insert((bucket.into(), key.into()), (bytes, info));
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
            .cloned()
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

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

impl Store for MemoryStore {
    async fn get(&self, bucket: &str, key: &str, if_match: Option<&str>) -> Result<GetOutcome> {
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
            Some((_, info)) if if_match.is_some_and(|e| e != info.etag) => GetOutcome::Changed,
            Some((bytes, info)) => GetOutcome::Found {
                bytes: bytes.clone(),
                info: info.clone(),
            },
        })
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectInfo>> {
        self.check_available(bucket)?;
        Ok(self.object(bucket, key).map(|(_, info)| info))
    }

    async fn put(&self, object: PutObject) -> Result<()> {
        self.check_available(&object.bucket)?;
        let etag = format!("{:016x}", fnv(&object.bytes));
        let info = ObjectInfo {
            etag,
            size: object.bytes.len() as u64,
            content_type: Some(object.content_type),
            metadata: object.metadata,
        };
        self.objects
            .lock()
            .unwrap()
            .insert((object.bucket, object.key), (object.bytes, info));
        self.puts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}
