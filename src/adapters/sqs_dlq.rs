//! [`DeadLetterQueue`] on SQS, and finding the dead-letter queue from the config.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, MessageAttributeValue, QueueAttributeName,
};
use aws_sdk_sqs::Client;
use tokio::sync::OnceCell;

use crate::adapters::aws::{self, classify, RawStatus};
use crate::adapters::sqs;
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::ports::{
    AttributeValue, DeadLetterQueue, DlqMessage, MoveTaskStatus, QueueDepth, MAX_BATCH,
    MAX_VISIBILITY_SECS,
};

/// A long poll, short as they go: SQS then asks all its servers, so an empty answer means the
/// queue has no visible message (a short poll samples a few servers only).
const RECEIVE_WAIT_SECS: i32 = 1;

pub struct SqsDeadLetterQueue {
    client: Client,
    url: String,
    arn: OnceCell<String>,
}

impl SqsDeadLetterQueue {
    pub fn new(client: Client, url: impl Into<String>) -> SqsDeadLetterQueue {
        SqsDeadLetterQueue {
            client,
            url: url.into(),
            arn: OnceCell::new(),
        }
    }

    /// The dead-letter queue of `config` (see [`resolve_dlq_url`]), with its credentials.
    pub async fn from_config(config: &Config, flag: Option<&str>) -> Result<SqsDeadLetterQueue> {
        let sdk = aws::sdk_config(&config.aws).await;
        let client = aws::sqs_client(&sdk);
        let url = resolve_dlq_url(&client, config, flag).await?;
        Ok(SqsDeadLetterQueue::new(client, url))
    }

    async fn attributes(
        &self,
        url: &str,
        names: &[QueueAttributeName],
    ) -> Result<HashMap<QueueAttributeName, String>> {
        sqs::queue_attributes(&self.client, url, "dead-letter tools", names).await
    }

    async fn queue_arn(&self, url: &str) -> Result<String> {
        self.attributes(url, &[QueueAttributeName::QueueArn])
            .await?
            .remove(&QueueAttributeName::QueueArn)
            .ok_or_else(|| Error::new(ErrorKind::Service, format!("{url}: no QueueArn")))
    }

    async fn own_arn(&self) -> Result<&str> {
        self.arn
            .get_or_try_init(|| self.queue_arn(&self.url))
            .await
            .map(String::as_str)
    }
}

fn from_sqs(m: &aws_sdk_sqs::types::Message) -> Option<DlqMessage> {
    let (dlq_receive_count, sent_at) = sqs::delivery_info(m);
    let attributes = m
        .message_attributes()
        .into_iter()
        .flatten()
        .map(|(name, value)| {
            (
                name.clone(),
                AttributeValue {
                    data_type: value.data_type().to_string(),
                    string: value.string_value().map(String::from),
                    binary: value.binary_value().map(|b| b.as_ref().to_vec()),
                },
            )
        })
        .collect();
    Some(DlqMessage {
        id: m.message_id()?.to_string(),
        receipt: m.receipt_handle()?.to_string(),
        body: m.body().unwrap_or_default().to_string(),
        attributes,
        dlq_receive_count,
        sent_at,
    })
}

fn to_sqs(value: &AttributeValue) -> Result<MessageAttributeValue> {
    MessageAttributeValue::builder()
        .data_type(&value.data_type)
        .set_string_value(value.string.clone())
        .set_binary_value(value.binary.clone().map(Blob::new))
        .build()
        .map_err(|e| Error::config(format!("message attribute: {e}")))
}

impl DeadLetterQueue for SqsDeadLetterQueue {
    fn url(&self) -> &str {
        &self.url
    }

    async fn depth(&self) -> Result<QueueDepth> {
        sqs::queue_depth(&self.client, &self.url).await
    }

    async fn receive(&self, max: usize, lease: Duration) -> Result<Vec<DlqMessage>> {
        let out = sqs::receive_request(&self.client, &self.url, max)
            .wait_time_seconds(RECEIVE_WAIT_SECS)
            .visibility_timeout(lease.as_secs().clamp(1, MAX_VISIBILITY_SECS) as i32)
            .send()
            .await
            .map_err(|e| classify("sqs ReceiveMessage (dead-letter queue)", e))?;
        Ok(out.messages().iter().filter_map(from_sqs).collect())
    }

    async fn release(&self, messages: &[DlqMessage]) -> Result<()> {
        for chunk in messages.chunks(MAX_BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(&m.receipt)
                        .visibility_timeout(0)
                        .build()
                        .expect("id and receipt handle are set")
                })
                .collect();
            let out = self
                .client
                .change_message_visibility_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| classify("sqs ChangeMessageVisibilityBatch", e))?;
            if let Some(failed) = out.failed().first() {
                return Err(Error::new(
                    ErrorKind::Service,
                    format!(
                        "sqs ChangeMessageVisibilityBatch: {} of {} messages not made visible \
                         ({})",
                        out.failed().len(),
                        chunk.len(),
                        failed.code()
                    ),
                ));
            }
        }
        Ok(())
    }

    async fn send_copy(&self, queue_url: &str, message: &DlqMessage) -> Result<()> {
        let attributes = message
            .attributes
            .iter()
            .map(|(name, value)| Ok((name.clone(), to_sqs(value)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        self.client
            .send_message()
            .queue_url(queue_url)
            .message_body(&message.body)
            .set_message_attributes((!attributes.is_empty()).then_some(attributes))
            .send()
            .await
            .map_err(|e| classify(&format!("sqs SendMessage {} to {queue_url}", message.id), e))?;
        Ok(())
    }

    async fn delete(&self, message: &DlqMessage) -> Result<()> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(&message.receipt)
            .send()
            .await
            .map_err(|e| classify(&format!("sqs DeleteMessage {}", message.id), e))?;
        Ok(())
    }

    async fn purge(&self) -> Result<()> {
        self.client
            .purge_queue()
            .queue_url(&self.url)
            .send()
            .await
            .map_err(|e| classify(&format!("sqs PurgeQueue {}", self.url), e))?;
        Ok(())
    }

    async fn start_move_task(
        &self,
        destination_url: Option<&str>,
        per_sec: Option<u32>,
    ) -> Result<String> {
        let source_arn = self.own_arn().await?.to_string();
        let destination_arn = match destination_url {
            Some(url) => Some(self.queue_arn(url).await?),
            None => None,
        };
        let out = self
            .client
            .start_message_move_task()
            .source_arn(source_arn)
            .set_destination_arn(destination_arn)
            .set_max_number_of_messages_per_second(per_sec.map(|n| n.min(500) as i32))
            .send()
            .await
            .map_err(|e| {
                // An endpoint without the API (moto answers an HTML 500 page) has no error
                // code: say it plainly rather than "error (HTTP 500)".
                let unsupported = e.code().is_none()
                    && e.raw_response()
                        .and_then(RawStatus::http_status)
                        .is_some_and(|s| s >= 500 || s == 404);
                let e = classify("sqs StartMessageMoveTask", e);
                if unsupported {
                    Error::new(
                        e.kind(),
                        format!("{}: not supported by this endpoint", e.message()),
                    )
                } else {
                    e
                }
            })?;
        out.task_handle()
            .map(String::from)
            .ok_or_else(|| Error::new(ErrorKind::Service, "StartMessageMoveTask: no task handle"))
    }

    async fn move_task(&self, handle: &str) -> Result<Option<MoveTaskStatus>> {
        let source_arn = self.own_arn().await?.to_string();
        let out = self
            .client
            .list_message_move_tasks()
            .source_arn(source_arn)
            .max_results(10)
            .send()
            .await
            .map_err(|e| classify("sqs ListMessageMoveTasks", e))?;
        // Only the running task has a handle in the listing; finished ones are the newest
        // entries without one.
        let entry = out
            .results()
            .iter()
            .find(|t| t.task_handle() == Some(handle))
            .or_else(|| out.results().first());
        Ok(entry.map(|t| MoveTaskStatus {
            status: t.status().unwrap_or("UNKNOWN").to_string(),
            moved: t.approximate_number_of_messages_moved().max(0) as u64,
            to_move: t
                .approximate_number_of_messages_to_move()
                .map(|n| n.max(0) as u64),
            failure_reason: t.failure_reason().map(String::from),
        }))
    }
}

/// The dead-letter queue's URL: `--dlq`, else `queue.dlq_url`, else the target of
/// `queue.url`'s RedrivePolicy.
pub async fn resolve_dlq_url(
    client: &Client,
    config: &Config,
    flag: Option<&str>,
) -> Result<String> {
    if let Some(url) = flag.or(config.queue.dlq_url.as_deref()) {
        return Ok(url.to_string());
    }
    let Some(queue) = &config.queue.url else {
        return Err(Error::config(
            "no dead-letter queue: set queue.dlq_url (RESIZEQ_QUEUE__DLQ_URL) or pass --dlq URL",
        ));
    };
    let out = client
        .get_queue_attributes()
        .queue_url(queue)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .map_err(|e| classify(&format!("sqs GetQueueAttributes RedrivePolicy {queue}"), e))?;
    let policy = out
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy))
        .ok_or_else(|| {
            Error::config(format!(
                "no dead-letter queue: queue.dlq_url is not set and {queue} has no RedrivePolicy; \
                 pass --dlq URL"
            ))
        })?;
    sqs::redrive_dlq_url(client, queue, policy).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_survive_the_round_trip() {
        for value in [
            AttributeValue::text("corrupt"),
            AttributeValue {
                data_type: "Number".into(),
                string: Some("3".into()),
                binary: None,
            },
            AttributeValue {
                data_type: "Binary.gz".into(),
                string: None,
                binary: Some(vec![0, 1, 2]),
            },
        ] {
            let sqs = to_sqs(&value).unwrap();
            let message = aws_sdk_sqs::types::Message::builder()
                .message_id("m")
                .receipt_handle("r")
                .message_attributes("a", sqs)
                .build();
            assert_eq!(from_sqs(&message).unwrap().attributes["a"], value);
        }
    }
}
