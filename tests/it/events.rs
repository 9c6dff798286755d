//! The events for the application through the real adapters, against moto: each event type
//! reaches an SQS queue, an SNS topic's subscribed queue and an EventBridge rule's queue as the
//! same CloudEvents document; failures are classified; `events.target` in `config show`.

use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use resizeq::adapters::aws;
use resizeq::adapters::events_aws::publisher;
use resizeq::config::Config;
use resizeq::error::ErrorKind;
use resizeq::event::ETag;
use resizeq::events::{AppEvent, Deleted, DeletedVariant, EventsTarget, Failed, Ready, SourceRef};
use resizeq::pipeline::Pipeline;
use serde_json::Value;

use crate::common::fault_proxy::{Fault, FaultProxy, Rule};
use crate::common::{context, fixture, unique, TestAws};

/// One event of each type; the ready one from a real pipeline run of a fixture (48 × 32
/// upright, landscape).
fn events(bucket: &str) -> Vec<AppEvent> {
    let pipeline = Pipeline::new(Config::default().pipeline_settings()).unwrap();
    let output = pipeline
        .process(&fixture("orient-6.jpg"), "photos/cat.jpg")
        .unwrap();
    let etag = ETag::new("\"0f3c1b8e2d4a5f6b7c8d9e0a1b2c3d4e\"");
    let source = |key: &str| SourceRef::new(bucket, key, Some(etag.clone()));
    vec![
        AppEvent::Ready(Ready::from_output(
            source("photos/cat.jpg"),
            &output,
            &format!("{bucket}-resized"),
        )),
        AppEvent::Failed(Failed {
            source: source("photos/notes.jpg"),
            error_kind: "unsupported".into(),
            error_reason: "s3://b/photos/notes.jpg: not an image (unsupported)".into(),
        }),
        AppEvent::Deleted(Deleted {
            source: source("photos/old.jpg"),
            variants: vec![DeletedVariant {
                bucket: format!("{bucket}-resized"),
                key: "80/photos/old.jpg.jpg".into(),
            }],
        }),
    ]
}

/// The document as published, but for `time` (stamped at publishing), which must be RFC 3339.
fn without_time(mut doc: Value) -> Value {
    let time = doc["time"].as_str().expect("a time").to_string();
    humantime::parse_rfc3339(&time).unwrap_or_else(|e| panic!("time {time}: {e}"));
    doc.as_object_mut().unwrap().remove("time");
    doc
}

/// Receives `n` message bodies from `queue`, deleting them.
pub(crate) async fn receive(ctx: &TestAws, queue: &str, n: usize) -> Vec<Value> {
    let mut bodies = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while bodies.len() < n {
        assert!(std::time::Instant::now() < deadline, "only {bodies:?}");
        let out = ctx
            .sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for m in out.messages() {
            bodies.push(serde_json::from_str(m.body().unwrap()).unwrap());
            ctx.sqs
                .delete_message()
                .queue_url(queue)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    bodies
}

/// The received documents, in the order of `events` (SQS does not keep order).
fn in_order(mut docs: Vec<Value>, events: &[AppEvent]) -> Vec<Value> {
    let mut ordered = Vec::new();
    for event in events {
        let i = docs
            .iter()
            .position(|d| d["type"] == event.event_type())
            .unwrap_or_else(|| panic!("no {} in {docs:?}", event.event_type()));
        ordered.push(without_time(docs.remove(i)));
    }
    ordered
}

async fn publish_all(target: &EventsTarget, ctx: &TestAws, events: &[AppEvent]) {
    let sdk = aws::sdk_config(&ctx.aws).await;
    let publish = publisher(target, &sdk);
    for event in events {
        publish.publish(event).await.unwrap();
    }
}

fn expected(events: &[AppEvent]) -> Vec<Value> {
    events
        .iter()
        .map(|e| without_time(e.to_cloudevent()))
        .collect()
}

#[tokio::test]
async fn each_event_reaches_an_sqs_queue_as_its_cloudevent() {
    let Some(ctx) = context("each_event_reaches_an_sqs_queue_as_its_cloudevent").await else {
        return;
    };
    let queue = ctx.create_queue("events-sqs", 30).await;
    let events = events("uploads");
    let target: EventsTarget = queue.parse().unwrap();
    publish_all(&target, &ctx, &events).await;

    let docs = in_order(receive(&ctx, &queue, 3).await, &events);
    assert_eq!(docs, expected(&events));
    let ready = &docs[0];
    eprintln!("ready: {ready}");
    assert_eq!(ready["source"], "s3://uploads");
    assert_eq!(ready["subject"], "photos/cat.jpg");
    assert_eq!(
        (&ready["data"]["width"], &ready["data"]["height"]),
        (&48.into(), &32.into())
    );
    // The placeholder decodes to the upright image's shape: landscape.
    use base64::Engine;
    let hash = base64::engine::general_purpose::STANDARD
        .decode(ready["data"]["thumbhash"].as_str().unwrap())
        .unwrap();
    let ratio = thumbhash::thumb_hash_to_approximate_aspect_ratio(&hash).unwrap();
    assert!((ratio - 1.5).abs() < 0.2, "aspect {ratio}");
    let variants = ready["data"]["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 2);
    assert!(variants.iter().all(|v| v["bytes"].as_u64() > Some(100)));
}

/// A new SNS topic's ARN.
pub(crate) async fn sns_topic(ctx: &TestAws) -> String {
    let sdk = aws::sdk_config(&ctx.aws).await;
    aws::sns_client(&sdk)
        .create_topic()
        .name(unique("events"))
        .send()
        .await
        .unwrap()
        .topic_arn()
        .unwrap()
        .to_string()
}

/// A new queue subscribed to `topic` (with an SNS envelope, or raw delivery); its URL.
pub(crate) async fn subscribed_queue(ctx: &TestAws, topic: &str, raw_delivery: bool) -> String {
    let sdk = aws::sdk_config(&ctx.aws).await;
    let queue = ctx.create_queue("events-sns", 30).await;
    let mut subscribe = aws::sns_client(&sdk)
        .subscribe()
        .topic_arn(topic)
        .protocol("sqs")
        .endpoint(ctx.queue_arn(&queue).await);
    if raw_delivery {
        subscribe = subscribe.attributes("RawMessageDelivery", "true");
    }
    subscribe.send().await.unwrap();
    queue
}

/// A new EventBridge bus with a rule that sends everything from `source: resizeq` to a new
/// queue: (bus name, bus ARN, queue URL).
pub(crate) async fn eventbridge_bus_with_queue(ctx: &TestAws) -> (String, String, String) {
    let sdk = aws::sdk_config(&ctx.aws).await;
    let eventbridge = aws::eventbridge_client(&sdk);
    let bus_name = unique("bus");
    let bus_arn = eventbridge
        .create_event_bus()
        .name(&bus_name)
        .send()
        .await
        .unwrap()
        .event_bus_arn()
        .unwrap()
        .to_string();
    let queue = ctx.create_queue("events-eb", 30).await;
    eventbridge
        .put_rule()
        .name("resizeq-events")
        .event_bus_name(&bus_name)
        .event_pattern(r#"{"source": ["resizeq"]}"#)
        .send()
        .await
        .unwrap();
    eventbridge
        .put_targets()
        .rule("resizeq-events")
        .event_bus_name(&bus_name)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("app")
                .arn(ctx.queue_arn(&queue).await)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    (bus_name, bus_arn, queue)
}

#[tokio::test]
async fn an_sns_topic_delivers_the_document_to_its_subscribed_queues() {
    let Some(ctx) = context("an_sns_topic_delivers_the_document_to_its_subscribed_queues").await
    else {
        return;
    };
    let topic = sns_topic(&ctx).await;
    // An SNS envelope (the default) and raw message delivery.
    let enveloped = subscribed_queue(&ctx, &topic, false).await;
    let raw = subscribed_queue(&ctx, &topic, true).await;
    let events = events("uploads");
    let target: EventsTarget = topic.parse().unwrap();
    assert_eq!(target.kind(), "sns");
    publish_all(&target, &ctx, &events).await;

    let envelopes = receive(&ctx, &enveloped, 3).await;
    for envelope in &envelopes {
        assert_eq!(envelope["Type"], "Notification", "{envelope}");
        assert_eq!(envelope["TopicArn"], topic.as_str());
    }
    let inner: Vec<Value> = envelopes
        .iter()
        .map(|e| serde_json::from_str(e["Message"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(in_order(inner, &events), expected(&events));
    assert_eq!(
        in_order(receive(&ctx, &raw, 3).await, &events),
        expected(&events)
    );
}

#[tokio::test]
async fn an_eventbridge_rule_forwards_the_document_as_detail() {
    let Some(ctx) = context("an_eventbridge_rule_forwards_the_document_as_detail").await else {
        return;
    };
    let (bus_name, bus_arn, queue) = eventbridge_bus_with_queue(&ctx).await;
    let events = events("uploads");
    // The bus by ARN for the first event, by name for the others.
    publish_all(&bus_arn.parse().unwrap(), &ctx, &events[..1]).await;
    publish_all(
        &format!("eventbridge:{bus_name}").parse().unwrap(),
        &ctx,
        &events[1..],
    )
    .await;

    let received = receive(&ctx, &queue, 3).await;
    for envelope in &received {
        assert_eq!(envelope["source"], "resizeq", "{envelope}");
        assert_eq!(envelope["detail-type"], envelope["detail"]["type"]);
    }
    let details: Vec<Value> = received.iter().map(|e| e["detail"].clone()).collect();
    assert_eq!(in_order(details, &events), expected(&events));
}

#[tokio::test]
async fn missing_targets_are_permanent_and_server_errors_transient() {
    let Some(ctx) = context("missing_targets_are_permanent_and_server_errors_transient").await
    else {
        return;
    };
    let event = &events("uploads")[1];
    let sdk = aws::sdk_config(&ctx.aws).await;
    let existing = ctx.create_queue("events-fault", 30).await;
    let missing_queue = existing.replace("events-fault", "events-missing");
    for target in [
        missing_queue.clone(),
        "arn:aws:sns:us-east-1:123456789012:no-such-topic".into(),
        "eventbridge:no-such-bus".into(),
    ] {
        let err = publisher(&target.parse().unwrap(), &sdk)
            .publish(event)
            .await
            .unwrap_err();
        assert!(err.is_permanent(), "{target}: {err}");
        assert_eq!(err.kind(), ErrorKind::Config, "{target}: {err}");
    }

    // Every call through the proxy answers 500: transient, for each adapter.
    let proxy = FaultProxy::start(&ctx.endpoint).await;
    proxy.add(Rule::new(
        Some("POST"),
        "/",
        Fault::Status(500, "<Error><Code>InternalError</Code></Error>"),
    ));
    let mut faulty = ctx.aws.clone();
    faulty.endpoint_url = Some(proxy.endpoint.clone());
    let sdk = aws::sdk_config(&faulty).await;
    let queue_via_proxy = existing.replace(&ctx.endpoint, &proxy.endpoint);
    for target in [
        queue_via_proxy,
        "arn:aws:sns:us-east-1:123456789012:any-topic".into(),
        "eventbridge:default".into(),
    ] {
        let err = publisher(&target.parse().unwrap(), &sdk)
            .publish(event)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Service, "{target}: {err}");
        assert!(!err.is_permanent());
    }
    // Nothing reached the queue.
    let attrs = ctx
        .sqs
        .get_queue_attributes()
        .queue_url(&existing)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap();
    let visible = &attrs.attributes().unwrap()[&QueueAttributeName::ApproximateNumberOfMessages];
    assert_eq!(visible, "0");
}

#[test]
fn config_show_names_the_target_and_a_bad_one_is_refused() {
    let resizeq = || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_resizeq"));
        cmd.current_dir(std::env::temp_dir());
        for (key, _) in std::env::vars() {
            if key.starts_with("RESIZEQ_") {
                cmd.env_remove(key);
            }
        }
        cmd
    };
    let topic = "arn:aws:sns:eu-west-1:123456789012:app-events";
    let shown = resizeq()
        .env("RESIZEQ_EVENTS__TARGET", topic)
        .args(["config", "show"])
        .output()
        .unwrap();
    assert!(shown.status.success());
    let stdout = String::from_utf8_lossy(&shown.stdout);
    assert!(
        stdout.contains(&format!("[events]\ntarget = \"{topic}\"")),
        "{stdout}"
    );

    let refused = resizeq()
        .env("RESIZEQ_EVENTS__TARGET", "app-events")
        .args(["config", "check"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("events.target: `app-events` is none of the target forms"),
        "{stderr}"
    );
    assert!(stderr.contains("eventbridge:NAME"), "{stderr}");
}
