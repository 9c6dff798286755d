//! `events.target`: where the events for the application go, one string with one reading.
//!
//! - `https://sqs.<region>.amazonaws.com/<account>/<queue>` (any `http(s)://` URL whose path
//!   is `/<account digits>/<queue>`, as emulators serve them): an SQS queue, by its URL.
//! - `arn:<partition>:sns:<region>:<account>:<topic>`: an SNS topic.
//! - `arn:<partition>:events:<region>:<account>:event-bus/<name>`: an EventBridge bus.
//! - `eventbridge:<name>`: an EventBridge bus in the worker's own account and region
//!   (`eventbridge:default` is the account's default bus).
//!
//! Nothing else is accepted: a bare name could be a queue, a topic or a bus, so it is an error
//! that says which forms to write.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A parsed, valid `events.target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventsTarget {
    /// An SQS queue URL: the document is the message body.
    Sqs { queue_url: String },
    /// An SNS topic ARN: the document is the message.
    Sns { topic_arn: String },
    /// An EventBridge bus, as PutEvents' `EventBusName` takes it (an ARN or a name).
    EventBridge { bus: String },
}

const FORMS: &str = "an SQS queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/QUEUE), \
an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:TOPIC), an EventBridge bus ARN \
(arn:aws:events:REGION:ACCOUNT:event-bus/NAME) or eventbridge:NAME";

impl EventsTarget {
    /// `Ok(None)` for an empty (or blank) target: events are off.
    pub fn parse_optional(text: &str) -> Result<Option<EventsTarget>> {
        let text = text.trim();
        if text.is_empty() {
            Ok(None)
        } else {
            text.parse().map(Some)
        }
    }

    /// The kind of target, for logs and `config show`: `sqs`, `sns` or `eventbridge`.
    pub fn kind(&self) -> &'static str {
        match self {
            EventsTarget::Sqs { .. } => "sqs",
            EventsTarget::Sns { .. } => "sns",
            EventsTarget::EventBridge { .. } => "eventbridge",
        }
    }
}

impl FromStr for EventsTarget {
    type Err = Error;

    fn from_str(text: &str) -> Result<EventsTarget> {
        let bad = |why: &str| {
            Err(Error::config(format!(
                "events.target: `{text}` {why}; write {FORMS}"
            )))
        };
        if let Some(rest) = text
            .strip_prefix("https://")
            .or_else(|| text.strip_prefix("http://"))
        {
            let path = rest.split_once('/').map_or("", |(_, path)| path);
            let path = path.split(['?', '#']).next().unwrap_or("");
            let segments: Vec<&str> = path.split('/').collect();
            return match segments.as_slice() {
                [account, queue]
                    if !account.is_empty()
                        && account.bytes().all(|b| b.is_ascii_digit())
                        && is_name(queue) =>
                {
                    Ok(EventsTarget::Sqs {
                        queue_url: text.to_string(),
                    })
                }
                _ => bad("is a URL but not an SQS queue URL (its path must be /ACCOUNT/QUEUE)"),
            };
        }
        if let Some(name) = text.strip_prefix("eventbridge:") {
            return if is_name(name) {
                Ok(EventsTarget::EventBridge {
                    bus: name.to_string(),
                })
            } else {
                bad("names no event bus (letters, digits, . - _ only)")
            };
        }
        if text.starts_with("arn:") {
            // arn:partition:service:region:account:resource
            let parts: Vec<&str> = text.splitn(6, ':').collect();
            let [_, partition, service, region, account, resource] = parts.as_slice() else {
                return bad("is not a complete ARN");
            };
            if partition.is_empty() || region.is_empty() || account.is_empty() {
                return bad("is not a complete ARN (partition, region and account are needed)");
            }
            return match *service {
                "sns" if is_name(resource) => Ok(EventsTarget::Sns {
                    topic_arn: text.to_string(),
                }),
                "events" => match resource.strip_prefix("event-bus/") {
                    Some(bus) if is_name(bus) => Ok(EventsTarget::EventBridge {
                        bus: text.to_string(),
                    }),
                    _ => bad("is an EventBridge ARN but not of an event bus (…:event-bus/NAME)"),
                },
                "sqs" => bad("is an SQS queue ARN: give the queue by its URL instead"),
                "sns" => bad("is not an SNS topic ARN"),
                _ => bad("is an ARN of a service that cannot take events"),
            };
        }
        bad("is none of the target forms (a bare name could be a queue, a topic or a bus)")
    }
}

impl fmt::Display for EventsTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventsTarget::Sqs { queue_url } => f.write_str(queue_url),
            EventsTarget::Sns { topic_arn } => f.write_str(topic_arn),
            EventsTarget::EventBridge { bus } if bus.starts_with("arn:") => f.write_str(bus),
            EventsTarget::EventBridge { bus } => write!(f, "eventbridge:{bus}"),
        }
    }
}

/// A queue, topic or bus name: non-empty, letters, digits and `.-_` (what all three allow).
fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> EventsTarget {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn reject(text: &str) -> String {
        text.parse::<EventsTarget>()
            .unwrap_err()
            .message()
            .to_string()
    }

    #[test]
    fn each_form_reads_as_its_target() {
        for url in [
            "https://sqs.eu-west-1.amazonaws.com/123456789012/app-events",
            "http://127.0.0.1:5000/123456789012/app-events.fifo",
        ] {
            assert_eq!(
                parse(url),
                EventsTarget::Sqs {
                    queue_url: url.into()
                }
            );
        }
        let topic = "arn:aws:sns:eu-west-1:123456789012:app-events";
        assert_eq!(
            parse(topic),
            EventsTarget::Sns {
                topic_arn: topic.into()
            }
        );
        let bus = "arn:aws:events:eu-west-1:123456789012:event-bus/app";
        assert_eq!(parse(bus), EventsTarget::EventBridge { bus: bus.into() });
        assert_eq!(
            parse("eventbridge:default"),
            EventsTarget::EventBridge {
                bus: "default".into()
            }
        );
        for text in [
            topic,
            bus,
            "eventbridge:app",
            "http://127.0.0.1:5000/123456789012/q",
        ] {
            assert_eq!(parse(text).to_string(), text);
        }
        assert_eq!(EventsTarget::parse_optional(" ").unwrap(), None);
        assert_eq!(parse(topic).kind(), "sns");
    }

    #[test]
    fn everything_else_is_rejected_with_the_forms_to_write() {
        for (text, why) in [
            ("app-events", "a bare name could be"),
            ("https://example.com/hook", "not an SQS queue URL"),
            (
                "https://sqs.eu-west-1.amazonaws.com/queue",
                "not an SQS queue URL",
            ),
            ("arn:aws:sqs:eu-west-1:123456789012:q", "by its URL"),
            (
                "arn:aws:events:eu-west-1:123456789012:rule/r",
                "not of an event bus",
            ),
            ("arn:aws:sns:eu-west-1:123456789012", "not a complete ARN"),
            ("arn:aws:s3:::bucket", "partition, region and account"),
            ("eventbridge:", "names no event bus"),
            ("eventbridge:my bus", "names no event bus"),
        ] {
            let message = reject(text);
            assert!(message.contains(why), "{text}: {message}");
            assert!(message.starts_with("events.target: `"), "{message}");
            assert!(message.contains("eventbridge:NAME"), "{message}");
        }
    }
}
