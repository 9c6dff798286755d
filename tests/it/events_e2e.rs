//! The events for the application, end to end: the real `resizeq run` against moto announces
//! ready / failed / deleted on an SQS queue, an SNS topic and an EventBridge bus, with what the
//! destination bucket really holds; a duplicate is not announced twice; an event that could
//! not be published is announced when the message is retried.

use base64::Engine;
use serde_json::Value;

use crate::common::{fixture, unique, wait_until};
use crate::events::{eventbridge_bus_with_queue, receive, sns_topic, subscribed_queue};
use crate::worker_e2e::{send, world, World, RUN_TIMEOUT};

const TARGET: &str = "RESIZEQ_EVENTS__TARGET";

/// Checks a `ready` document against the destination bucket: every variant it names is
/// there with its bytes, type and size, and they are all the variants there are.
async fn assert_ready_matches_destination(w: &World, doc: &Value, key: &str, etag: &str) {
    assert_eq!(doc["type"], "resizeq.variants.ready", "{doc}");
    assert_eq!(doc["source"], format!("s3://{}", w.source), "{doc}");
    assert_eq!(doc["subject"], key, "{doc}");
    let data = &doc["data"];
    assert_eq!(data["etag"], etag, "{doc}");
    assert_eq!(
        (&data["width"], &data["height"]),
        (&120.into(), &80.into()),
        "{doc}"
    );
    assert_eq!(data["format"], "jpeg", "{doc}");
    let mut named = Vec::new();
    for v in data["variants"].as_array().expect("variants") {
        let vkey = v["key"].as_str().unwrap();
        assert_eq!(v["bucket"], w.dest.as_str(), "{v}");
        let object = w.variant(vkey).await;
        assert_eq!(
            v["bytes"].as_u64(),
            Some(object.bytes.len() as u64),
            "{vkey}"
        );
        assert_eq!(v["content_type"], object.content_type.as_str(), "{vkey}");
        let img = image::load_from_memory(&object.bytes).unwrap();
        assert_eq!(
            (v["width"].as_u64(), v["height"].as_u64()),
            (Some(img.width() as u64), Some(img.height() as u64)),
            "{vkey}"
        );
        // A HEAD answers the same.
        assert_eq!(object.metadata["resizeq-width"], img.width().to_string());
        assert_eq!(object.metadata["resizeq-height"], img.height().to_string());
        assert_eq!(
            object.metadata["resizeq-thumbhash"],
            data["thumbhash"].as_str().unwrap()
        );
        named.push(vkey.to_string());
    }
    named.sort();
    assert_eq!(named, w.dest_keys().await, "the event names every variant");
    let hash = base64::engine::general_purpose::STANDARD
        .decode(data["thumbhash"].as_str().unwrap())
        .unwrap();
    let ratio = thumbhash::thumb_hash_to_approximate_aspect_ratio(&hash).unwrap();
    assert!(
        (ratio - 1.5).abs() < 0.2,
        "thumbhash aspect {ratio}, image 3:2"
    );
    assert!(
        data["average_color"]
            .as_str()
            .is_some_and(|c| c.len() == 7 && c.starts_with('#')),
        "{doc}"
    );
}

#[tokio::test]
async fn an_upload_is_announced_ready_once_with_what_the_destination_holds() {
    let ctx = context!("an_upload_is_announced_ready_once_with_what_the_destination_holds");
    let w = world(ctx, "ready", true).await;
    let app = w.aws.create_queue("app", 30).await;
    let key = "users/7/cat.jpg";
    let etag = w.upload(key, &fixture("tiny.jpg"), "image/jpeg").await;
    let upload_event = w.take_event().await;
    send(&w.aws, &w.queue, &upload_event).await;
    w.run_until_empty(&[(TARGET, app.as_str())])
        .await
        .assert_success();
    let docs = receive(&w.aws, &app, 1).await;
    assert_ready_matches_destination(&w, &docs[0], key, &etag).await;

    // The same S3 event again: skipped, and not announced again.
    send(&w.aws, &w.queue, &upload_event).await;
    let again = w.run_until_empty(&[(TARGET, app.as_str())]).await;
    again.assert_success();
    assert_eq!(again.stat("skipped"), 1, "{}", again.stderr);
    assert_eq!(w.aws.depth_of(&app).await, (0, 0, 0), "a second event");
}

#[tokio::test]
async fn sns_topics_and_eventbridge_buses_are_told_too() {
    let ctx = context!("sns_topics_and_eventbridge_buses_are_told_too");
    let w = world(ctx, "fanout", true).await;
    let topic = sns_topic(&w.aws).await;
    let via_topic = subscribed_queue(&w.aws, &topic, false).await;
    let (bus, _, via_bus) = eventbridge_bus_with_queue(&w.aws).await;

    let etag = w
        .upload("a/sns.jpg", &fixture("tiny.jpg"), "image/jpeg")
        .await;
    w.run_until_empty(&[(TARGET, topic.as_str())])
        .await
        .assert_success();
    let envelope = receive(&w.aws, &via_topic, 1).await.remove(0);
    let doc: Value = serde_json::from_str(envelope["Message"].as_str().unwrap()).unwrap();
    assert_ready_matches_destination(&w, &doc, "a/sns.jpg", &etag).await;

    // Another source, so that the destination holds only its variants.
    let w = World {
        source: w.aws.create_bucket("fanout-eb").await,
        ..w
    };
    let w = World {
        dest: format!("{}-resized", w.source),
        ..w
    };
    crate::worker_e2e::create_bucket_named(&w.aws, &w.dest).await;
    w.aws.notify_queue(&w.source, &w.queue).await;
    let _test_event = w.take_message().await;
    let etag = w
        .upload("b/bus.jpg", &fixture("tiny.jpg"), "image/jpeg")
        .await;
    let bus_target = format!("eventbridge:{bus}");
    w.run_until_empty(&[(TARGET, bus_target.as_str())])
        .await
        .assert_success();
    let envelope = receive(&w.aws, &via_bus, 1).await.remove(0);
    assert_eq!(
        envelope["detail-type"], "resizeq.variants.ready",
        "{envelope}"
    );
    assert_ready_matches_destination(&w, &envelope["detail"], "b/bus.jpg", &etag).await;
}

#[tokio::test]
async fn a_poison_upload_and_a_delete_are_announced() {
    let ctx = context!("a_poison_upload_and_a_delete_are_announced");
    let w = world(ctx, "told", true).await;
    let app = w.aws.create_queue("app", 30).await;
    let target = [(TARGET, app.as_str())];
    let notes = w
        .upload("u/notes.jpg", &fixture("text.txt"), "image/jpeg")
        .await;
    let run = w.run_until_empty(&target).await;
    run.assert_success();
    assert_eq!(run.stat("dead_lettered"), 1, "{}", run.stderr);
    let failed = receive(&w.aws, &app, 1).await.remove(0);
    assert_eq!(failed["type"], "resizeq.variants.failed", "{failed}");
    assert_eq!(failed["subject"], "u/notes.jpg");
    assert_eq!(failed["data"]["error_kind"], "unsupported", "{failed}");
    assert_eq!(failed["data"]["etag"], notes.as_str(), "{failed}");
    assert!(
        failed["data"]["error_reason"]
            .as_str()
            .unwrap()
            .starts_with("not a supported image"),
        "{failed}"
    );

    w.upload("u/cat.jpg", &fixture("tiny.jpg"), "image/jpeg")
        .await;
    w.run_until_empty(&target).await.assert_success();
    let ready = receive(&w.aws, &app, 1).await.remove(0);
    assert_eq!(ready["type"], "resizeq.variants.ready", "{ready}");
    w.delete_source("u/cat.jpg").await;
    w.run_until_empty(&target).await.assert_success();
    let deleted = receive(&w.aws, &app, 1).await.remove(0);
    assert_eq!(deleted["type"], "resizeq.variants.deleted", "{deleted}");
    assert_eq!(deleted["subject"], "u/cat.jpg");
    let mut keys: Vec<&str> = deleted["data"]["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["key"].as_str().unwrap())
        .collect();
    keys.sort();
    assert_eq!(keys, ["500/u/cat.jpg.jpg", "80/u/cat.jpg.jpg"]);
    assert!(w.dest_keys().await.is_empty());
}

/// The events queue does not exist when the variants are written: publishing fails, the
/// message is retried, and once the queue exists the retry (its variants current by then)
/// announces them.
#[tokio::test]
async fn an_event_that_could_not_be_published_is_announced_on_the_retry() {
    let ctx = context!("an_event_that_could_not_be_published_is_announced_on_the_retry");
    let w = world(ctx, "unpub", true).await;
    let name = unique("app-later");
    let (base, _) = w.queue.rsplit_once('/').unwrap();
    let app = format!("{base}/{name}");
    let key = "later/cat.jpg";
    let etag = w.upload(key, &fixture("tiny.jpg"), "image/jpeg").await;
    let worker = w.spawn(false, &[(TARGET, app.as_str())]);
    wait_until("the publish fails and the message is put back", || async {
        worker.has_logged("transient failure, retrying later")
    })
    .await;
    assert_eq!(w.dest_keys().await.len(), 2, "written before the publish");
    w.aws
        .sqs
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .expect("CreateQueue");
    let docs = receive(&w.aws, &app, 1).await;
    wait_until("the message is done", || async {
        w.depth_of(&w.queue).await == (0, 0, 0)
    })
    .await;
    worker.signal("TERM");
    let run = worker.finish(RUN_TIMEOUT).await;
    run.assert_success();
    assert_ready_matches_destination(&w, &docs[0], key, &etag).await;
    assert!(run.stat("retried") >= 1, "{}", run.stderr);
    assert_eq!(run.stat("processed"), 0, "{}", run.stderr);
    assert_eq!(run.stat("skipped"), 1, "{}", run.stderr);
    w.assert_queues_empty().await;
}
