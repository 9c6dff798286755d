//! An in-memory [`DeadLetterQueue`] for the unit tests of the dlq commands: leases on tokio's
//! clock, copies recorded per destination, sends and deletes that fail on demand, and an
//! optional native move task.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::error::{Error, ErrorKind, Result};
use crate::ports::{AttributeValue, DeadLetterQueue, DlqMessage, MoveTaskStatus, QueueDepth};

struct Stored {
    message: DlqMessage,
    visible_at: Instant,
}

#[derive(Default)]
struct State {
    messages: Vec<Stored>,
    sent: Vec<(String, DlqMessage)>,
    next_id: u64,
    /// Sends (deletes) that succeed before every later one fails.
    sends_left: Option<usize>,
    deletes_left: Option<usize>,
    native: bool,
    native_moves: Vec<(Option<String>, Option<u32>)>,
    task_polls: u32,
}

pub struct MemoryDlq {
    url: String,
    state: Mutex<State>,
}

impl MemoryDlq {
    pub fn new(url: &str) -> MemoryDlq {
        MemoryDlq {
            url: url.to_string(),
            state: Mutex::new(State::default()),
        }
    }

    /// Supports StartMessageMoveTask: the task reports RUNNING once, then COMPLETED.
    pub fn with_native_move(self) -> MemoryDlq {
        self.state.lock().unwrap().native = true;
        self
    }

    pub fn add(&self, body: &str, attributes: &[(&str, &str)]) {
        self.add_sent_at(
            body,
            attributes,
            SystemTime::now() - Duration::from_secs(60),
        );
    }

    pub fn add_sent_at(&self, body: &str, attributes: &[(&str, &str)], sent_at: SystemTime) {
        let mut state = self.state.lock().unwrap();
        state.next_id += 1;
        let message = DlqMessage {
            id: format!("d{}", state.next_id),
            receipt: String::new(),
            body: body.to_string(),
            attributes: attributes
                .iter()
                .map(|(k, v)| (k.to_string(), AttributeValue::text(*v)))
                .collect(),
            dlq_receive_count: 0,
            sent_at: Some(sent_at),
        };
        state.messages.push(Stored {
            message,
            visible_at: Instant::now(),
        });
    }

    pub fn fail_send_after(&self, n: usize) {
        self.state.lock().unwrap().sends_left = Some(n);
    }

    pub fn fail_delete_after(&self, n: usize) {
        self.state.lock().unwrap().deletes_left = Some(n);
    }

    pub fn sent(&self) -> Vec<(String, DlqMessage)> {
        self.state.lock().unwrap().sent.clone()
    }

    pub fn native_moves(&self) -> Vec<(Option<String>, Option<u32>)> {
        self.state.lock().unwrap().native_moves.clone()
    }

    pub fn remaining(&self) -> usize {
        self.state.lock().unwrap().messages.len()
    }

    pub fn visible_count(&self) -> usize {
        let now = Instant::now();
        let state = self.state.lock().unwrap();
        state
            .messages
            .iter()
            .filter(|s| s.visible_at <= now)
            .count()
    }

    pub fn bodies(&self) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state
            .messages
            .iter()
            .map(|s| s.message.body.clone())
            .collect()
    }

    fn injected(what: &str) -> Error {
        Error::new(ErrorKind::Service, format!("{what}: injected fault"))
    }

    /// Takes one from a budget of successes; false once it is spent.
    fn spend(budget: &mut Option<usize>) -> bool {
        match budget {
            Some(0) => false,
            Some(n) => {
                *n -= 1;
                true
            }
            None => true,
        }
    }
}

impl DeadLetterQueue for MemoryDlq {
    fn url(&self) -> &str {
        &self.url
    }

    async fn depth(&self) -> Result<QueueDepth> {
        let visible = self.visible_count() as u64;
        Ok(QueueDepth {
            visible,
            in_flight: self.remaining() as u64 - visible,
            delayed: 0,
        })
    }

    async fn receive(&self, max: usize, lease: Duration) -> Result<Vec<DlqMessage>> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap();
        let mut out = Vec::new();
        for stored in state
            .messages
            .iter_mut()
            .filter(|s| s.visible_at <= now)
            .take(max)
        {
            stored.message.dlq_receive_count += 1;
            stored.message.receipt =
                format!("{}#{}", stored.message.id, stored.message.dlq_receive_count);
            stored.visible_at = now + lease;
            out.push(stored.message.clone());
        }
        Ok(out)
    }

    async fn release(&self, messages: &[DlqMessage]) -> Result<()> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap();
        for m in messages {
            if let Some(s) = state
                .messages
                .iter_mut()
                .find(|s| s.message.receipt == m.receipt)
            {
                s.visible_at = now;
            }
        }
        Ok(())
    }

    async fn send_copy(&self, queue_url: &str, message: &DlqMessage) -> Result<()> {
        let mut state = self.state.lock().unwrap();
        if !Self::spend(&mut state.sends_left) {
            return Err(Self::injected("SendMessage"));
        }
        state.sent.push((queue_url.to_string(), message.clone()));
        Ok(())
    }

    async fn delete(&self, message: &DlqMessage) -> Result<()> {
        let mut state = self.state.lock().unwrap();
        if !Self::spend(&mut state.deletes_left) {
            return Err(Self::injected("DeleteMessage"));
        }
        state.messages.retain(|s| s.message.id != message.id);
        Ok(())
    }

    async fn purge(&self) -> Result<()> {
        self.state.lock().unwrap().messages.clear();
        Ok(())
    }

    async fn start_move_task(
        &self,
        destination_url: Option<&str>,
        per_sec: Option<u32>,
    ) -> Result<String> {
        let mut state = self.state.lock().unwrap();
        if !state.native {
            return Err(Error::config(
                "sqs StartMessageMoveTask: not supported by this endpoint",
            ));
        }
        state
            .native_moves
            .push((destination_url.map(String::from), per_sec));
        Ok("task-1".into())
    }

    async fn move_task(&self, handle: &str) -> Result<Option<MoveTaskStatus>> {
        let mut state = self.state.lock().unwrap();
        if handle != "task-1" || state.native_moves.is_empty() {
            return Ok(None);
        }
        state.task_polls += 1;
        let total = state.messages.len() as u64;
        if state.task_polls == 1 {
            return Ok(Some(MoveTaskStatus {
                status: "RUNNING".into(),
                moved: total / 2,
                to_move: Some(total),
                failure_reason: None,
            }));
        }
        let destination = state.native_moves[0].0.clone().unwrap_or_default();
        let moved: Vec<Stored> = std::mem::take(&mut state.messages);
        let count = moved.len() as u64;
        for s in moved {
            state.sent.push((destination.clone(), s.message));
        }
        Ok(Some(MoveTaskStatus {
            status: "COMPLETED".into(),
            moved: count,
            to_move: Some(count),
            failure_reason: None,
        }))
    }
}
