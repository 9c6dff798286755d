//! The worker core against the in-memory queue and store: idempotency, supersession, retries,
//! dead-lettering, leases, draining. Time is tokio's paused clock.

use std::sync::Arc;
use std::time::Duration;

use crate::common::fixture;
use resizeq::adapters::memory::{MemoryQueue, MemoryStore};
use resizeq::config::Config;
use resizeq::event::s3_notification;
use resizeq::ports::Queue;
use resizeq::worker::processor::{META_CONFIG, META_SOURCE_ETAG, META_SOURCE_KEY};
use resizeq::worker::{run, Mode, WorkerContext};
use tokio_util::sync::CancellationToken;

pub(crate) fn context(
    has_dlq: bool,
    edit: impl FnOnce(&mut Config),
) -> Arc<WorkerContext<MemoryQueue, MemoryStore>> {
    let mut config = Config::default();
    config.queue.wait_time_secs = 1;
    config.queue.retry_base_secs = 2;
    edit(&mut config);
    Arc::new(
        WorkerContext::new(
            &config,
            MemoryQueue::new(Duration::from_secs(30), has_dlq),
            MemoryStore::new(),
        )
        .unwrap(),
    )
}

pub(crate) async fn drain(ctx: &Arc<WorkerContext<MemoryQueue, MemoryStore>>) {
    run(
        ctx.clone(),
        Mode::UntilEmpty,
        Duration::from_secs(25),
        CancellationToken::new(),
    )
    .await
    .unwrap();
}

pub(crate) fn stat(ctx: &WorkerContext<MemoryQueue, MemoryStore>, which: &str) -> u64 {
    let s = &ctx.stats;
    let counter = match which {
        "processed" => &s.processed,
        "deleted" => &s.deleted,
        "skipped" => &s.skipped,
        "superseded" => &s.superseded,
        "ignored" => &s.ignored,
        "retried" => &s.retried,
        "dead_lettered" => &s.dead_lettered,
        _ => unreachable!(),
    };
    s.get(counter)
}

#[tokio::test(start_paused = true)]
async fn an_upload_gets_its_variants_with_metadata_and_the_message_is_acked() {
    let ctx = context(true, |_| {});
    let etag = ctx
        .store()
        .insert("photos", "a b/cat.jpg", fixture("tiny.jpg"));
    ctx.queue
        .send(s3_notification("photos", "a b/cat.jpg", Some(&etag), None));
    drain(&ctx).await;

    assert_eq!(
        ctx.store().keys("photos-resized"),
        ["500/a b/cat.jpg.jpg", "80/a b/cat.jpg.jpg"]
    );
    let (bytes, info) = ctx
        .store()
        .object("photos-resized", "80/a b/cat.jpg.jpg")
        .unwrap();
    assert_eq!(image::load_from_memory(&bytes).unwrap().width(), 80);
    assert_eq!(info.content_type.as_deref(), Some("image/jpeg"));
    assert_eq!(info.metadata[META_SOURCE_KEY], "a b/cat.jpg");
    assert_eq!(info.metadata[META_SOURCE_ETAG], etag);
    assert_eq!(
        info.metadata[META_CONFIG],
        ctx.processor.pipeline().fingerprint()
    );
    assert_eq!(stat(&ctx, "processed"), 1);
    assert_eq!(ctx.queue.acked().len(), 1);
    assert!(ctx.queue.remaining().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_duplicate_event_is_skipped_without_rewriting() {
    let ctx = context(true, |_| {});
    let etag = ctx.store().insert("photos", "cat.png", fixture("tiny.png"));
    ctx.queue
        .send(s3_notification("photos", "cat.png", Some(&etag), None));
    drain(&ctx).await;
    let puts = ctx.store().puts();
    ctx.queue
        .send(s3_notification("photos", "cat.png", Some(&etag), None));
    drain(&ctx).await;
    assert_eq!(ctx.store().puts(), puts, "nothing rewritten");
    assert_eq!((stat(&ctx, "processed"), stat(&ctx, "skipped")), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_changed_config_redoes_the_work() {
    let ctx = context(true, |_| {});
    let etag = ctx.store().insert("photos", "cat.png", fixture("tiny.png"));
    ctx.queue
        .send(s3_notification("photos", "cat.png", Some(&etag), None));
    drain(&ctx).await;
    // Same store, new config (quality 90): same keys, different fingerprint.
    let mut config = Config::default();
    config.queue.wait_time_secs = 1;
    config.variants.iter_mut().for_each(|v| v.quality = 90);
    let store = Arc::try_unwrap(ctx).ok().unwrap().processor.into_store();
    let ctx = Arc::new(
        WorkerContext::new(
            &config,
            MemoryQueue::new(Duration::from_secs(30), true),
            store,
        )
        .unwrap(),
    );
    ctx.queue
        .send(s3_notification("photos", "cat.png", Some(&etag), None));
    drain(&ctx).await;
    assert_eq!(
        stat(&ctx, "processed"),
        1,
        "not skipped: the variants were made with another config"
    );
}

#[tokio::test(start_paused = true)]
async fn an_old_event_after_an_overwrite_is_superseded_and_the_newer_variants_stay() {
    let ctx = context(true, |_| {});
    let old = ctx.store().insert("photos", "cat.jpg", fixture("tiny.jpg"));
    let new = ctx
        .store()
        .insert("photos", "cat.jpg", fixture("small-60x40.jpg"));
    ctx.queue
        .send(s3_notification("photos", "cat.jpg", Some(&new), None));
    drain(&ctx).await;
    let before = ctx
        .store()
        .object("photos-resized", "80/cat.jpg.jpg")
        .unwrap();
    ctx.queue
        .send(s3_notification("photos", "cat.jpg", Some(&old), None));
    drain(&ctx).await;
    assert_eq!(stat(&ctx, "superseded"), 1);
    let after = ctx
        .store()
        .object("photos-resized", "80/cat.jpg.jpg")
        .unwrap();
    assert_eq!(before, after, "newer variants untouched");
    assert_eq!(after.1.metadata[META_SOURCE_ETAG], new);
    // A deleted object supersedes its event too.
    ctx.store().remove("photos", "cat.jpg");
    ctx.queue
        .send(s3_notification("photos", "gone.jpg", Some("x"), None));
    drain(&ctx).await;
    assert_eq!(stat(&ctx, "superseded"), 2);
}

#[tokio::test(start_paused = true)]
async fn poison_bodies_and_bad_images_go_to_the_dlq_with_their_reason() {
    let ctx = context(true, |_| {});
    let etag = ctx
        .store()
        .insert("photos", "page.jpg", fixture("page.jpg"));
    ctx.queue
        .send(s3_notification("photos", "page.jpg", Some(&etag), None));
    let etag = ctx
        .store()
        .insert("photos", "cut.jpg", fixture("truncated.jpg"));
    ctx.queue
        .send(s3_notification("photos", "cut.jpg", Some(&etag), None));
    ctx.queue.send("this is not an event");
    drain(&ctx).await;
    let dead = ctx.queue.dead_letters();
    let mut kinds: Vec<&str> = dead.iter().map(|(_, r)| r.error_kind.as_str()).collect();
    kinds.sort();
    assert_eq!(kinds, ["corrupt", "poison", "unsupported"]);
    for (message, reason) in &dead {
        assert!(!reason.error_reason.is_empty());
        assert!(!reason.first_failed_at.is_empty());
        assert_eq!(
            message.receive_count, 1,
            "dead-lettered at once, not after retries"
        );
    }
    assert!(dead
        .iter()
        .any(|(_, r)| r.error_reason.contains("s3://photos/page.jpg")));
    assert!(
        ctx.queue.remaining().is_empty(),
        "gone from the source queue"
    );
    assert!(ctx.store().keys("photos-resized").is_empty());
}

#[tokio::test(start_paused = true)]
async fn without_a_dlq_a_permanent_failure_is_never_deleted() {
    let ctx = context(false, |_| {});
    ctx.queue.send("garbage");
    let worker = tokio::spawn(run(ctx.clone(), Mode::Forever, Duration::from_secs(5), {
        let t = CancellationToken::new();
        let stop = t.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            stop.cancel();
        });
        t
    }));
    worker.await.unwrap().unwrap();
    assert!(ctx.queue.acked().is_empty());
    let remaining = ctx.queue.remaining();
    assert_eq!(remaining.len(), 1, "left for the redrive policy");
    assert!(
        remaining[0].1 >= 2,
        "and retried with backoff: received {} times",
        remaining[0].1
    );
}

#[tokio::test(start_paused = true)]
async fn a_transient_fault_is_retried_with_backoff_then_succeeds() {
    let ctx = context(true, |_| {});
    let etag = ctx.store().insert("photos", "cat.png", fixture("tiny.png"));
    ctx.store()
        .unavailable_buckets
        .lock()
        .unwrap()
        .push("photos-resized".into());
    ctx.queue
        .send(s3_notification("photos", "cat.png", Some(&etag), None));
    let heal = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(20)).await;
            ctx.store().unavailable_buckets.lock().unwrap().clear();
        })
    };
    drain(&ctx).await;
    heal.await.unwrap();
    assert!(
        stat(&ctx, "retried") >= 2,
        "retried {} times",
        stat(&ctx, "retried")
    );
    assert_eq!(stat(&ctx, "processed"), 1);
    assert!(ctx.queue.dead_letters().is_empty());
    assert_eq!(ctx.store().keys("photos-resized").len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_job_is_dead_lettered_and_the_worker_goes_on() {
    let ctx = context(true, |_| {});
    let bad = ctx
        .store()
        .insert("photos", "boom.jpg", fixture("tiny.jpg"));
    let good = ctx
        .store()
        .insert("photos", "fine.jpg", fixture("tiny.jpg"));
    ctx.store()
        .panicking_keys
        .lock()
        .unwrap()
        .push("boom.jpg".into());
    ctx.queue
        .send(s3_notification("photos", "boom.jpg", Some(&bad), None));
    ctx.queue
        .send(s3_notification("photos", "fine.jpg", Some(&good), None));
    drain(&ctx).await;

    let dead = ctx.queue.dead_letters();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].1.error_kind, "panic");
    assert!(dead[0].0.body.contains("boom.jpg"));
    assert_eq!(stat(&ctx, "dead_lettered"), 1);
    assert_eq!(
        stat(&ctx, "processed"),
        1,
        "the other message still processed"
    );
    assert_eq!(
        ctx.store().keys("photos-resized"),
        ["500/fine.jpg.jpg", "80/fine.jpg.jpg"]
    );
    assert!(ctx.queue.remaining().is_empty());
}

#[tokio::test(start_paused = true)]
async fn ready_after_the_first_poll_and_not_while_draining() {
    let ctx = context(true, |_| {});
    *ctx.store().get_delay.lock().unwrap() = Duration::from_secs(60);
    let etag = ctx
        .store()
        .insert("photos", "slow.jpg", fixture("tiny.jpg"));
    ctx.queue
        .send(s3_notification("photos", "slow.jpg", Some(&etag), None));
    assert_eq!(
        ctx.health.readiness(),
        Err("no successful poll of the queue yet")
    );
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(run(
        ctx.clone(),
        Mode::Forever,
        Duration::from_secs(120),
        shutdown.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(ctx.health.readiness(), Ok(()), "polled, job in flight");
    assert!(ctx.health.is_live());
    shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(ctx.health.readiness(), Err("draining for shutdown"));
    assert!(!worker.is_finished(), "the slow job is still running");
    worker.await.unwrap().unwrap();
    assert_eq!(
        stat(&ctx, "processed"),
        1,
        "the job finished during the drain"
    );
}

#[tokio::test(start_paused = true)]
async fn receive_errors_do_not_stop_the_worker() {
    let ctx = context(true, |_| {});
    ctx.queue
        .fail_receives
        .store(3, std::sync::atomic::Ordering::SeqCst);
    let etag = ctx.store().insert("photos", "cat.png", fixture("tiny.png"));
    ctx.queue
        .send(s3_notification("photos", "cat.png", Some(&etag), None));
    drain(&ctx).await;
    assert_eq!(stat(&ctx, "processed"), 1);
}

#[tokio::test(start_paused = true)]
async fn test_events_filtered_keys_and_our_own_buckets_are_ignored() {
    let ctx = context(true, |c| c.filters.exclude_prefixes = vec!["tmp/".into()]);
    ctx.queue
        .send(r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"photos"}"#);
    ctx.store()
        .insert("photos", "tmp/x.png", fixture("tiny.png"));
    ctx.queue
        .send(s3_notification("photos", "tmp/x.png", None, None));
    ctx.store()
        .insert("photos-resized", "80/x.png.jpg", fixture("tiny.png"));
    ctx.queue.send(s3_notification(
        "photos-resized",
        "80/x.png.jpg",
        None,
        None,
    ));
    drain(&ctx).await;
    assert_eq!(stat(&ctx, "ignored"), 3);
    assert_eq!(ctx.queue.acked().len(), 3);
    assert_eq!(
        ctx.store().keys("photos-resized"),
        ["80/x.png.jpg"],
        "nothing written"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_job_keeps_its_lease_and_is_not_redelivered() {
    // A 1 s visibility timeout and a real decode of the corpus-sized fixture: the paused clock
    // runs far past 1 s while the pipeline works on a blocking thread.
    let ctx = context(true, |c| c.queue.visibility_timeout_secs = Some(1));
    let etag = ctx
        .store()
        .insert("photos", "meta.jpg", fixture("meta.jpg"));
    ctx.queue
        .send(s3_notification("photos", "meta.jpg", Some(&etag), None));
    let slow = {
        let ctx = ctx.clone();
        // Hold the only CPU permit for 10 s of tokio time, so the job waits well past its
        // visibility timeout before it can run.
        tokio::spawn(async move {
            let cpu = ctx.processor.cpu();
            let _cpu = cpu
                .acquire_many(cpu.available_permits() as u32)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(10)).await;
        })
    };
    tokio::task::yield_now().await;
    drain(&ctx).await;
    slow.await.unwrap();
    assert!(
        ctx.queue.lease_extensions() >= 5,
        "extended {} times",
        ctx.queue.lease_extensions()
    );
    assert_eq!(stat(&ctx, "processed"), 1);
    assert_eq!(ctx.queue.acked().len(), 1);
    assert_eq!(ctx.queue.acked()[0].receive_count, 1, "never redelivered");
}

#[tokio::test(start_paused = true)]
async fn shutdown_finishes_the_job_in_flight_and_releases_unstarted_ones() {
    let ctx = context(true, |c| c.worker.cpu_workers = 1);
    for i in 0..3 {
        let key = format!("cat{i}.png");
        let etag = ctx.store().insert("photos", &key, fixture("tiny.png"));
        ctx.queue
            .send(s3_notification("photos", &key, Some(&etag), None));
    }
    let hold = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _cpu = ctx.processor.cpu().acquire().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        })
    };
    tokio::task::yield_now().await;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.cancel();
    });
    run(
        ctx.clone(),
        Mode::Forever,
        Duration::from_secs(25),
        shutdown,
    )
    .await
    .unwrap();
    hold.await.unwrap();
    // All three were waiting for the CPU when shutdown came: released at once, not processed,
    // visible again with no backoff, nothing lost.
    assert!(ctx.queue.acked().is_empty());
    assert_eq!(ctx.stats.get(&ctx.stats.released), 3);
    assert_eq!(
        ctx.queue.depth().await.unwrap().visible,
        3,
        "visible again at once"
    );
    assert!(ctx.queue.dead_letters().is_empty());
}

#[test]
fn backoff_grows_exponentially_with_jitter_and_a_cap() {
    let config = Config::default().queue;
    for receives in 1..=30 {
        let d = resizeq::worker::backoff(&config, receives).as_secs_f64();
        let nominal = (config.retry_base_secs as f64 * 2f64.powi(receives as i32 - 1))
            .min(config.retry_max_secs as f64);
        assert!(
            d >= nominal * 0.5 - 1e-9 && d <= nominal + 1e-9,
            "receive {receives}: {d}"
        );
    }
}
