//! Outages and stalls, end to end (the real binary, moto, the fault proxy between them): an S3
//! outage longer than a naive backoff survives under the redrive policy; a black-holed call or
//! a job past its deadline is retried while `/healthz` reports the stall; a queue that does not
//! answer at start-up or during `--until-empty` is waited for; awkward keys get their variants
//! and long ones a reason that keeps its cause.
//!
//! Windows are scaled down (seconds, not minutes) through the same config keys an operator
//! sets, keeping the shape: the outage outlasts what the old schedule survived.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::fault_proxy::{s3_slow_down, sqs_error, Fault, FaultProxy, Rule};
use crate::common::{fixture, wait_until};
use crate::worker_e2e::{
    free_port, http_get, log_message, sample, world, Run, World, RUN_TIMEOUT, TINY, TINY_SMALL,
};

/// The S3 side of moto behind the proxy: every bucket of these tests is named `rq-…`, and
/// SQS's JSON calls go to `/`.
const S3_PATHS: &str = "/rq-";

/// An outage of `outage` on every S3 call, starting now.
fn s3_outage(outage: Duration) -> Rule {
    Rule::new(None, S3_PATHS, s3_slow_down()).during(Duration::ZERO, outage)
}

/// A 25 s S3 outage under maxReceiveCount 5. With 1 s retries (the shape of the old 5 s
/// doubling, scaled down) the five receives are spent in about 20 s, the SDK's own retries
/// included, and the redrive policy took the uploads; with a 36 s retry window the receives
/// span the outage, and every upload is processed with nothing in the DLQ.
#[tokio::test]
async fn an_s3_outage_under_max_receive_count_5_ends_with_every_upload_processed() {
    let ctx = context!("an_s3_outage_under_max_receive_count_5");
    let w = world(ctx, "outage", true).await;
    let mut uploads = Vec::new();
    for i in 0..4 {
        let key = format!("outage/{i}.jpg");
        let etag = w.upload(&key, &fixture("tiny.jpg"), "image/jpeg").await;
        uploads.push((key, etag));
    }
    let proxy = FaultProxy::start(&w.aws.endpoint).await;
    proxy.add(s3_outage(Duration::from_secs(25)));
    let run = w
        .run_until_empty(&[
            ("RESIZEQ_AWS__ENDPOINT_URL", proxy.endpoint.as_str()),
            ("RESIZEQ_QUEUE__RETRY_BASE_SECS", "1"),
            ("RESIZEQ_QUEUE__RETRY_MAX_SECS", "1"),
            ("RESIZEQ_QUEUE__RETRY_WINDOW_SECS", "36"),
        ])
        .await;
    run.assert_success();
    assert!(proxy.faulted() >= 4, "the outage hit: {}", proxy.faulted());
    assert!(run.stat("retried") >= 4, "{}", run.stderr);
    assert_eq!(run.stat("dead_lettered"), 0, "{}", run.stderr);
    for (key, etag) in &uploads {
        w.assert_variants(key, etag, TINY_SMALL, TINY).await;
    }
    w.assert_queues_empty().await;
}

/// Past the window the worker gives up itself on the last receive it plans (one before the
/// redrive policy's last, which is kept in reserve): the DLQ copy says `transient_exhausted`
/// and ends with the S3 error.
#[tokio::test]
async fn a_fault_outlasting_the_retry_window_is_dead_lettered_with_its_last_error() {
    let ctx = context!("a_fault_outlasting_the_retry_window");
    let w = world(ctx, "exhaust", true).await;
    let run = run_while_s3_fails(&w, "exhaust/a.jpg", ["1", "1", "4"], None).await;
    assert_eq!(run.stat("dead_lettered"), 1, "{}", run.stderr);
    let attrs = &transient_exhausted_letter(&w, &run).await;
    // maxReceiveCount 5: receive 4 is the last planned, 5 the reserve.
    assert_eq!(attrs["receive_count"], "4", "{attrs:?}");
    let reason = &attrs["error_reason"];
    assert!(
        reason.starts_with(
            "failed on all 4 receives planned within the redrive policy; last error: "
        ),
        "{reason}"
    );
    // The HEAD of the variants comes first (a HEAD's 503 has no body, so no code).
    assert!(reason.ends_with("(HTTP 503)"), "{reason}");
}

/// Polls `/healthz` until it answers `status`; its body.
async fn healthz_until(port: u16, status: u16) -> String {
    let body = std::sync::Mutex::new(String::new());
    wait_until(&format!("/healthz answers {status}"), || async {
        match http_get(port, "/healthz").await {
            Some((got, text)) if got == status => {
                *body.lock().unwrap() = text;
                true
            }
            _ => false,
        }
    })
    .await;
    body.into_inner().unwrap()
}

/// A source GET that is never answered, with one job slot: `/healthz` reports the stall while
/// it lasts; the job ends with `timeout_log` (a time-out, transient) and is retried; once the
/// GET is answered again the upload is processed and `/healthz` is healthy again.
async fn a_stalled_get_is_retried(test: &str, env: &[(&str, &str)], timeout_log: &[&str]) {
    let ctx = context!(test);
    let w = world(ctx, "stall", true).await;
    let etag = w
        .upload("stall/a.jpg", &fixture("tiny.jpg"), "image/jpeg")
        .await;
    let proxy = FaultProxy::start(&w.aws.endpoint).await;
    proxy.add(Rule::new(
        Some("GET"),
        format!("/{}/", w.source),
        Fault::BlackHole,
    ));
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut all_env = vec![
        ("RESIZEQ_AWS__ENDPOINT_URL", proxy.endpoint.as_str()),
        ("RESIZEQ_METRICS__LISTEN", listen.as_str()),
        ("RESIZEQ_WORKER__MAX_IN_FLIGHT", "1"),
        ("RESIZEQ_WORKER__STALL_SECS", "1"),
    ];
    all_env.extend_from_slice(env);
    let worker = w.spawn(false, &all_env);

    let body = healthz_until(port, 503).await;
    assert!(
        body.contains("jobs stalled: all 1 job slots busy"),
        "{body}"
    );
    let (_, scrape) = http_get(port, "/metrics").await.expect("/metrics");
    assert_eq!(
        sample(&scrape, "resizeq_jobs_stalled", &[]),
        Some(1.0),
        "{scrape}"
    );
    wait_until("the stalled job failed as transient", || async {
        worker.logs().iter().any(|l| {
            let line = l.to_string();
            log_message(l) == "transient failure, retrying later"
                && timeout_log.iter().all(|text| line.contains(text))
        })
    })
    .await;
    proxy.release();
    wait_until("the variants exist", || async {
        w.dest_keys().await.len() == 2
    })
    .await;
    healthz_until(port, 200).await;
    worker.signal("TERM");
    let run = worker.finish(RUN_TIMEOUT).await;
    run.assert_success();
    assert!(run.stat("retried") >= 1, "{}", run.stderr);
    assert_eq!(run.stat("dead_lettered"), 0, "{}", run.stderr);
    assert_eq!(run.stat("processed"), 1, "{}", run.stderr);
    w.assert_variants("stall/a.jpg", &etag, TINY_SMALL, TINY)
        .await;
}

#[tokio::test]
async fn a_black_holed_get_times_out_and_is_retried_while_healthz_reports_the_stall() {
    a_stalled_get_is_retried(
        "a_black_holed_get_times_out",
        &[("RESIZEQ_AWS__ATTEMPT_TIMEOUT_SECS", "2")],
        &["s3 GetObject", "timed out"],
    )
    .await;
}

#[tokio::test]
async fn a_job_past_its_deadline_is_stopped_and_retried() {
    a_stalled_get_is_retried(
        "a_job_past_its_deadline",
        &[("RESIZEQ_WORKER__JOB_DEADLINE_SECS", "5")],
        &["still running at its deadline of 5 s"],
    )
    .await;
}

/// GetQueueAttributes answers 500 at start-up (the visibility timeout) and during
/// `--until-empty`'s depth checks: the worker logs each failure, keeps trying, processes the
/// upload and exits 0 once the queue is really empty.
#[tokio::test]
async fn get_queue_attributes_faults_at_start_up_and_until_empty_are_ridden_out() {
    let ctx = context!("get_queue_attributes_faults");
    let w = world(ctx, "gqa", true).await;
    let etag = w
        .upload("gqa/a.jpg", &fixture("tiny.jpg"), "image/jpeg")
        .await;
    let proxy = FaultProxy::start(&w.aws.endpoint).await;
    // The SDK tries each call 3 times: 6 faults are two failed start-up attempts.
    proxy.add(
        Rule::sqs("GetQueueAttributes", sqs_error(500, "InternalError"))
            .body_contains("VisibilityTimeout")
            .times(6),
    );
    // Depth checks (the metrics poller's too): enough for two failed until-empty checks.
    proxy.add(
        Rule::sqs("GetQueueAttributes", sqs_error(500, "InternalError"))
            .body_contains("ApproximateNumberOfMessagesNotVisible")
            .times(18),
    );
    let run = w
        .run_until_empty(&[("RESIZEQ_AWS__ENDPOINT_URL", proxy.endpoint.as_str())])
        .await;
    run.assert_success();
    let logged = |message: &str| {
        run.logs
            .iter()
            .filter(|l| log_message(l) == message)
            .count()
    };
    assert!(
        logged("start-up: the queue did not answer; trying again") >= 2,
        "{}",
        run.stderr
    );
    assert!(
        logged("queue depth check failed; checking again") >= 1,
        "{}",
        run.stderr
    );
    assert_eq!(run.stat("processed"), 1, "{}", run.stderr);
    w.assert_variants("gqa/a.jpg", &etag, TINY_SMALL, TINY)
        .await;
    w.assert_queues_empty().await;
}

/// A queue the worker may not read ends start-up at once, saying it is a permission error
/// (retrying until `queue.startup_deadline_secs` would only hide it; the run would time out).
#[tokio::test]
async fn a_queue_that_refuses_the_worker_ends_start_up_with_a_permission_error() {
    let ctx = context!("a_queue_that_refuses_the_worker");
    let w = world(ctx, "deny", true).await;
    let proxy = FaultProxy::start(&w.aws.endpoint).await;
    proxy.add(Rule::sqs(
        "GetQueueAttributes",
        sqs_error(400, "AccessDeniedException"),
    ));
    let run = w
        .run_until_empty(&[("RESIZEQ_AWS__ENDPOINT_URL", proxy.endpoint.as_str())])
        .await;
    assert!(!run.status.success(), "{}", run.stderr);
    assert!(
        run.stderr.contains("permission error at start-up")
            && run.stderr.contains("AccessDeniedException"),
        "{}",
        run.stderr
    );
}

/// A key with an ASCII control character gets its variants; the metadata names it
/// percent-encoded. A key near S3's 1,024-byte limit that is not an image is dead-lettered with
/// a reason that fits the attribute and still ends with its cause.
#[tokio::test]
async fn awkward_keys_get_variants_or_a_reason_that_ends_with_its_cause() {
    let ctx = context!("awkward_keys_get_variants_or_a_reason");
    let w = world(ctx, "keys", true).await;
    let bell = "ctl/bell\u{7}tab\t.jpg";
    let etag = w.upload(bell, &fixture("tiny.jpg"), "image/jpeg").await;
    let long = format!("long/{}/end.jpg", "k".repeat(1000));
    w.upload(&long, b"not an image at all", "image/jpeg").await;
    w.upload("long/short.jpg", b"not an image at all", "image/jpeg")
        .await;

    let run = w.run_until_empty(&[]).await;
    run.assert_success();
    assert_eq!(run.stat("processed"), 1, "{}", run.stderr);
    assert_eq!(run.stat("dead_lettered"), 2, "{}", run.stderr);
    for (width, dims) in [(80, TINY_SMALL), (500, TINY)] {
        let variant = w.variant(&format!("{width}/{bell}.jpg")).await;
        let metadata = &variant.metadata;
        assert_eq!(metadata["resizeq-source-key"], "ctl/bell%07tab%09.jpg");
        assert_eq!(metadata["resizeq-source-etag"], etag);
        let image = image::load_from_memory(&variant.bytes).expect("a JPEG");
        assert_eq!((image.width(), image.height()), dims);
    }

    let dead = w.take_dead_letters(2).await;
    let reason_of = |marker: &str| {
        dead.iter()
            .find(|(body, _)| body.contains(marker))
            .map(|(_, attrs)| attrs["error_reason"].clone())
            .unwrap_or_else(|| panic!("no DLQ copy for {marker}: {dead:?}"))
    };
    let short = reason_of("short.jpg");
    let cause = short
        .split_once("long/short.jpg: ")
        .map(|(_, cause)| cause)
        .unwrap_or_else(|| panic!("{short}"));
    let reason = reason_of("end.jpg");
    assert!(reason.len() <= 1024, "{} bytes: {reason}", reason.len());
    assert!(
        reason.ends_with(cause),
        "{reason}\ndoes not end with\n{cause}"
    );
    assert!(reason.contains("bytes cut]…"), "{reason}");
    assert!(reason.contains("/end.jpg: "), "{reason}");
}

/// The DLQ send succeeds and the delete from the source queue fails: the message comes back
/// and is dead-lettered again. Both copies name their source message, and `resizeq dlq stats`
/// counts the second as a duplicate.
#[tokio::test]
async fn a_dead_letter_whose_delete_failed_is_reported_as_a_duplicate() {
    let ctx = context!("a_dead_letter_whose_delete_failed");
    let w = world(ctx, "dup", true).await;
    w.upload("dup/poison.jpg", b"not an image at all", "image/jpeg")
        .await;
    let proxy = FaultProxy::start(&w.aws.endpoint).await;
    // One failed DeleteMessage: the SDK makes 3 attempts.
    proxy.add(Rule::sqs("DeleteMessage", sqs_error(500, "InternalError")).times(3));
    let run = w
        .run_until_empty(&[("RESIZEQ_AWS__ENDPOINT_URL", proxy.endpoint.as_str())])
        .await;
    run.assert_success();
    assert_eq!(proxy.faulted(), 3);
    assert_eq!(run.stat("dead_lettered"), 1, "{}", run.stderr);
    // Tried again at once, not after a trip back through the queue.
    assert_eq!(run.stat("retried"), 0, "{}", run.stderr);
    assert!(
        run.logs
            .iter()
            .any(|l| log_message(l) == "dead-lettering failed; trying again"),
        "{}",
        run.stderr
    );

    let json = dlq_stats(&w).await;
    assert_eq!(json["visible"], 2, "{json}");
    assert_eq!(json["by_error_kind"]["unsupported"], 2, "{json}");
    assert_eq!(json["duplicates"], 1, "{json}");
}

/// The source bucket deleted (with the object) after the event: `NoSuchBucket` on the GET is
/// the object gone, acknowledged as superseded, not a fault retried until the redrive policy
/// moves the event without a reason.
#[tokio::test]
async fn a_deleted_source_bucket_is_the_object_gone_not_a_transient_fault() {
    let ctx = context!("a_deleted_source_bucket");
    let w = world(ctx, "gone", true).await;
    w.upload("gone/a.jpg", &fixture("tiny.jpg"), "image/jpeg")
        .await;
    w.aws
        .s3
        .delete_object()
        .bucket(&w.source)
        .key("gone/a.jpg")
        .send()
        .await
        .expect("DeleteObject");
    w.aws
        .s3
        .delete_bucket()
        .bucket(&w.source)
        .send()
        .await
        .expect("DeleteBucket");
    let run = w.run_until_empty(&[]).await;
    run.assert_success();
    assert_eq!(run.stat("superseded"), 1, "{}", run.stderr);
    assert_eq!(run.stat("retried"), 0, "{}", run.stderr);
    w.assert_queues_empty().await;
}

/// `resizeq dlq stats --json` of the world's DLQ.
async fn dlq_stats(w: &World) -> serde_json::Value {
    let stats = w
        .aws
        .resizeq_command(
            w.dir.path(),
            &w.queue,
            &w.dlq,
            &["dlq", "stats", "--json"],
            &[],
        )
        .output()
        .await
        .expect("resizeq dlq stats");
    assert!(stats.status.success(), "{stats:?}");
    serde_json::from_slice(&stats.stdout).expect("JSON")
}

/// An upload whose S3 calls all fail (SlowDown) until the retries planned are used up, with
/// `sqs_fault` on top; the `run --until-empty` that ends it.
async fn last_receive_with(w: &World, key: &str, sqs_fault: Rule) -> Run {
    run_while_s3_fails(w, key, ["1", "1", "4"], Some(sqs_fault)).await
}

/// Uploads `key` and runs the worker until its queue is empty while every S3 call answers 503
/// (and `more` faults too), with `queue.retry_base_secs`, `retry_max_secs` and
/// `retry_window_secs` set to `retry`.
async fn run_while_s3_fails(w: &World, key: &str, retry: [&str; 3], more: Option<Rule>) -> Run {
    w.upload(key, &fixture("tiny.jpg"), "image/jpeg").await;
    let proxy = FaultProxy::start(&w.aws.endpoint).await;
    proxy.add(Rule::new(None, S3_PATHS, s3_slow_down()));
    if let Some(rule) = more {
        proxy.add(rule);
    }
    let run = w
        .run_until_empty(&[
            ("RESIZEQ_AWS__ENDPOINT_URL", proxy.endpoint.as_str()),
            ("RESIZEQ_QUEUE__RETRY_BASE_SECS", retry[0]),
            ("RESIZEQ_QUEUE__RETRY_MAX_SECS", retry[1]),
            ("RESIZEQ_QUEUE__RETRY_WINDOW_SECS", retry[2]),
        ])
        .await;
    run.assert_success();
    run
}

/// The one message in the DLQ, dead-lettered by the worker as `transient_exhausted`: its
/// attributes.
async fn transient_exhausted_letter(w: &World, run: &Run) -> HashMap<String, String> {
    let mut dead = w.take_dead_letters(1).await;
    assert_eq!(dead.len(), 1, "{dead:?}\n{}", run.stderr);
    let attrs = dead.remove(0).1;
    assert_eq!(
        attrs.get("error_kind").map(String::as_str),
        Some("transient_exhausted"),
        "{attrs:?}\n{}",
        run.stderr
    );
    attrs
}

/// One failed DLQ send (an SQS 500: one SDK call of 3 attempts) on the last receive planned: the
/// worker tries again at once (and has the reserve receive besides), so the message reaches
/// the DLQ with its reason, not by the redrive policy without one.
#[tokio::test]
async fn a_failed_dead_letter_send_on_the_last_receive_still_leaves_a_reason() {
    let ctx = context!("red_failed_dlq_send_last_receive");
    let w = world(ctx, "redsend", true).await;
    let fault = Rule::sqs("SendMessage", sqs_error(500, "InternalError")).times(3);
    let run = last_receive_with(&w, "redsend/a.jpg", fault).await;
    transient_exhausted_letter(&w, &run).await;
}

/// The DLQ send succeeds and the delete fails, on the last receive planned: two copies in the
/// DLQ, and `dlq stats` says one is a duplicate.
#[tokio::test]
async fn a_failed_delete_on_the_last_receive_is_counted_as_a_duplicate() {
    let ctx = context!("red_failed_delete_last_receive");
    let w = world(ctx, "reddel", true).await;
    let fault = Rule::sqs("DeleteMessage", sqs_error(500, "InternalError")).times(3);
    last_receive_with(&w, "reddel/a.jpg", fault).await;
    let json = dlq_stats(&w).await;
    assert_eq!(json["visible"], 2, "{json}");
    assert_eq!(json["duplicates"], 1, "{json}");
}

/// Without `queue.dlq_url`, the worker dead-letters to its redrive policy's queue itself, with
/// the reason, at once (left to the redrive policy, the message would arrive there after every
/// receive it allows, without one).
#[tokio::test]
async fn without_a_dlq_url_the_redrive_policys_queue_still_gets_the_reason() {
    let ctx = context!("without_a_dlq_url");
    let w = world(ctx, "nodlq", true).await;
    w.upload("nodlq/notes.jpg", b"not an image at all", "image/jpeg")
        .await;
    let mut command = w.command(true, &[]);
    command.env_remove("RESIZEQ_QUEUE__DLQ_URL");
    let out = tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .expect("resizeq run --until-empty did not finish")
        .expect("resizeq run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let dead = w.take_dead_letters(1).await;
    let attrs = &dead[0].1;
    assert_eq!(
        attrs.get("error_kind").map(String::as_str),
        Some("unsupported"),
        "{stderr}"
    );
    assert_eq!(attrs["receive_count"], "1", "dead-lettered at once");
}

/// A queue keeps a message only `MessageRetentionPeriod`, reason or not: a retry planned past
/// it would let SQS delete the upload with nothing in the DLQ. Here the retention is 10 min and
/// the next retry 10 min away: the worker gives up at 9 min (a tenth kept for the receive), so it
/// dead-letters at once, saying why. Without the retention read at start-up the message was
/// hidden for 10 min and the run never emptied its queue.
#[tokio::test]
async fn a_retry_that_would_outlive_the_queues_retention_is_dead_lettered_now() {
    use aws_sdk_sqs::types::QueueAttributeName;
    let ctx = context!("a_retry_that_would_outlive_the_queues_retention");
    let w = world(ctx, "retention", true).await;
    w.aws
        .sqs
        .set_queue_attributes()
        .queue_url(&w.queue)
        .attributes(QueueAttributeName::MessageRetentionPeriod, "600")
        .send()
        .await
        .expect("SetQueueAttributes");
    let run = run_while_s3_fails(&w, "retention/a.jpg", ["600", "600", "1800"], None).await;
    assert!(
        run.logs.iter().any(|l| log_message(l)
            .starts_with("queue.retry_window_secs outlasts the queue's MessageRetentionPeriod")),
        "{}",
        run.stderr
    );
    assert_eq!(run.stat("dead_lettered"), 1, "{}", run.stderr);
    let attrs = &transient_exhausted_letter(&w, &run).await;
    assert_eq!(attrs["receive_count"], "1", "{attrs:?}");
    let reason = &attrs["error_reason"];
    assert!(reason.starts_with("still failing "), "{reason}");
    assert!(
        reason.contains(
            "too close to the queue's MessageRetentionPeriod (10m) for another retry (receive 1); last error: "
        ),
        "{reason}"
    );
    assert!(reason.ends_with("(HTTP 503)"), "{reason}");
}
