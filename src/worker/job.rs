//! One message: parse it into object events, hand each to the [`Processor`], and decide what
//! happens to the message; the run loop carries the decision out.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{debug, Instrument};

use super::processor::{Delivery, RecordOutcome};
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

/// Handles one message and decides its fate. Every record is attempted, whatever happened to
/// the others. A transient failure of any record retries the whole message (records done are
/// skipped next time, as their variants are current); otherwise a permanent failure of any
/// record dead-letters it, with every failed record named in the reason.
pub async fn handle<Q: Queue, S: Store>(
    ctx: &Arc<WorkerContext<Q, S>>,
    message: &Message,
    draining: &CancellationToken,
) -> Decision {
    let records = match ctx.queue.events(message) {
        Ok(Parsed::Test) => return Decision::Ack(RecordOutcome::Ignored),
        Ok(Parsed::Records(records)) => records,
        // Poison: the body will never parse, so retrying only delays the DLQ.
        Err(e) => return Decision::DeadLetter(e),
    };
    // A message received before may have done its work and then failed to tell the app.
    let delivery = if message.receive_count > 1 {
        Delivery::Repeat
    } else {
        Delivery::First
    };
    // Processed outranks deleted outranks superseded outranks skipped outranks ignored.
    let mut outcome = RecordOutcome::Ignored;
    let mut transient = Vec::new();
    let mut permanent = Vec::new();
    for record in records {
        let event = match record {
            Ok(event) => event,
            Err(unreadable) => {
                permanent.push(unreadable);
                continue;
            }
        };
        // `instrument`, not `enter`: a guard held across an await would leak this span into
        // whatever else runs on the thread meanwhile.
        let span = tracing::info_span!("record", bucket = %event.bucket(), key = %event.key());
        match ctx
            .processor
            .handle(&event, delivery, draining)
            .instrument(span)
            .await
        {
            Ok(record) => {
                debug!(outcome = record.as_str(), "record done");
                outcome = outcome.max(record);
            }
            Err(e) if e.kind() == ErrorKind::Cancelled => return Decision::Release,
            Err(e) if e.is_permanent() => permanent.push(e),
            Err(e) => transient.push(e),
        }
    }
    if !transient.is_empty() {
        transient.extend(permanent);
        return Decision::Retry(together(transient));
    }
    if !permanent.is_empty() {
        return Decision::DeadLetter(together(permanent));
    }
    Decision::Ack(outcome)
}

/// One error for the failed records of a message: the first one's kind, every reason.
fn together(mut errors: Vec<Error>) -> Error {
    if errors.len() == 1 {
        return errors.remove(0);
    }
    let reasons: Vec<String> = errors.iter().map(Error::to_string).collect();
    Error::new(
        errors[0].kind(),
        format!("{} records failed: {}", errors.len(), reasons.join("; ")),
    )
}
