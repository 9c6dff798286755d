//! `resizeq dlq stats|peek|replay|purge`: the real binary against moto (see
//! tests/common/mod.rs), with dead letters written by the real worker or, where a test needs
//! many or particular ones, sent with the attributes the worker writes.
//!
//! Skipped (with `MOTO MISSING`) without `RESIZEQ_TEST_ENDPOINT`; `scripts/test` starts moto.
//! By hand: `bash -c 'source scripts/moto.sh && cargo test --test it ops_dlq -- --nocapture'`.

use crate::common::ops_world;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::Value;

use ops_world::{fixture, world};

#[tokio::test]
async fn dead_letters_show_in_stats_and_peek_with_their_reasons_and_stay_there() {
    let ctx = context!("dead_letters_show_in_stats_and_peek_with_their_reasons_and_stay_there");
    let w = world(ctx, "dlqs").await;
    w.aws
        .upload(
            &w.source,
            "bad/truncated.jpg",
            &fixture("truncated.jpg"),
            "image/jpeg",
            &[],
        )
        .await;
    w.aws
        .upload(
            &w.source,
            "bad/page.jpg",
            &fixture("page.jpg"),
            "image/jpeg",
            &[],
        )
        .await;
    for key in ["bad/truncated.jpg", "bad/page.jpg"] {
        let body = resizeq::event::s3_notification(&w.source, key, None, None);
        w.send(&w.queue, &body, &[]).await;
    }
    w.send(&w.queue, "not json", &[]).await;
    let ran = w.work(&[]).await;
    assert_eq!(ran.worker_stats()["dead_lettered"], 3, "{}", ran.stderr());
    assert_eq!(w.depth_of(&w.dlq).await, (3, 0, 0));

    let stats = w.resizeq(&["dlq", "stats", "--json"], &[]).await;
    stats.assert_success();
    let json = stats.json();
    assert_eq!(json["queue"], w.dlq.as_str());
    assert_eq!(json["visible"], 3, "{json}");
    assert_eq!(json["in_flight"], 0, "{json}");
    let kinds: BTreeMap<String, u64> =
        serde_json::from_value(json["by_error_kind"].clone()).unwrap();
    assert_eq!(
        kinds,
        BTreeMap::from([
            ("corrupt".into(), 1),
            ("poison".into(), 1),
            ("unsupported".into(), 1)
        ])
    );
    assert_eq!(json["complete"], true);
    assert!(json["oldest_age_secs"].as_u64().unwrap() < 600, "{json}");
    let table = w.resizeq(&["dlq", "stats"], &[]).await;
    table.assert_success();
    for text in ["visible            3", "corrupt", "poison", "unsupported"] {
        assert!(table.stdout().contains(text), "{text}:\n{}", table.stdout());
    }
    assert_eq!(
        w.depth_of(&w.dlq).await,
        (3, 0, 0),
        "stats consumed nothing"
    );

    let peek = w.resizeq(&["dlq", "peek", "--json"], &[]).await;
    peek.assert_success();
    let peeked: Vec<Value> = serde_json::from_value(peek.json()).unwrap();
    assert_eq!(peeked.len(), 3, "{peeked:#?}");
    let by_kind: HashMap<&str, &Value> = peeked
        .iter()
        .map(|p| (p["error_kind"].as_str().unwrap(), p))
        .collect();
    let corrupt = by_kind["corrupt"];
    assert_eq!(corrupt["objects"][0]["bucket"], w.source.as_str());
    assert_eq!(corrupt["objects"][0]["key"], "bad/truncated.jpg");
    assert!(
        corrupt["error_reason"]
            .as_str()
            .unwrap()
            .contains("truncated.jpg"),
        "{corrupt}"
    );
    assert_eq!(corrupt["receive_count"], 1);
    assert_eq!(corrupt["source_queue"], w.queue.as_str());
    assert_eq!(by_kind["unsupported"]["objects"][0]["key"], "bad/page.jpg");
    let poison = by_kind["poison"];
    assert_eq!(poison["body"], "not json");
    assert!(poison["body_error"].as_str().is_some(), "{poison}");
    assert!(poison["objects"].as_array().unwrap().is_empty());

    let text = w.resizeq(&["dlq", "peek", "--max", "10"], &[]).await;
    text.assert_success();
    let out = text.stdout();
    assert!(
        out.contains(&format!("s3://{}/bad/truncated.jpg", w.source)),
        "{out}"
    );
    assert!(out.contains("error_kind=poison"), "{out}");
    assert!(out.contains("reason: "), "{out}");
    // Made visible again at once, not after a lease.
    assert_eq!(w.depth_of(&w.dlq).await, (3, 0, 0), "peek consumed nothing");
}

#[tokio::test]
async fn replay_moves_by_hand_on_moto_and_the_worker_then_processes_the_messages() {
    let ctx = context!("replay_moves_by_hand_on_moto_and_the_worker_then_processes_the_messages");
    let w = world(ctx, "dlqr").await;
    let mut etags = Vec::new();
    for i in 0..3 {
        let key = format!("big/{i}.jpg");
        let etag = w
            .aws
            .upload(&w.source, &key, &fixture("tiny.jpg"), "image/jpeg", &[])
            .await;
        let body = resizeq::event::s3_notification(&w.source, &key, Some(&etag), None);
        w.send(&w.queue, &body, &[]).await;
        etags.push(etag);
    }
    // An incident: a pixel limit far too low dead-letters every image as too large.
    let ran = w.work(&[("RESIZEQ_LIMITS__MAX_PIXELS", "100")]).await;
    assert_eq!(ran.worker_stats()["dead_lettered"], 3, "{}", ran.stderr());
    assert!(w.keys(&w.dest).await.is_empty());

    // The fix is deployed (default limits); replay everything.
    let replay = w.resizeq(&["dlq", "replay"], &[]).await;
    replay.assert_success();
    assert!(
        replay.stderr().contains("StartMessageMoveTask") && replay.stderr().contains("one by one"),
        "the fallback is announced:\n{}",
        replay.stderr()
    );
    assert_eq!(replay.summary()["mode"], "manual", "{}", replay.stdout());
    assert_eq!(replay.field("moved"), 3);
    assert_eq!(replay.field("failed"), 0);
    assert_eq!(replay.field("kind.too_large"), 3);
    assert_eq!(w.depth_of(&w.dlq).await, (0, 0, 0));
    assert_eq!(w.depth_of(&w.queue).await, (3, 0, 0));

    let ran = w.work(&[]).await;
    let stats = ran.worker_stats();
    assert_eq!(stats["processed"], 3, "{}", ran.stderr());
    assert_eq!(stats["dead_lettered"], 0, "{}", ran.stderr());
    let keys = w.keys(&w.dest).await;
    assert_eq!(keys.len(), 6, "{keys:?}");
    for (i, etag) in etags.iter().enumerate() {
        let (bytes, metadata) = w.object(&w.dest, &format!("80/big/{i}.jpg.jpg")).await;
        assert_eq!(metadata["resizeq-source-etag"], *etag);
        let img = image::load_from_memory(&bytes).expect("a JPEG");
        assert_eq!((img.width(), img.height()), (80, 53));
    }
    assert_eq!(w.depth_of(&w.dlq).await, (0, 0, 0));
}

#[tokio::test]
async fn replay_honours_error_kind_max_and_dry_run_and_keeps_the_attributes() {
    let ctx = context!("replay_honours_error_kind_max_and_dry_run_and_keeps_the_attributes");
    let w = world(ctx, "dlqf").await;
    for i in 0..4 {
        w.dead_letter(&format!("c-{i}"), "corrupt").await;
    }
    for i in 0..3 {
        w.dead_letter(&format!("p-{i}"), "poison").await;
    }

    let dry = w
        .resizeq(
            &["dlq", "replay", "--dry-run", "--error-kind", "poison"],
            &[],
        )
        .await;
    dry.assert_success();
    assert_eq!(dry.summary()["mode"], "dry-run");
    assert_eq!(dry.field("would_move"), 3, "{}", dry.stdout());
    assert_eq!(dry.field("left"), 4);
    assert_eq!(w.depth_of(&w.dlq).await, (7, 0, 0), "dry run moved nothing");
    assert_eq!(w.depth_of(&w.queue).await, (0, 0, 0));

    let two = w
        .resizeq(
            &["dlq", "replay", "--error-kind", "poison", "--max", "2"],
            &[],
        )
        .await;
    two.assert_success();
    assert_eq!(two.field("moved"), 2, "{}", two.stdout());
    assert_eq!(w.depth_of(&w.dlq).await, (5, 0, 0));
    assert_eq!(w.depth_of(&w.queue).await, (2, 0, 0));

    let rest = w
        .resizeq(&["dlq", "replay", "--error-kind", "poison"], &[])
        .await;
    rest.assert_success();
    assert_eq!(rest.field("moved"), 1, "{}", rest.stdout());

    let moved = w.receive_all(&w.queue, true).await;
    let mut bodies: Vec<&str> = moved.iter().map(|m| m.body.as_str()).collect();
    bodies.sort();
    assert_eq!(bodies, ["p-0", "p-1", "p-2"]);
    for m in &moved {
        assert_eq!(m.attributes["error_kind"], "poison", "{m:?}");
        assert_eq!(m.attributes["source_queue"], w.queue, "{m:?}");
        assert_eq!(m.attributes["first_failed_at"], "2024-05-01T12:00:00Z");
    }
    let left = w.receive_all(&w.dlq, false).await;
    let mut bodies: Vec<&str> = left.iter().map(|m| m.body.as_str()).collect();
    bodies.sort();
    assert_eq!(bodies, ["c-0", "c-1", "c-2", "c-3"]);
    assert_eq!(w.depth_of(&w.dlq).await, (4, 0, 0));
}

#[tokio::test]
async fn a_replay_killed_halfway_loses_no_message() {
    let ctx = context!("a_replay_killed_halfway_loses_no_message");
    let w = world(ctx, "dlqk").await;
    const N: usize = 40;
    for i in 0..N {
        w.dead_letter(&format!("m-{i:02}"), "corrupt").await;
    }
    let mut child = w
        .command(&["dlq", "replay", "--rate", "10", "--lease-secs", "3"], &[])
        .spawn()
        .expect("spawn resizeq dlq replay");
    // Kill it once a good part, but not all, has moved.
    w.wait_for_visible(&w.queue, 12, Duration::from_secs(60))
        .await;
    child.start_kill().expect("SIGKILL");
    let status = child.wait().await.expect("wait");
    assert!(!status.success(), "killed, not finished: {status}");

    // The messages it had received come back when their lease ends.
    w.settle(&w.dlq, Duration::from_secs(30)).await;
    let in_source = w.receive_all(&w.queue, true).await;
    let in_dlq = w.receive_all(&w.dlq, true).await;
    assert!(
        in_source.len() < N,
        "killed before the end: {}",
        in_source.len()
    );
    assert!(!in_dlq.is_empty(), "killed before the end");
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for m in in_source.iter().chain(&in_dlq) {
        *seen.entry(m.body.clone()).or_default() += 1;
    }
    for i in 0..N {
        let body = format!("m-{i:02}");
        assert!(
            seen.contains_key(&body),
            "{body} is lost: in neither queue ({} in the source queue, {} in the DLQ)",
            in_source.len(),
            in_dlq.len()
        );
    }
    // At most the message in hand at the kill is in both.
    assert!(
        in_source.len() + in_dlq.len() <= N + 1,
        "{} + {}",
        in_source.len(),
        in_dlq.len()
    );
}

#[tokio::test]
async fn a_replay_stopped_by_sigterm_finishes_the_message_in_hand_and_reports() {
    let ctx = context!("a_replay_stopped_by_sigterm_finishes_the_message_in_hand_and_reports");
    let w = world(ctx, "dlqt").await;
    const N: usize = 40;
    for i in 0..N {
        w.dead_letter(&format!("m-{i:02}"), "corrupt").await;
    }
    let child = w
        .command(&["dlq", "replay", "--rate", "10"], &[])
        .spawn()
        .expect("spawn resizeq dlq replay");
    w.wait_for_visible(&w.queue, 5, Duration::from_secs(60))
        .await;
    let pid = child.id().expect("running") as libc::pid_t;
    // SAFETY: kill(2) on the child we spawned, which has not been waited for yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let output = child.wait_with_output().await.expect("wait");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "interrupted: {stdout}");
    assert!(stdout.contains("interrupted=true"), "{stdout}");

    // A clean stop: what it held is visible again at once, nothing is in both queues.
    let in_source = w.receive_all(&w.queue, true).await;
    let in_dlq = w.receive_all(&w.dlq, true).await;
    assert!(in_source.len() < N, "stopped before the end");
    assert_eq!(in_source.len() + in_dlq.len(), N, "{stdout}");
    let moved: usize = stdout
        .split_whitespace()
        .find_map(|field| field.strip_prefix("moved="))
        .and_then(|n| n.parse().ok())
        .expect("moved= in the summary");
    assert_eq!(moved, in_source.len(), "{stdout}");
}

#[tokio::test]
async fn purge_refuses_without_yes_and_says_what_it_removed() {
    let ctx = context!("purge_refuses_without_yes_and_says_what_it_removed");
    let w = world(ctx, "dlqp").await;
    w.dead_letter("c-0", "corrupt").await;
    w.dead_letter("c-1", "corrupt").await;
    w.dead_letter("p-0", "poison").await;

    let refused = w.resizeq(&["dlq", "purge"], &[]).await;
    assert_eq!(
        refused.output.status.code(),
        Some(2),
        "{}",
        refused.stderr()
    );
    assert!(refused.stderr().contains("--yes"), "{}", refused.stderr());
    assert_eq!(w.depth_of(&w.dlq).await, (3, 0, 0));

    let purged = w.resizeq(&["dlq", "purge", "--yes"], &[]).await;
    purged.assert_success();
    let out = purged.stdout();
    assert!(out.contains("removed=3"), "{out}");
    assert!(out.contains("corrupt=2 poison=1"), "{out}");
    assert_eq!(w.depth_of(&w.dlq).await, (0, 0, 0));
}

#[tokio::test]
async fn the_dlq_is_found_from_the_redrive_policy_or_the_commands_fail_clearly() {
    let ctx = context!("the_dlq_is_found_from_the_redrive_policy_or_the_commands_fail_clearly");
    let w = world(ctx, "dlqn").await;
    // No queue.dlq_url: found from the queue's RedrivePolicy.
    w.dead_letter("c-0", "corrupt").await;
    let mut cmd = w.command(&["dlq", "stats", "--json"], &[]);
    cmd.env_remove("RESIZEQ_QUEUE__DLQ_URL");
    let out = cmd.output().await.expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["queue"],
        w.dlq.as_str(),
        "found through the RedrivePolicy"
    );
    assert_eq!(json["visible"], 1);

    let mut cmd = w.command(&["dlq", "stats"], &[]);
    cmd.env_remove("RESIZEQ_QUEUE__DLQ_URL")
        .env_remove("RESIZEQ_QUEUE__URL");
    let out = cmd.output().await.expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("queue.dlq_url") && stderr.contains("--dlq"),
        "{stderr}"
    );
}
