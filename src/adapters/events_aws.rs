//! [`Publish`] on AWS: an SQS queue ([`SqsEvents`]: the CloudEvents document is the message
//! body), an SNS topic ([`SnsEvents`]: the document is the message) or an EventBridge bus
//! ([`EventBridgeEvents`]: `Source` `resizeq`, `DetailType` the event type, `Detail` the
//! document). [`publisher`] picks one for an `events.target`.
//!
//! Failures are classified by `aws::classify`: throttling, 5xx, network faults and missing
//! permissions are transient; a queue, topic or bus that does not exist is permanent.

use std::sync::Arc;

use aws_config::SdkConfig;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use futures_util::future::BoxFuture;

use crate::adapters::aws::{self, classify, is_transient_code};
use crate::error::{Error, ErrorKind, Result};
use crate::events::{AppEvent, EventsTarget};
use crate::ports::Publish;

/// The EventBridge `Source` of every event (what a rule matches on).
pub const EVENTBRIDGE_SOURCE: &str = "resizeq";

/// The publisher of `target`, on clients built from the same SDK configuration (endpoint,
/// region, credentials) as the worker's S3 and SQS clients.
pub fn publisher(target: &EventsTarget, sdk: &SdkConfig) -> Arc<dyn Publish> {
    match target {
        EventsTarget::Sqs { queue_url } => Arc::new(SqsEvents {
            client: aws::sqs_client(sdk),
            queue_url: queue_url.clone(),
        }),
        EventsTarget::Sns { topic_arn } => Arc::new(SnsEvents {
            client: aws::sns_client(sdk),
            topic_arn: topic_arn.clone(),
        }),
        EventsTarget::EventBridge { bus } => Arc::new(EventBridgeEvents {
            client: aws::eventbridge_client(sdk),
            bus: bus.clone(),
        }),
    }
}

pub struct SqsEvents {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl Publish for SqsEvents {
    fn publish<'a>(&'a self, event: &'a AppEvent) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.client
                .send_message()
                .queue_url(&self.queue_url)
                .message_body(event.to_json())
                .send()
                .await
                .map_err(|e| classify(&format!("sqs SendMessage {}", self.queue_url), e))?;
            Ok(())
        })
    }
}

pub struct SnsEvents {
    client: aws_sdk_sns::Client,
    topic_arn: String,
}

impl Publish for SnsEvents {
    fn publish<'a>(&'a self, event: &'a AppEvent) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.client
                .publish()
                .topic_arn(&self.topic_arn)
                .message(event.to_json())
                .send()
                .await
                .map_err(|e| classify(&format!("sns Publish {}", self.topic_arn), e))?;
            Ok(())
        })
    }
}

pub struct EventBridgeEvents {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

impl Publish for EventBridgeEvents {
    fn publish<'a>(&'a self, event: &'a AppEvent) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let op = format!("events PutEvents {}", self.bus);
            let entry = PutEventsRequestEntry::builder()
                .source(EVENTBRIDGE_SOURCE)
                .detail_type(event.event_type())
                .detail(event.to_json())
                .event_bus_name(&self.bus)
                .build();
            let output = self
                .client
                .put_events()
                .entries(entry)
                .send()
                .await
                .map_err(|e| classify(&op, e))?;
            // PutEvents answers 200 with per-entry failures.
            if output.failed_entry_count() == 0 {
                return Ok(());
            }
            let failed = output.entries().iter().find(|e| e.error_code().is_some());
            let code = failed.and_then(|e| e.error_code()).unwrap_or("");
            let message = failed.and_then(|e| e.error_message()).unwrap_or("");
            Err(entry_failure(&op, code, message))
        })
    }
}

/// A PutEvents entry that was not accepted: transient for throttling and internal failures
/// (and the codes `classify` retries), permanent otherwise (a malformed or too large event).
fn entry_failure(op: &str, code: &str, message: &str) -> Error {
    let kind = if code.is_empty() || is_transient_code(code) {
        ErrorKind::Service
    } else {
        ErrorKind::Config
    };
    let code = if code.is_empty() {
        "entry failed"
    } else {
        code
    };
    let message = if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    };
    Error::new(kind, format!("{op}: {code}{message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_entries_are_classified_by_their_code() {
        let e = entry_failure("events PutEvents b", "ThrottlingException", "slow down");
        assert_eq!(e.kind(), ErrorKind::Service, "{e}");
        assert_eq!(
            e.message(),
            "events PutEvents b: ThrottlingException: slow down"
        );
        assert_eq!(
            entry_failure("op", "InternalFailure", "").kind(),
            ErrorKind::Service
        );
        assert_eq!(entry_failure("op", "", "").kind(), ErrorKind::Service);
        let e = entry_failure("op", "MalformedDetail", "Detail is malformed.");
        assert!(e.is_permanent(), "{e}");
    }
}
