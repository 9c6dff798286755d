//! [`Publish`]: where the events for the application go (`crate::events`).

use futures_util::future::BoxFuture;

use crate::error::Result;
use crate::events::AppEvent;

/// Sends one event to the application. Object-safe, so a processor holds an
/// `Arc<dyn Publish>` whatever the target is (SQS, SNS, EventBridge, a local file, memory).
///
/// `Ok` means the target accepted the event. An `Err` says, like every port's, whether trying
/// again can help: throttling, 5xx, a network fault or a missing permission are transient
/// (`ErrorKind::Service`); a queue, topic or bus that does not exist, or an event the target
/// refuses, is permanent. The same event published twice carries the same CloudEvents `id`.
pub trait Publish: Send + Sync + 'static {
    fn publish<'a>(&'a self, event: &'a AppEvent) -> BoxFuture<'a, Result<()>>;
}
