//! Variants follow their source, end to end: the real `resizeq run` against moto, with the
//! events moto itself emits for uploads and deletes (see `worker_e2e` for the set-up).

use crate::common::fault_proxy::{Fault, FaultProxy, Rule};
use crate::common::{fixture, wait_until};
use crate::worker_e2e::{send, world, World, RUN_TIMEOUT};

/// The ETag of the source each variant of `key` was made from (`None`: no such variant).
async fn made_from(w: &World, key: &str) -> [Option<String>; 2] {
    let mut out = [None, None];
    for (slot, width) in out.iter_mut().zip([80, 500]) {
        let got = w
            .aws
            .s3
            .head_object()
            .bucket(&w.dest)
            .key(format!("{width}/{key}.jpg"))
            .send()
            .await;
        if let Ok(head) = got {
            *slot = head
                .metadata()
                .and_then(|m| m.get("resizeq-source-etag"))
                .cloned();
        }
    }
    out
}

/// The race: the older upload's GET has passed its If-Match but its answer is held while the
/// object is overwritten and the newer version's job writes its variants; then the older job
/// goes on. Its writes must not land.
#[tokio::test]
async fn an_older_version_finishing_last_does_not_overwrite_the_newer_variants() {
    let ctx = context!("an_older_version_finishing_last_does_not_overwrite_the_newer_variants");
    let w = world(ctx, "race", true).await;
    let key = "race/photo.jpg";
    let proxy = FaultProxy::start(&w.aws.endpoint).await;
    proxy.add(
        Rule::new(
            Some("GET"),
            format!("/{}/{key}", w.source),
            Fault::HoldAnswer,
        )
        .times(1),
    );
    let worker = w.spawn(
        false,
        &[("RESIZEQ_AWS__ENDPOINT_URL", proxy.endpoint.as_str())],
    );

    let older = w.upload(key, &fixture("tiny.jpg"), "image/jpeg").await;
    wait_until("the older job's GET is answered and held", || async {
        proxy.held() == 1
    })
    .await;
    let newer = w
        .upload(key, &fixture("small-60x40.jpg"), "image/jpeg")
        .await;
    let want = [Some(newer.clone()), Some(newer.clone())];
    wait_until("the newer version's variants are written", || async {
        made_from(&w, key).await == want
    })
    .await;
    proxy.release();
    wait_until("both events are done", || async {
        w.depth_of(&w.queue).await == (0, 0, 0)
    })
    .await;
    worker.signal("TERM");
    let run = worker.finish(RUN_TIMEOUT).await;
    run.assert_success();

    assert_ne!(older, newer);
    assert_eq!(run.stat("processed"), 1, "{}", run.stderr);
    assert_eq!(run.stat("superseded"), 1, "{}", run.stderr);
    w.assert_variants(key, &newer, (60, 40), (60, 40)).await;
    w.assert_queues_empty().await;
}

#[tokio::test]
async fn deleting_an_upload_deletes_its_variants() {
    let ctx = context!("deleting_an_upload_deletes_its_variants");
    let w = world(ctx, "del", true).await;
    let key = "gone/photo.jpg";
    let etag = w.upload(key, &fixture("tiny.jpg"), "image/jpeg").await;
    w.upload("kept/photo.jpg", &fixture("tiny.jpg"), "image/jpeg")
        .await;
    w.run_until_empty(&[]).await.assert_success();
    assert_eq!(made_from(&w, key).await, [Some(etag.clone()), Some(etag)]);

    w.delete_source(key).await;
    let run = w.run_until_empty(&[]).await;
    run.assert_success();
    assert_eq!(run.stat("deleted"), 1, "{}", run.stderr);
    assert_eq!(
        w.dest_keys().await,
        ["500/kept/photo.jpg.jpg", "80/kept/photo.jpg.jpg"]
    );
    w.assert_queues_empty().await;
}

#[tokio::test]
async fn a_delete_event_delivered_after_a_re_upload_keeps_the_re_uploads_variants() {
    let ctx = context!("a_delete_event_delivered_after_a_re_upload_keeps_the_re_uploads_variants");
    let w = world(ctx, "late", true).await;
    let key = "late/photo.jpg";
    w.upload(key, &fixture("tiny.jpg"), "image/jpeg").await;
    w.run_until_empty(&[]).await.assert_success();
    w.delete_source(key).await;
    let removal = w.take_message().await;
    assert!(removal.contains("ObjectRemoved"), "{removal}");
    let again = w
        .upload(key, &fixture("small-60x40.jpg"), "image/jpeg")
        .await;
    w.run_until_empty(&[]).await.assert_success();
    assert_eq!(
        made_from(&w, key).await,
        [Some(again.clone()), Some(again.clone())]
    );

    send(&w.aws, &w.queue, &removal).await;
    let run = w.run_until_empty(&[]).await;
    run.assert_success();
    assert_eq!(run.stat("superseded"), 1, "{}", run.stderr);
    assert_eq!(run.stat("deleted"), 0, "{}", run.stderr);
    w.assert_variants(key, &again, (60, 40), (60, 40)).await;
    w.assert_queues_empty().await;
}

#[tokio::test]
async fn an_overwrite_with_a_non_image_removes_the_old_variants() {
    let ctx = context!("an_overwrite_with_a_non_image_removes_the_old_variants");
    let w = world(ctx, "nonimg", true).await;
    let key = "doc/photo.jpg";
    w.upload(key, &fixture("tiny.jpg"), "image/jpeg").await;
    w.run_until_empty(&[]).await.assert_success();
    assert_eq!(w.dest_keys().await.len(), 2);

    w.upload(key, &fixture("text.txt"), "image/jpeg").await;
    let run = w.run_until_empty(&[]).await;
    run.assert_success();
    assert_eq!(run.stat("dead_lettered"), 1, "{}", run.stderr);
    assert!(w.dest_keys().await.is_empty(), "{:?}", w.dest_keys().await);
    let dead = w.take_dead_letters(1).await;
    assert_eq!(dead[0].1["error_kind"], "unsupported", "{dead:?}");
    assert!(dead[0].1["error_reason"].contains(key), "{dead:?}");
}

#[tokio::test]
async fn a_bad_record_in_the_middle_does_not_strand_the_others() {
    let ctx = context!("a_bad_record_in_the_middle_does_not_strand_the_others");
    let w = world(ctx, "multi", true).await;
    let mut records = Vec::new();
    let mut etags = Vec::new();
    for (key, file) in [
        ("m/first.jpg", "tiny.jpg"),
        ("m/not-an-image.jpg", "text.txt"),
        ("m/last.png", "tiny.png"),
    ] {
        etags.push(w.upload(key, &fixture(file), "image/jpeg").await);
        let body: serde_json::Value = serde_json::from_str(&w.take_event().await).unwrap();
        records.push(body["Records"][0].clone());
    }
    // One message with the three records, as S3 may batch them.
    let body = serde_json::json!({ "Records": records }).to_string();
    send(&w.aws, &w.queue, &body).await;
    let run = w.run_until_empty(&[]).await;
    run.assert_success();

    assert_eq!(run.stat("dead_lettered"), 1, "{}", run.stderr);
    w.assert_variants("m/first.jpg", &etags[0], (80, 53), (120, 80))
        .await;
    w.assert_variants("m/last.png", &etags[2], (80, 53), (120, 80))
        .await;
    let dead = w.take_dead_letters(1).await;
    let reason = &dead[0].1["error_reason"];
    assert!(reason.contains("m/not-an-image.jpg"), "{reason}");
    assert!(
        !reason.contains("first.jpg") && !reason.contains("last.png"),
        "{reason}"
    );

    // Replayed, the records that succeeded are skipped, not redone.
    send(&w.aws, &w.queue, &dead[0].0).await;
    let replay = w.run_until_empty(&[]).await;
    replay.assert_success();
    assert_eq!(replay.stat("processed"), 0, "{}", replay.stderr);
    assert_eq!(replay.stat("dead_lettered"), 1, "{}", replay.stderr);
}

#[tokio::test]
async fn a_folder_marker_is_ignored() {
    let ctx = context!("a_folder_marker_is_ignored");
    let w = world(ctx, "folder", true).await;
    w.upload("albums/2024/", b"", "application/x-directory")
        .await;
    let run = w.run_until_empty(&[]).await;
    run.assert_success();
    assert_eq!(run.stat("ignored"), 1, "{}", run.stderr);
    assert_eq!(run.stat("dead_lettered"), 0, "{}", run.stderr);
    assert!(w.dest_keys().await.is_empty());
    w.assert_queues_empty().await;
}
