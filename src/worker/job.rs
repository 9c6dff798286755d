//! One message: parse it into object events, hand each to the [`Processor`], and decide what
//! happens to the message; the run loop carries the decision out.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{debug, Instrument};

use super::processor::RecordOutcome;
use super::WorkerContext;
use crate::error::{Error, ErrorKind};
use crate::event::Parsed;
use crate::ports::{Message, Queue, Store};

/// What to do with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Delete it. The outcome is the most significant of its records' (for metrics).
    Ack(RecordOutcome),
    /// Make it visible again after a backoff.
    Retry(Error),
    /// Dead-letter it with this error.
    DeadLetter(Error),
    /// Shutdown came before its work started: make it visible again at once.
    Release,
}

/// Handles one message and decides its fate. Transient failures of any record retry the whole
/// message (records already done are skipped next time); a permanent failure dead-letters it.
pub async fn handle<Q: Queue, S: Store>(
    ctx: &Arc<WorkerContext<Q, S>>,
    message: &Message,
    draining: &CancellationToken,
) -> Decision {
    let events = match ctx.queue.events(message) {
        Ok(Parsed::Test) => return Decision::Ack(RecordOutcome::Ignored),
        Ok(Parsed::Created(events)) => events,
        // Poison: the body will never parse, so retrying only delays the DLQ.
        Err(e) => return Decision::DeadLetter(e),
    };
    // Processed outranks superseded outranks skipped outranks ignored.
    let mut outcome = RecordOutcome::Ignored;
    for event in &events {
        // `instrument`, not `enter`: a guard held across an await would leak this span into
        // whatever else runs on the thread meanwhile.
        let span = tracing::info_span!("record", bucket = %event.bucket, key = %event.key);
        match ctx.processor.handle(event, draining).instrument(span).await {
            Ok(record) => {
                debug!(outcome = record.as_str(), "record done");
                outcome = outcome.max(record);
            }
            Err(e) if e.kind() == ErrorKind::Cancelled => return Decision::Release,
            Err(e) if e.is_permanent() => return Decision::DeadLetter(e),
            Err(e) => return Decision::Retry(e),
        }
    }
    Decision::Ack(outcome)
}
