//! `resizeq backfill`: the real binary against moto (see tests/common/mod.rs). The queue path
//! is checked message by message and then through the real worker (`resizeq run
//! --until-empty`); `--direct` must give the same bytes and the same idempotency.
//!
//! Skipped (with `MOTO MISSING`) without `RESIZEQ_TEST_ENDPOINT`; `scripts/test` starts moto.
//! By hand: `bash -c 'source scripts/moto.sh && cargo test --test it ops_backfill -- --nocapture'`.

use crate::common::ops_world;

use std::collections::HashSet;

use ops_world::{event_keys, fixture, world};

#[tokio::test]
async fn backfill_enqueues_one_event_per_object_and_a_second_run_only_skips() {
    let ctx = context!("backfill_enqueues_one_event_per_object_and_a_second_run_only_skips");
    let w = world(ctx, "bfq").await;
    const N: usize = 200;
    let keys = w
        .upload_copies("photos/img-", &fixture("tiny.jpg"), N)
        .await;
    // Outside the prefix, and inside it but not an image by --suffix.
    w.upload_copies("other/img-", &fixture("tiny.jpg"), 2).await;
    w.aws
        .upload(&w.source, "photos/notes.txt", b"hello", "text/plain", &[])
        .await;
    let target = format!("s3://{}/photos/", w.source);

    let dry = w
        .resizeq(
            &["backfill", &target, "--suffix", ".jpg,.png", "--dry-run"],
            &[],
        )
        .await;
    dry.assert_success();
    assert_eq!(dry.field("listed"), N as u64 + 1, "{}", dry.stdout());
    assert_eq!(dry.field("would_backfill"), N as u64);
    assert_eq!(
        w.depth_of(&w.queue).await,
        (0, 0, 0),
        "a dry run sends nothing"
    );

    let first = w
        .resizeq(&["backfill", &target, "--suffix", ".jpg,.png"], &[])
        .await;
    first.assert_success();
    assert_eq!(first.summary()["mode"], "queue");
    assert_eq!(first.field("listed"), N as u64 + 1, "{}", first.stdout());
    assert_eq!(first.field("matched"), N as u64);
    assert_eq!(first.field("enqueued"), N as u64);
    assert_eq!(first.field("failed"), 0);
    assert_eq!(first.summary()["last_key"], "photos/notes.txt");

    // Exactly one event per object, each naming its object's ETag.
    let messages = w.receive_all(&w.queue, false).await;
    let (event_keys, events) = event_keys(&messages);
    assert_eq!(events, N, "one record per message, one message per object");
    assert_eq!(event_keys, keys.iter().cloned().collect::<HashSet<_>>());
    assert!(messages.iter().all(|m| m.body.contains("\"eTag\"")));
    w.settle(&w.queue, std::time::Duration::from_secs(10)).await;
    assert_eq!(w.depth_of(&w.queue).await, (N as u64, 0, 0));

    let ran = w.work(&[]).await;
    let stats = ran.worker_stats();
    assert_eq!(stats["received"], N as u64, "{}", ran.stderr());
    assert_eq!(stats["processed"], N as u64, "{}", ran.stderr());
    let dest = w.keys(&w.dest).await;
    assert_eq!(dest.len(), 2 * N, "two variants per object");
    assert!(dest.contains(&"500/photos/img-199.jpg.jpg".to_string()));

    // Nothing changed since: the second backfill's events are all skipped.
    let second = w
        .resizeq(&["backfill", &target, "--suffix", ".jpg"], &[])
        .await;
    second.assert_success();
    assert_eq!(second.field("enqueued"), N as u64);
    let ran = w.work(&[]).await;
    let stats = ran.worker_stats();
    assert_eq!(stats["skipped"], N as u64, "{}", ran.stderr());
    assert_eq!(stats["processed"], 0, "{}", ran.stderr());

    // --direct agrees: every object already current.
    let direct = w
        .resizeq(&["backfill", &target, "--suffix", ".jpg", "--direct"], &[])
        .await;
    direct.assert_success();
    assert_eq!(direct.summary()["mode"], "direct");
    assert_eq!(direct.field("skipped"), N as u64, "{}", direct.stdout());
    assert_eq!(direct.field("processed"), 0);
    assert_eq!(
        w.depth_of(&w.queue).await,
        (0, 0, 0),
        "--direct enqueues nothing"
    );
}

#[tokio::test]
async fn direct_backfill_writes_the_same_bytes_as_the_queue_path() {
    let ctx = context!("direct_backfill_writes_the_same_bytes_as_the_queue_path");
    let w = world(ctx, "bfd").await;
    // A second source bucket with the same objects, backfilled with --direct.
    let other = w.aws.create_bucket("bfd2").await;
    let other_dest = format!("{other}-resized");
    w.aws
        .s3
        .create_bucket()
        .bucket(&other_dest)
        .send()
        .await
        .expect("CreateBucket");
    let files = [
        ("a/tiny.jpg", "tiny.jpg", "image/jpeg"),
        ("a/tiny.png", "tiny.png", "image/png"),
        ("a/orient-6.jpg", "orient-6.jpg", "image/jpeg"),
        ("a/gray.jpg", "gray.jpg", "image/jpeg"),
        ("a/tiny.webp", "tiny.webp", "image/webp"),
    ];
    for (key, name, content_type) in files {
        for bucket in [&w.source, &other] {
            w.aws
                .upload(bucket, key, &fixture(name), content_type, &[])
                .await;
        }
    }

    let queued = w
        .resizeq(&["backfill", &format!("s3://{}", w.source)], &[])
        .await;
    queued.assert_success();
    assert_eq!(queued.field("enqueued"), files.len() as u64);
    let ran = w.work(&[]).await;
    assert_eq!(
        ran.worker_stats()["processed"],
        files.len() as u64,
        "{}",
        ran.stderr()
    );

    let direct_target = format!("s3://{other}");
    let direct = w
        .resizeq(
            &["backfill", &direct_target, "--direct", "--concurrency", "3"],
            &[],
        )
        .await;
    direct.assert_success();
    assert_eq!(
        direct.field("processed"),
        files.len() as u64,
        "{}",
        direct.stdout()
    );
    assert_eq!(direct.field("failed"), 0);
    assert_eq!(w.depth_of(&w.queue).await, (0, 0, 0));

    let queued_keys = w.keys(&w.dest).await;
    assert_eq!(queued_keys.len(), 2 * files.len(), "{queued_keys:?}");
    assert_eq!(w.keys(&other_dest).await, queued_keys);
    for key in &queued_keys {
        let (queued_bytes, queued_meta) = w.object(&w.dest, key).await;
        let (direct_bytes, direct_meta) = w.object(&other_dest, key).await;
        assert!(queued_bytes == direct_bytes, "{key}: the bytes differ");
        assert_eq!(queued_meta, direct_meta, "{key}");
    }

    // Idempotent in-process too.
    let again = w
        .resizeq(&["backfill", &direct_target, "--direct"], &[])
        .await;
    again.assert_success();
    assert_eq!(
        again.field("skipped"),
        files.len() as u64,
        "{}",
        again.stdout()
    );
    assert_eq!(again.field("processed"), 0);
}

#[tokio::test]
async fn backfill_resumes_after_a_key_filters_by_date_and_fails_clearly() {
    let ctx = context!("backfill_resumes_after_a_key_filters_by_date_and_fails_clearly");
    let w = world(ctx, "bfr").await;
    w.upload_copies("p/", &fixture("tiny.jpg"), 5).await;
    let target = format!("s3://{}/p/", w.source);

    let resumed = w
        .resizeq(&["backfill", &target, "--start-after", "p/002.jpg"], &[])
        .await;
    resumed.assert_success();
    assert_eq!(resumed.field("enqueued"), 2, "{}", resumed.stdout());
    let (keys, _) = event_keys(&w.receive_all(&w.queue, true).await);
    assert_eq!(
        keys,
        HashSet::from(["p/003.jpg".to_string(), "p/004.jpg".to_string()])
    );

    let future = w
        .resizeq(
            &["backfill", &target, "--since", "2999-01-01", "--dry-run"],
            &[],
        )
        .await;
    future.assert_success();
    assert_eq!(future.field("listed"), 5);
    assert_eq!(future.field("matched"), 0);
    let past = w
        .resizeq(
            &[
                "backfill",
                &target,
                "--since",
                "2000-01-01T00:00:00Z",
                "--dry-run",
            ],
            &[],
        )
        .await;
    assert_eq!(past.field("matched"), 5, "{}", past.stdout());

    let bad_date = w
        .resizeq(&["backfill", &target, "--since", "yesterday"], &[])
        .await;
    assert_eq!(bad_date.output.status.code(), Some(1));
    assert!(
        bad_date.stderr().contains("--since"),
        "{}",
        bad_date.stderr()
    );

    let missing = w
        .resizeq(&["backfill", &format!("s3://{}-nope/", w.source)], &[])
        .await;
    assert!(!missing.output.status.success());
    assert!(
        missing.stderr().contains("NoSuchBucket"),
        "{}",
        missing.stderr()
    );

    let mut cmd = w.command(&["backfill", &target], &[]);
    cmd.env_remove("RESIZEQ_QUEUE__URL");
    let out = cmd.output().await.expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("queue.url") && stderr.contains("--direct"),
        "{stderr}"
    );
}

/// The ports backfill runs over, on moto: S3 listing page by page (continuation tokens, a
/// start key, a prefix) and a batch sent to SQS.
#[tokio::test]
async fn the_s3_listing_pages_and_the_sqs_batch_send_backfill_uses() {
    use resizeq::adapters::{s3::S3Store, sqs::SqsQueue};
    use resizeq::ports::{Enqueue, ListQuery, Store};

    let ctx = context!("the_s3_listing_pages_and_the_sqs_batch_send_backfill_uses");
    let w = world(ctx, "bfp").await;
    let keys = w.upload_copies("p/img-", &fixture("tiny.jpg"), 5).await;
    w.upload_copies("q/img-", &fixture("tiny.jpg"), 1).await;
    let store = S3Store::new(w.aws.s3.clone());

    let mut listed = Vec::new();
    let mut continuation = None;
    let mut pages = 0;
    loop {
        let query = ListQuery {
            prefix: Some("p/"),
            start_after: Some("p/img-000.jpg"),
            continuation: continuation.as_deref(),
            max_keys: 2,
        };
        let page = store.list(&w.source, query).await.unwrap();
        pages += 1;
        assert!(page.objects.len() <= 2);
        for object in page.objects {
            assert_eq!(object.size, Some(fixture("tiny.jpg").len() as u64));
            assert!(object.etag.as_deref().is_some_and(|e| !e.contains('"')));
            assert!(object.last_modified.is_some());
            listed.push(object.key);
        }
        match page.next {
            Some(next) => continuation = Some(next),
            None => break,
        }
    }
    assert_eq!(listed, keys[1..]);
    assert_eq!(pages, 2);

    let queue = SqsQueue::new(w.aws.sqs.clone(), w.queue.clone(), None);
    let bodies: Vec<String> = (0..3).map(|i| format!("body-{i}")).collect();
    let sent = queue.send_batch(&bodies).await.unwrap();
    assert!(sent.iter().all(Result::is_ok), "{sent:?}");
    let mut received: Vec<String> = w
        .receive_all(&w.queue, true)
        .await
        .into_iter()
        .map(|m| m.body)
        .collect();
    received.sort();
    assert_eq!(received, bodies);
}
