//! [`MemoryEvents`]: a [`Publish`] that keeps what it was given, with a switch to fail, for
//! unit tests of the code that emits events.

use std::sync::Mutex;

use futures_util::future::BoxFuture;

use crate::error::{Error, Result};
use crate::events::AppEvent;
use crate::ports::Publish;

#[derive(Debug, Default)]
pub struct MemoryEvents {
    published: Mutex<Vec<AppEvent>>,
    /// While set, every publish fails with this error (and keeps nothing).
    pub failure: Mutex<Option<Error>>,
}

impl MemoryEvents {
    pub fn new() -> MemoryEvents {
        MemoryEvents::default()
    }

    /// The events published so far, in order.
    pub fn published(&self) -> Vec<AppEvent> {
        self.published.lock().unwrap().clone()
    }

    /// The CloudEvents types published so far, in order (`resizeq.variants.ready`…).
    pub fn types(&self) -> Vec<&'static str> {
        let published = self.published.lock().unwrap();
        published.iter().map(AppEvent::event_type).collect()
    }
}

impl Publish for MemoryEvents {
    fn publish<'a>(&'a self, event: &'a AppEvent) -> BoxFuture<'a, Result<()>> {
        let result = match self.failure.lock().unwrap().clone() {
            Some(error) => Err(error),
            None => {
                self.published.lock().unwrap().push(event.clone());
                Ok(())
            }
        };
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::events::{Failed, SourceRef};

    #[tokio::test]
    async fn keeps_events_in_order_and_fails_when_told() {
        let events = MemoryEvents::new();
        let failed = |key: &str| {
            AppEvent::Failed(Failed {
                source: SourceRef::new("b", key, None),
                error_kind: "corrupt".into(),
                error_reason: "truncated".into(),
            })
        };
        let publish: &dyn Publish = &events;
        publish.publish(&failed("a")).await.unwrap();
        *events.failure.lock().unwrap() = Some(Error::new(ErrorKind::Service, "down"));
        let err = publish.publish(&failed("b")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Service);
        *events.failure.lock().unwrap() = None;
        publish.publish(&failed("c")).await.unwrap();
        let keys: Vec<_> = events
            .published()
            .iter()
            .map(|e| e.source().key.clone())
            .collect();
        assert_eq!(keys, ["a", "c"]);
        assert_eq!(events.types(), ["resizeq.variants.failed"; 2]);
    }
}
