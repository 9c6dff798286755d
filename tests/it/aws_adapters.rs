//! The SQS and S3 adapters against an S3/SQS emulator (moto; see tests/common/mod.rs): the
//! contracts of `ports::Queue` and `ports::Store` as the worker relies on them.
//!
//! Skipped (with `MOTO MISSING`) without `RESIZEQ_TEST_ENDPOINT`; `scripts/test` starts moto
//! and requires it.

use crate::common;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_sdk_sqs::types::{
    MessageAttributeValue, MessageSystemAttributeNameForSends, MessageSystemAttributeValue,
};
use resizeq::adapters::sqs::{SqsQueue, AWS_TRACE_HEADER, MAX_REASON_BYTES};
use resizeq::event::{self, ObjectEvent, Parsed};
use resizeq::ports::{
    Condition, DeadLetter, ETag, GetOutcome, Message, PutObject, Queue, QueueDepth, Store, Written,
    MAX_BATCH,
};
use resizeq::ErrorKind;

use common::TestAws;

const JPEG: &[u8] = include_bytes!("../fixtures/tiny.jpg");
const SECOND: Duration = Duration::from_secs(1);

async fn send(ctx: &TestAws, url: &str, body: &str) -> String {
    ctx.sqs
        .send_message()
        .queue_url(url)
        .message_body(body)
        .send()
        .await
        .expect("SendMessage")
        .message_id()
        .expect("a message id")
        .to_string()
}

/// Receives until `n` messages have come (or 5 polls of at most 1 s went by).
/// Up to `n` messages, long-polling for at most 15 s (a message whose visibility timeout is
/// running out comes back within it).
async fn receive_n(queue: &SqsQueue, n: usize) -> Vec<Message> {
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while got.len() < n && std::time::Instant::now() < deadline {
        got.extend(
            queue
                .receive((n - got.len()).min(MAX_BATCH), SECOND, None)
                .await
                .expect("receive"),
        );
    }
    got
}

async fn receive_one(queue: &SqsQueue) -> Message {
    let mut got = receive_n(queue, 1).await;
    assert_eq!(got.len(), 1, "expected one message, got {got:?}");
    got.remove(0)
}

async fn assert_nothing_visible(queue: &SqsQueue) {
    let got = queue
        .receive(10, Duration::ZERO, None)
        .await
        .expect("receive");
    assert!(got.is_empty(), "expected no visible message, got {got:?}");
}

#[tokio::test]
async fn receive_maps_attributes_and_ack_deletes() {
    let ctx = context!("receive_maps_attributes_and_ack_deletes");
    let url = ctx.create_queue("rt", 30).await;
    let queue = ctx.queue(&url, None);
    let before = SystemTime::now() - Duration::from_secs(60);
    let body = r#"{"Records":[{"s3":{"bucket":{"name":"b"},"object":{"key":"a+b.jpg"}}}]}"#;
    let string = |v: &str| {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(v)
            .build()
            .unwrap()
    };
    let sent_id = ctx
        .sqs
        .send_message()
        .queue_url(&url)
        .message_body(body)
        .message_attributes(
            "traceparent",
            string("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        )
        .message_attributes(
            "priority",
            MessageAttributeValue::builder()
                .data_type("Number")
                .string_value("7")
                .build()
                .unwrap(),
        )
        .message_system_attributes(
            MessageSystemAttributeNameForSends::AwsTraceHeader,
            MessageSystemAttributeValue::builder()
                .data_type("String")
                .string_value("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap()
        .message_id()
        .unwrap()
        .to_string();

    let m = receive_one(&queue).await;
    assert_eq!(m.id, sent_id);
    assert_eq!(m.body, body);
    assert_eq!(m.receive_count, 1);
    assert!(!m.receipt.is_empty());
    let sent_at = m.sent_at.expect("SentTimestamp");
    assert!(
        sent_at > before && sent_at <= SystemTime::now() + SECOND,
        "{sent_at:?}"
    );
    assert_eq!(
        m.attributes.get("traceparent").map(String::as_str),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    assert_eq!(m.attributes.get("priority").map(String::as_str), Some("7"));
    assert_eq!(
        m.attributes.get(AWS_TRACE_HEADER).map(String::as_str),
        Some("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"),
        "{:?}",
        m.attributes
    );

    queue.ack(std::slice::from_ref(&m)).await.expect("ack");
    assert_eq!(queue.depth().await.unwrap(), QueueDepth::default());
    queue.ack(&[]).await.expect("an empty ack is a no-op");
}

#[tokio::test]
async fn ack_batches_by_ten_and_names_the_entries_that_failed() {
    let ctx = context!("ack_batches_by_ten_and_names_the_entries_that_failed");
    let url = ctx.create_queue("ack", 30).await;
    let queue = ctx.queue(&url, None);
    for i in 0..12 {
        send(&ctx, &url, &format!("message {i}")).await;
    }
    let mut got = receive_n(&queue, 12).await;
    assert_eq!(got.len(), 12);
    // The same message twice in one ack is deleted once, not a batch error.
    got.push(got[0].clone());
    queue.ack(&got).await.expect("ack of 12 (+1 duplicate)");
    assert!(queue.depth().await.unwrap().is_empty());

    // One bad receipt among good ones: the good ones are deleted, the bad one named.
    send(&ctx, &url, "good").await;
    let good = receive_one(&queue).await;
    let bogus = Message {
        id: "bogus-id".into(),
        receipt: "not-a-receipt-handle".into(),
        ..good.clone()
    };
    let err = queue.ack(&[bogus, good]).await.unwrap_err();
    assert!(
        err.message().contains("bogus-id (ReceiptHandleIsInvalid)"),
        "{err}"
    );
    assert!(err.message().contains("1 of 2"), "{err}");
    assert!(err.is_permanent(), "a sender fault: {err}");
    assert!(queue.depth().await.unwrap().is_empty());
}

#[tokio::test]
async fn retry_after_zero_redelivers_with_a_higher_receive_count() {
    let ctx = context!("retry_after_zero_redelivers_with_a_higher_receive_count");
    let url = ctx.create_queue("retry", 30).await;
    let queue = ctx.queue(&url, None);
    let id = send(&ctx, &url, "again").await;

    let first = receive_one(&queue).await;
    assert_eq!((first.id.as_str(), first.receive_count), (id.as_str(), 1));
    assert_nothing_visible(&queue).await;

    queue
        .retry_after(&first, Duration::ZERO)
        .await
        .expect("retry_after");
    let second = receive_one(&queue).await;
    assert_eq!(second.id, id);
    assert_eq!(second.receive_count, 2);
    assert_ne!(
        second.receipt, first.receipt,
        "each delivery has its own receipt"
    );

    // A long delay keeps it in flight.
    queue
        .retry_after(&second, Duration::from_secs(3_600))
        .await
        .expect("retry_after 1 h");
    assert_nothing_visible(&queue).await;
    assert_eq!(queue.depth().await.unwrap().in_flight, 1);
}

#[tokio::test]
async fn extend_lease_keeps_a_message_hidden_past_the_visibility_timeout() {
    let ctx = context!("extend_lease_keeps_a_message_hidden_past_the_visibility_timeout");
    let url = ctx.create_queue("lease", 2).await;
    let queue = ctx.queue(&url, None);
    assert_eq!(
        queue.visibility_timeout().await.unwrap(),
        Duration::from_secs(2)
    );
    let kept = send(&ctx, &url, "kept").await;
    let lapsed = send(&ctx, &url, "lapsed").await;
    let got = receive_n(&queue, 2).await;
    assert_eq!(got.len(), 2);
    let kept_msg = got.iter().find(|m| m.id == kept).unwrap();
    queue
        .extend_lease(kept_msg, Duration::from_secs(30))
        .await
        .expect("extend_lease");

    // Only the message whose lease was not extended comes back (after its 2 s).
    let back = receive_n(&queue, 1).await;
    let ids: Vec<&str> = back.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, [lapsed.as_str()]);
    assert_eq!(back[0].receive_count, 2);
    assert_nothing_visible(&queue).await;
    assert_eq!(queue.depth().await.unwrap().in_flight, 2);
}

#[tokio::test]
async fn dead_letter_moves_the_body_unchanged_with_the_reason() {
    let ctx = context!("dead_letter_moves_the_body_unchanged_with_the_reason");
    let (url, dlq_url) = ctx.create_queue_with_dlq("dead", 30, 5).await;
    let queue = ctx.queue(&url, Some(&dlq_url));
    assert!(queue.has_dead_letter_queue());
    let body =
        "{\"Records\":[{\"s3\":{\"object\":{\"key\":\"caf%C3%A9.jpg\"}}}], \"note\":\"café ✓\"}";
    send(&ctx, &url, body).await;
    let m = receive_one(&queue).await;

    let reason = DeadLetter {
        error_kind: "corrupt".into(),
        error_reason: format!("photos/a.jpg: truncated JPEG {}", "x".repeat(2000)),
        first_failed_at: "2024-05-01T12:00:00Z".into(),
    };
    queue.dead_letter(&m, &reason).await.expect("dead_letter");
    assert!(
        queue.depth().await.unwrap().is_empty(),
        "the original is deleted"
    );

    let out = ctx
        .sqs
        .receive_message()
        .queue_url(&dlq_url)
        .message_attribute_names("All")
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    let copies = out.messages();
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0].body(), Some(body), "the body is unchanged");
    let attrs: HashMap<&str, (&str, &str)> = copies[0]
        .message_attributes()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str(), (v.data_type(), v.string_value().unwrap())))
        .collect();
    assert_eq!(attrs.len(), 6, "{attrs:?}");
    assert_eq!(attrs["source_message_id"], ("String", m.id.as_str()));
    assert_eq!(attrs["error_kind"], ("String", "corrupt"));
    assert_eq!(attrs["source_queue"], ("String", url.as_str()));
    assert_eq!(attrs["receive_count"], ("String", "1"));
    assert_eq!(attrs["first_failed_at"], ("String", "2024-05-01T12:00:00Z"));
    let (kind, text) = attrs["error_reason"];
    assert_eq!(kind, "String");
    assert!(
        text.starts_with("photos/a.jpg: truncated JPEG xxx"),
        "{text}"
    );
    assert!(
        text.len() <= MAX_REASON_BYTES && text.len() > 1000,
        "{}",
        text.len()
    );

    // Without a DLQ: a permanent config error, and the message stays where it was.
    let no_dlq = ctx.queue(&url, None);
    assert!(!no_dlq.has_dead_letter_queue());
    send(&ctx, &url, "stays").await;
    let m = receive_one(&no_dlq).await;
    let err = no_dlq.dead_letter(&m, &reason).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert_eq!(no_dlq.depth().await.unwrap().in_flight, 1);
}

#[tokio::test]
async fn depth_counts_visible_in_flight_and_delayed() {
    let ctx = context!("depth_counts_visible_in_flight_and_delayed");
    let url = ctx.create_queue("depth", 30).await;
    let queue = ctx.queue(&url, None);
    assert!(queue.depth().await.unwrap().is_empty());
    send(&ctx, &url, "one").await;
    send(&ctx, &url, "two").await;
    ctx.sqs
        .send_message()
        .queue_url(&url)
        .message_body("later")
        .delay_seconds(60)
        .send()
        .await
        .unwrap();
    let got = queue.receive(1, SECOND, None).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        queue.depth().await.unwrap(),
        QueueDepth {
            visible: 1,
            in_flight: 1,
            delayed: 1
        }
    );
    assert_eq!(
        queue.visibility_timeout().await.unwrap(),
        Duration::from_secs(30)
    );
}

#[tokio::test]
async fn receive_visibility_override_and_missing_queue() {
    let ctx = context!("receive_visibility_override_and_missing_queue");
    let url = ctx.create_queue("vis", 30).await;
    let queue = ctx.queue(&url, None);
    send(&ctx, &url, "short").await;
    let got = queue.receive(1, SECOND, Some(SECOND)).await.unwrap();
    assert_eq!(got.len(), 1);
    // Back after the 1 s override, long before the queue's own 30 s.
    let again = receive_one(&queue).await;
    assert_eq!(
        (again.id.as_str(), again.receive_count),
        (got[0].id.as_str(), 2)
    );

    let missing = ctx.queue(
        &format!("{}/123456789012/rq-does-not-exist", ctx.endpoint),
        None,
    );
    let err = missing.receive(1, Duration::ZERO, None).await.unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert!(err.message().starts_with("sqs ReceiveMessage: "), "{err}");
    assert!(
        err.message().contains("QueueDoesNotExist") || err.message().contains("NonExistentQueue"),
        "{err}"
    );
}

#[tokio::test]
async fn get_honours_if_match() {
    let ctx = context!("get_honours_if_match");
    let bucket = ctx.create_bucket("get").await;
    let etag = ctx
        .upload(&bucket, "in/a.jpg", JPEG, "image/jpeg", &[])
        .await;
    let store = ctx.store();

    let quoted = ETag::new(&etag).quoted();
    for if_match in [None, Some(ETag::new(&etag)), Some(ETag::new(&quoted))] {
        match store
            .get(&bucket, "in/a.jpg", if_match.as_ref())
            .await
            .unwrap()
        {
            GetOutcome::Found { bytes, info } => {
                assert_eq!(bytes, JPEG, "{if_match:?}");
                assert_eq!(info.etag, etag);
                assert_eq!(info.size, JPEG.len() as u64);
                assert_eq!(info.content_type.as_deref(), Some("image/jpeg"));
            }
            other => panic!("{if_match:?}: {other:?}"),
        }
    }
    assert_eq!(
        store
            .get(
                &bucket,
                "in/a.jpg",
                Some(&ETag::new("0123456789abcdef0123456789abcdef"))
            )
            .await
            .unwrap(),
        GetOutcome::Changed
    );
    // Overwritten since the event: the old ETag no longer matches.
    ctx.upload(&bucket, "in/a.jpg", b"new bytes", "image/jpeg", &[])
        .await;
    assert_eq!(
        store
            .get(&bucket, "in/a.jpg", Some(&ETag::new(&etag)))
            .await
            .unwrap(),
        GetOutcome::Changed
    );
    assert_eq!(
        store.get(&bucket, "in/missing.jpg", None).await.unwrap(),
        GetOutcome::NotFound
    );
    assert_eq!(
        store
            .get(&bucket, "in/missing.jpg", Some(&ETag::new(&etag)))
            .await
            .unwrap(),
        GetOutcome::NotFound
    );
    // A deleted source bucket took the object with it: gone, not a fault to retry.
    assert_eq!(
        store
            .get(&format!("{bucket}-gone"), "in/a.jpg", None)
            .await
            .unwrap(),
        GetOutcome::NotFound
    );
}

#[tokio::test]
async fn head_reads_size_type_and_metadata() {
    let ctx = context!("head_reads_size_type_and_metadata");
    let bucket = ctx.create_bucket("head").await;
    let etag = ctx
        .upload(
            &bucket,
            "photos/cat 1.jpg",
            JPEG,
            "image/jpeg",
            &[("source-etag", "abc"), ("variant", "w80")],
        )
        .await;
    let store = ctx.store();
    let info = store
        .head(&bucket, "photos/cat 1.jpg")
        .await
        .unwrap()
        .expect("the object");
    assert_eq!(info.etag, etag);
    assert_eq!(info.size, JPEG.len() as u64);
    assert_eq!(info.content_type.as_deref(), Some("image/jpeg"));
    assert_eq!(
        info.metadata,
        HashMap::from([
            ("source-etag".to_string(), "abc".to_string()),
            ("variant".to_string(), "w80".to_string())
        ])
    );
    assert_eq!(store.head(&bucket, "photos/none.jpg").await.unwrap(), None);
    // HEAD has no error body: a missing bucket is indistinguishable from a missing key.
    assert_eq!(
        store
            .head(&format!("{bucket}-gone"), "x.jpg")
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn put_writes_type_cache_control_and_metadata() {
    let ctx = context!("put_writes_type_cache_control_and_metadata");
    let bucket = ctx.create_bucket("put").await;
    let store = ctx.store();
    let object = PutObject {
        bucket: bucket.clone(),
        key: "thumbs/80/a.webp".into(),
        bytes: b"RIFF....WEBPVP8 fake".to_vec(),
        content_type: "image/webp".into(),
        cache_control: Some("public, max-age=31536000, immutable".into()),
        metadata: HashMap::from([
            ("source-etag".to_string(), "0123abcd".to_string()),
            ("resizeq-variant".to_string(), "80".to_string()),
        ]),
        condition: Condition::Any,
    };
    store.put(object.clone()).await.expect("put");

    let head = ctx
        .s3
        .head_object()
        .bucket(&bucket)
        .key("thumbs/80/a.webp")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("image/webp"));
    assert_eq!(
        head.cache_control(),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(head.content_length(), Some(object.bytes.len() as i64));
    assert_eq!(head.metadata(), Some(&object.metadata));
    match store.get(&bucket, "thumbs/80/a.webp", None).await.unwrap() {
        GetOutcome::Found { bytes, info } => {
            assert_eq!(bytes, object.bytes);
            assert_eq!(info.metadata, object.metadata);
        }
        other => panic!("{other:?}"),
    }

    // Without cache control or metadata.
    let plain = PutObject {
        key: "thumbs/80/b.webp".into(),
        cache_control: None,
        metadata: HashMap::new(),
        ..object.clone()
    };
    store.put(plain).await.expect("put without extras");
    let info = store
        .head(&bucket, "thumbs/80/b.webp")
        .await
        .unwrap()
        .unwrap();
    assert!(info.metadata.is_empty(), "{:?}", info.metadata);

    // A missing destination bucket is transient: ops create it, the messages are retried.
    let err = store
        .put(PutObject {
            bucket: format!("{bucket}-resized"),
            ..object
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Service, "{err}");
    assert!(err.message().contains("NoSuchBucket"), "{err}");
    assert!(err.message().contains("s3 PutObject"), "{err}");
}

#[tokio::test]
async fn conditional_writes_and_deletes_happen_only_on_the_state_seen() {
    let ctx = context!("conditional_writes_and_deletes_happen_only_on_the_state_seen");
    let bucket = ctx.create_bucket("cond").await;
    let store = ctx.store();
    let put = |bytes: &[u8], condition: Condition| PutObject {
        bucket: bucket.clone(),
        key: "80/k.jpg".into(),
        bytes: bytes.to_vec(),
        content_type: "image/jpeg".into(),
        cache_control: None,
        metadata: HashMap::new(),
        condition,
    };
    let etag_of = |info: Option<resizeq::ports::ObjectInfo>| info.expect("the object").etag;

    // If-None-Match: * writes a new key once.
    assert_eq!(
        store.put(put(b"one", Condition::Absent)).await.unwrap(),
        Written::Done
    );
    let one = etag_of(store.head(&bucket, "80/k.jpg").await.unwrap());
    assert_eq!(
        store.put(put(b"two", Condition::Absent)).await.unwrap(),
        Written::ConditionFailed
    );
    // If-Match replaces only the version seen.
    assert_eq!(
        store
            .put(put(b"two", Condition::Matches(one.clone())))
            .await
            .unwrap(),
        Written::Done
    );
    let two = etag_of(store.head(&bucket, "80/k.jpg").await.unwrap());
    assert_ne!(one, two);
    assert_eq!(
        store
            .put(put(b"three", Condition::Matches(one.clone())))
            .await
            .unwrap(),
        Written::ConditionFailed
    );
    assert_eq!(
        store
            .delete(&bucket, "80/k.jpg", &Condition::Matches(one))
            .await
            .unwrap(),
        Written::ConditionFailed
    );
    assert!(
        store.head(&bucket, "80/k.jpg").await.unwrap().is_some(),
        "kept"
    );
    assert_eq!(
        store
            .delete(&bucket, "80/k.jpg", &Condition::Matches(two.clone()))
            .await
            .unwrap(),
        Written::Done
    );
    assert!(
        store.head(&bucket, "80/k.jpg").await.unwrap().is_none(),
        "deleted"
    );
    // Gone already: a conditional delete did not happen (someone else's did); a plain one is
    // done; an If-Match write fails on its condition.
    assert_eq!(
        store
            .delete(&bucket, "80/k.jpg", &Condition::Matches(two.clone()))
            .await
            .unwrap(),
        Written::ConditionFailed
    );
    assert_eq!(
        store
            .delete(&bucket, "80/k.jpg", &Condition::Any)
            .await
            .unwrap(),
        Written::Done
    );
    assert_eq!(
        store
            .put(put(b"four", Condition::Matches(two)))
            .await
            .unwrap(),
        Written::ConditionFailed
    );
    assert!(store.head(&bucket, "80/k.jpg").await.unwrap().is_none());
}

#[tokio::test]
async fn bucket_notification_delivers_object_created_events() {
    let ctx = context!("bucket_notification_delivers_object_created_events");
    let url = ctx.create_queue("events", 30).await;
    let bucket = ctx.create_bucket("events").await;
    ctx.notify_queue(&bucket, &url).await;
    let queue = ctx.queue(&url, None);

    // Configuring a notification sends s3:TestEvent (AWS does too).
    let test_event = receive_one(&queue).await;
    assert_eq!(
        event::parse(&test_event.body).unwrap(),
        Parsed::Test,
        "{}",
        test_event.body
    );
    queue.ack(&[test_event]).await.unwrap();

    let key = "uploads/my cat+1.jpg";
    let etag = ctx.upload(&bucket, key, JPEG, "image/jpeg", &[]).await;
    let m = receive_one(&queue).await;
    let body: serde_json::Value = serde_json::from_str(&m.body).unwrap();
    let record = &body["Records"][0];
    assert_eq!(record["eventSource"], "aws:s3", "{}", m.body);
    assert!(
        record["eventName"]
            .as_str()
            .unwrap()
            .starts_with("ObjectCreated:"),
        "{}",
        m.body
    );
    match event::parse(&m.body).unwrap().created().as_slice() {
        created if !created.is_empty() => {
            assert_eq!(created.len(), 1, "{}", m.body);
            assert_eq!(created[0].bucket, bucket);
            assert_eq!(created[0].key, key, "form-encoded key decodes back");
            assert_eq!(created[0].etag.as_deref(), Some(etag.as_str()));
            assert_eq!(created[0].size, Some(JPEG.len() as u64));
        }
        other => panic!("{other:?}: {}", m.body),
    }
    queue.ack(&[m]).await.unwrap();

    // A delete arrives as a removal of the same key.
    ctx.s3
        .delete_object()
        .bucket(&bucket)
        .key(key)
        .send()
        .await
        .expect("DeleteObject");
    let m = receive_one(&queue).await;
    match event::parse(&m.body).unwrap() {
        Parsed::Records(records) => match records.as_slice() {
            [Ok(ObjectEvent::Removed(removed))] => {
                assert_eq!(removed.bucket, bucket);
                assert_eq!(removed.key, key, "form-encoded key decodes back");
            }
            other => panic!("one removal expected, got {other:?}: {}", m.body),
        },
        other => panic!("{other:?}: {}", m.body),
    }
    queue.ack(&[m]).await.unwrap();
    assert!(queue.depth().await.unwrap().is_empty());
}
