//! Chaos: the worker (SIGKILLed and restarted twice a round) behind the fault proxy, which
//! injects in scheduled windows S3 `503 SlowDown`, SQS 500s, SQS throttling, connection resets,
//! added latency and black-holed requests. At the end:
//! - every upload has all its variants, made from its own ETag;
//! - nothing was dead-lettered (every fault was transient);
//! - no variant was written twice with different bytes (the destination bucket is versioned:
//!   all versions of a key have one ETag).
//!
//! One round in the normal suite; `RESIZEQ_CHAOS_ROUNDS=n` (see `scripts/chaos`) runs more,
//! with more uploads, and the figures are printed either way.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};

use crate::common::fault_proxy::{s3_slow_down, sqs_error, Fault, FaultProxy, Rule};
use crate::common::wait_until;
use crate::worker_e2e::{log_message, world, Run, World, RUN_TIMEOUT};

const UPLOADS_PER_ROUND: usize = 20;
const ROUND: Duration = Duration::from_secs(10);

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// One round's faults, starting `at` from now: (start, length, rule) in seconds.
fn round_faults(w: &World, at: Duration) -> Vec<Rule> {
    let source_get = || format!("/{}/", w.source);
    let dest = format!("/{}/", w.dest);
    let window = |rule: Rule, start: f64, length: f64| rule.during(at + secs(start), secs(length));
    vec![
        // One of each kind the test asserts was injected, to the round's first matching
        // requests, whatever the machine's speed (a busy machine may restart the worker right
        // through a window and miss it); the windows below come on top.
        Rule::new(Some("GET"), source_get(), s3_slow_down()).times(1),
        Rule::new(Some("GET"), source_get(), Fault::BlackHole).times(1),
        Rule::sqs("ReceiveMessage", sqs_error(500, "InternalError")).times(1),
        Rule::sqs("ReceiveMessage", sqs_error(400, "RequestThrottled")).times(1),
        window(
            Rule::new(Some("GET"), source_get(), s3_slow_down()),
            0.0,
            2.0,
        ),
        window(
            Rule::sqs("ReceiveMessage", sqs_error(500, "InternalError")),
            1.5,
            2.0,
        ),
        window(
            Rule::sqs(
                "ChangeMessageVisibility",
                sqs_error(400, "RequestThrottled"),
            ),
            3.0,
            2.0,
        ),
        window(
            Rule::sqs("DeleteMessageBatch", sqs_error(400, "RequestThrottled")),
            3.0,
            2.0,
        ),
        window(Rule::new(Some("PUT"), dest, Fault::Reset), 4.5, 2.0),
        window(Rule::new(None, "/rq-", Fault::Delay(secs(1.0))), 6.0, 2.0),
        window(
            Rule::new(Some("GET"), source_get(), Fault::BlackHole),
            7.5,
            2.0,
        ),
    ]
}

/// When in a round the worker is SIGKILLed and restarted.
const KILLS: [f64; 2] = [2.5, 7.0];

#[tokio::test]
async fn chaos_loses_nothing_dead_letters_nothing_transient_and_never_rewrites_a_variant() {
    let ctx = context!("chaos");
    let rounds: u32 = std::env::var("RESIZEQ_CHAOS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let w = world(ctx, "chaos", true).await;
    w.aws
        .s3
        .put_bucket_versioning()
        .bucket(&w.dest)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .expect("PutBucketVersioning");
    let proxy = FaultProxy::start(&w.aws.endpoint).await;
    let env = [
        ("RESIZEQ_AWS__ENDPOINT_URL", proxy.endpoint.as_str()),
        ("RESIZEQ_AWS__ATTEMPT_TIMEOUT_SECS", "2"),
        ("RESIZEQ_QUEUE__VISIBILITY_TIMEOUT_SECS", "5"),
        ("RESIZEQ_QUEUE__RETRY_BASE_SECS", "1"),
        ("RESIZEQ_QUEUE__RETRY_MAX_SECS", "2"),
        ("RESIZEQ_QUEUE__RETRY_WINDOW_SECS", "20"),
    ];

    let started = Instant::now();
    let mut uploads: Vec<(String, String)> = Vec::new();
    let mut runs: Vec<Run> = Vec::new();
    let mut worker = w.spawn(false, &env);
    for round in 0..rounds {
        let round_start = Instant::now();
        for rule in round_faults(&w, Duration::ZERO) {
            proxy.add(rule);
        }
        // Uploads all through the round, so that every fault window meets work; the kills in
        // between.
        let mut schedule: Vec<(Duration, Option<usize>)> = (0..UPLOADS_PER_ROUND)
            .map(|i| (ROUND * i as u32 / UPLOADS_PER_ROUND as u32, Some(i)))
            .chain(KILLS.iter().map(|at| (secs(*at), None)))
            .collect();
        schedule.sort_by_key(|(at, _)| *at);
        for (at, upload) in schedule {
            tokio::time::sleep_until((round_start + at).into()).await;
            match upload {
                Some(i) => {
                    let key = format!("chaos/{round}/{i}.jpg");
                    let etag = w.upload(&key, &distinct_jpeg(round, i), "image/jpeg").await;
                    uploads.push((key, etag));
                }
                None => {
                    worker.signal("KILL");
                    runs.push(worker.finish(RUN_TIMEOUT).await);
                    worker = w.spawn(false, &env);
                }
            }
        }
        tokio::time::sleep_until((round_start + ROUND).into()).await;
    }
    let faults_over = started.elapsed();

    wait_until("every upload has both variants", || async {
        let keys = w.dest_keys().await;
        uploads.iter().all(|(key, _)| {
            keys.contains(&format!("80/{key}.jpg")) && keys.contains(&format!("500/{key}.jpg"))
        })
    })
    .await;
    wait_until("the source queue is empty", || async {
        w.depth_of(&w.queue).await == (0, 0, 0)
    })
    .await;
    let converged = started.elapsed();
    worker.signal("TERM");
    let last = worker.finish(RUN_TIMEOUT).await;
    last.assert_success();
    runs.push(last);

    for (key, etag) in &uploads {
        for width in [80, 500] {
            let variant = w.variant(&format!("{width}/{key}.jpg")).await;
            assert_eq!(variant.metadata["resizeq-source-etag"], *etag, "{key}");
        }
    }
    assert_eq!(w.depth_of(&w.dlq).await, (0, 0, 0), "nothing dead-lettered");
    let versions = variant_versions(&w).await;
    let rewritten: Vec<_> = versions
        .iter()
        .filter(|(_, etags)| etags.iter().any(|e| *e != etags[0]))
        .collect();
    assert!(
        rewritten.is_empty(),
        "written with different bytes: {rewritten:?}"
    );

    let retries: usize = runs
        .iter()
        .map(|run| count_logged(run, "transient failure, retrying later"))
        .sum();
    let written: usize = versions.values().map(Vec::len).sum();
    eprintln!(
        "CHAOS FIGURES: rounds {rounds}, uploads {}, worker restarts after SIGKILL {}, \
         faults injected {:?}, transient retries logged {retries}, variant versions written \
         {written} for {} variant keys (same bytes on every rewrite), dead-lettered 0; faults \
         over after {:.1} s, everything processed after {:.1} s",
        uploads.len(),
        KILLS.len() * rounds as usize,
        proxy.faults_by_kind(),
        versions.len(),
        faults_over.as_secs_f64(),
        converged.as_secs_f64(),
    );
    let kinds = proxy.faults_by_kind();
    for kind in [
        "s3_503_slow_down",
        "server_error",
        "throttling",
        "black_hole",
    ] {
        assert!(kinds.contains_key(kind), "{kind} never injected: {kinds:?}");
    }
}

/// A 120 × 80 JPEG whose pixels differ for every (round, upload): every source has its own
/// ETag and its own variant bytes, so a variant made from another upload, or rewritten with
/// other bytes, shows.
fn distinct_jpeg(round: u32, upload: usize) -> Vec<u8> {
    let seed = round as usize * 1000 + upload;
    let image = image::RgbImage::from_fn(120, 80, |x, y| {
        image::Rgb([
            (seed * 37 % 256) as u8,
            (x as usize * 2 + seed) as u8,
            (y as usize * 3 + seed * 7) as u8,
        ])
    });
    let mut jpeg = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut jpeg, image::ImageFormat::Jpeg)
        .expect("encode a test JPEG");
    jpeg.into_inner()
}

/// Every version's ETag of every destination key.
async fn variant_versions(w: &World) -> BTreeMap<String, Vec<String>> {
    let mut versions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut marker: Option<(String, String)> = None;
    loop {
        let out = w
            .aws
            .s3
            .list_object_versions()
            .bucket(&w.dest)
            .set_key_marker(marker.as_ref().map(|m| m.0.clone()))
            .set_version_id_marker(marker.as_ref().map(|m| m.1.clone()))
            .send()
            .await
            .expect("ListObjectVersions");
        for v in out.versions() {
            versions
                .entry(v.key().unwrap_or_default().to_string())
                .or_default()
                .push(v.e_tag().unwrap_or_default().to_string());
        }
        if out.is_truncated() != Some(true) {
            return versions;
        }
        marker = Some((
            out.next_key_marker().unwrap_or_default().to_string(),
            out.next_version_id_marker().unwrap_or_default().to_string(),
        ));
    }
}

fn count_logged(run: &Run, message: &str) -> usize {
    run.logs
        .iter()
        .filter(|l| log_message(l) == message)
        .count()
}
