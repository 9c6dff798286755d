//! Reading a queue without consuming it: messages received are kept invisible ("held") until
//! the command ends, so that later receives return new ones, then made visible again at once.
//! The lease (`--lease-secs`) bounds how long they stay hidden if the command dies.

use std::collections::HashMap;
use std::time::Duration;

use crate::error::Result;
use crate::ports::{DeadLetterQueue, DlqMessage, MAX_BATCH};

/// Messages received and kept invisible until [`Held::release`]; each counted once by id (a
/// message whose lease ran out comes back with a new receipt, which replaces the old one).
#[derive(Default)]
pub(super) struct Held {
    pub(super) messages: Vec<DlqMessage>,
    index: HashMap<String, usize>,
}

impl Held {
    /// Holds `message`; whether it is new (not seen before in this command).
    pub(super) fn hold(&mut self, message: DlqMessage) -> bool {
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

    pub(super) fn len(&self) -> usize {
        self.messages.len()
    }

    pub(super) fn seen(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    /// Makes them all visible again; a failure only delays them until their lease ends.
    pub(super) async fn release<D: DeadLetterQueue>(&self, dlq: &D, note: &mut dyn FnMut(String)) {
        for chunk in self.messages.chunks(MAX_BATCH) {
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
pub(super) async fn scan<D: DeadLetterQueue>(
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
            .receive((max - held.len()).min(MAX_BATCH), lease)
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
