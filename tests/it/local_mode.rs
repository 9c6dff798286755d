//! Local mode end to end: a temp folder instead of S3 + SQS, the real pipeline and file watcher.

use crate::common::fixture_path;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use resizeq::config::Config;
use resizeq::ports::ETag;
use resizeq::worker::local::run_local;
use resizeq::worker::Mode;
use tokio_util::sync::CancellationToken;

fn put_fixture(root: &Path, name: &str, dest: &str) {
    let path = root.join(dest);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::copy(fixture_path(name), path).unwrap();
}

fn config(root: &Path) -> Config {
    let mut config = Config::default();
    config.worker.local_root = root.to_str().unwrap().to_string();
    config.queue.wait_time_secs = 1;
    config
}

async fn run_until_empty(root: &Path) {
    tokio::time::timeout(
        Duration::from_secs(60),
        run_local(&config(root), Mode::UntilEmpty, CancellationToken::new()),
    )
    .await
    .expect("run_local did not finish")
    .expect("run_local failed");
}

fn dimensions(path: &Path) -> (u32, u32) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (img.width(), img.height())
}

/// Every file under `dir`, relative, sorted, with its bytes and mtime.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>, SystemTime)> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>, SystemTime)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                walk(base, &path, out);
            } else {
                let rel = path
                    .strip_prefix(base)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                let mtime = entry.metadata().unwrap().modified().unwrap();
                out.push((rel, std::fs::read(&path).unwrap(), mtime));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Sets the mtime of every file under `dir` to 2001-09-09.
fn backdate(dir: &Path) {
    let past = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            backdate(&entry.path());
        } else {
            let file = std::fs::File::options()
                .write(true)
                .open(entry.path())
                .unwrap();
            file.set_modified(past).unwrap();
        }
    }
}

fn failed_lines(root: &Path, bucket: &str) -> Vec<serde_json::Value> {
    match std::fs::read_to_string(root.join(format!("{bucket}-failed.jsonl"))) {
        Ok(text) => text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_present_at_start_get_their_variants_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    put_fixture(root, "tiny.jpg", "photos/tiny.jpg");
    put_fixture(root, "tiny.png", "photos/a b/c.png");
    // Not sources: partial uploads, dotfiles, outputs of another run.
    std::fs::write(root.join("photos/upload.jpg.tmp"), b"partial").unwrap();
    std::fs::write(root.join("photos/.DS_Store"), b"junk").unwrap();

    run_until_empty(root).await;

    let out = root.join("photos-resized");
    let mut names: Vec<String> = snapshot(&out).into_iter().map(|f| f.0).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "500/a b/c.png.jpg",
            "500/tiny.jpg.jpg",
            "80/a b/c.png.jpg",
            "80/tiny.jpg.jpg"
        ]
    );
    assert_eq!(dimensions(&out.join("80/tiny.jpg.jpg")), (80, 53));
    assert_eq!(dimensions(&out.join("500/tiny.jpg.jpg")), (120, 80));
    assert_eq!(dimensions(&out.join("80/a b/c.png.jpg")), (80, 53));
    assert_eq!(dimensions(&out.join("500/a b/c.png.jpg")), (120, 80));
    // Metadata lives outside the output folder.
    let sidecar: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join(".resizeq/meta/photos-resized/80/tiny.jpg.jpg.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(sidecar["metadata"]["resizeq-source-key"], "tiny.jpg");
    assert_eq!(sidecar["content_type"], "image/jpeg");
    assert!(failed_lines(root, "photos").is_empty());
    // Nothing was written into the source folder.
    let sources: Vec<String> = snapshot(&root.join("photos"))
        .into_iter()
        .map(|f| f.0)
        .collect();
    assert_eq!(
        sources,
        [".DS_Store", "a b/c.png", "tiny.jpg", "upload.jpg.tmp"]
    );

    // A second run finds everything current and writes nothing: with every file's mtime set
    // in the past, a rewrite of the same bytes would show as a new mtime.
    backdate(root);
    let before = snapshot(root);
    run_until_empty(root).await;
    assert_eq!(snapshot(root), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_file_is_listed_with_its_reason_and_the_run_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    put_fixture(root, "page.jpg", "photos/bad.jpg");
    put_fixture(root, "tiny.jpg", "photos/good.jpg");

    run_until_empty(root).await;

    let failed = failed_lines(root, "photos");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["key"], "bad.jpg");
    assert_eq!(failed[0]["bucket"], "photos");
    assert_eq!(failed[0]["error_kind"], "unsupported");
    assert!(
        failed[0]["error_reason"]
            .as_str()
            .unwrap()
            .contains("bad.jpg"),
        "{failed:?}"
    );
    assert!(failed[0]["failed_at"].as_str().unwrap().starts_with("20"));
    assert!(root.join("photos-resized/80/good.jpg.jpg").is_file());
    assert!(!root.join("photos-resized/80/bad.jpg.jpg").exists());

    // Not tried (nor listed) again while its content is the same.
    run_until_empty(root).await;
    assert_eq!(failed_lines(root, "photos").len(), 1);
}

/// `run_local` in `Mode::Forever` on `root`, until [`Forever::stop`].
struct Forever {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<resizeq::Result<()>>,
}

impl Forever {
    fn start(root: &Path) -> Forever {
        let shutdown = CancellationToken::new();
        let config = config(root);
        let stop = shutdown.clone();
        let task = tokio::spawn(async move { run_local(&config, Mode::Forever, stop).await });
        Forever { shutdown, task }
    }

    /// Shuts it down; fails the test if it does not stop within 30 s or fails.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("run_local did not stop")
            .unwrap()
            .expect("run_local failed");
    }
}

/// Waits (up to 60 s) until `path` is a file (`exists`) or is gone.
async fn wait_for_file(path: PathBuf, exists: bool) {
    let what = if exists { "appear" } else { "go away" };
    crate::common::wait_until(&format!("{} to {what}", path.display()), || {
        let path = path.clone();
        async move { path.is_file() == exists }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_file_removes_its_variants() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    put_fixture(&root, "tiny.jpg", "photos/gone.jpg");
    put_fixture(&root, "tiny.png", "photos/kept.png");
    let worker = Forever::start(&root);
    // The application is told, in `<bucket>-events.jsonl`.
    let events_file = root.join("photos-events.jsonl");
    let events_in_file = || {
        let text = std::fs::read_to_string(&events_file).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|e| {
                (
                    e["type"].as_str().unwrap().to_string(),
                    e["subject"].as_str().unwrap().to_string(),
                )
            })
            .collect::<Vec<_>>()
    };
    // Both uploads announced before the delete: the `ready` event follows the variants, and a
    // delete that overtook it would (rightly) leave `gone.jpg` unannounced.
    crate::common::wait_until("both ready events are written", || async {
        events_in_file()
            .iter()
            .filter(|(t, _)| t == "resizeq.variants.ready")
            .count()
            == 2
    })
    .await;
    for variant in ["80/gone.jpg.jpg", "500/gone.jpg.jpg", "500/kept.png.jpg"] {
        assert!(
            root.join("photos-resized").join(variant).is_file(),
            "{variant}"
        );
    }

    std::fs::remove_file(root.join("photos/gone.jpg")).unwrap();
    for variant in ["80/gone.jpg.jpg", "500/gone.jpg.jpg"] {
        wait_for_file(root.join("photos-resized").join(variant), false).await;
        let sidecar = root.join(format!(".resizeq/meta/photos-resized/{variant}.json"));
        assert!(!sidecar.exists(), "{}", sidecar.display());
    }
    assert!(root.join("photos-resized/80/kept.png.jpg").is_file());
    assert!(root.join("photos-resized/500/kept.png.jpg").is_file());
    crate::common::wait_until("the deleted event is written", || async {
        events_in_file()
            .iter()
            .any(|(t, _)| t == "resizeq.variants.deleted")
    })
    .await;
    let mut events = events_in_file();
    events.sort();
    assert_eq!(
        events,
        [
            (
                "resizeq.variants.deleted".to_string(),
                "gone.jpg".to_string()
            ),
            ("resizeq.variants.ready".to_string(), "gone.jpg".to_string()),
            ("resizeq.variants.ready".to_string(), "kept.png".to_string()),
        ]
    );

    worker.stop().await;
    assert!(failed_lines(&root, "photos").is_empty());
}

/// A folder moved out of the bucket is one event for the folder, none for its files; and a file
/// deleted while resizeq was not running has no event at all. Both leave variants without a
/// source, which go too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variants_of_a_folder_moved_away_or_of_files_deleted_while_stopped_go() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    put_fixture(&root, "tiny.jpg", "photos/album/a.jpg");
    put_fixture(&root, "tiny.png", "photos/b.png");
    put_fixture(&root, "tiny.jpg", "photos/c.jpg");
    run_until_empty(&root).await;
    let variant = |key: &str| root.join("photos-resized/80").join(format!("{key}.jpg"));
    assert!(variant("c.jpg").is_file());

    // Deleted while stopped: the next start finds the orphan.
    std::fs::remove_file(root.join("photos/c.jpg")).unwrap();
    let worker = Forever::start(&root);
    wait_for_file(variant("c.jpg"), false).await;

    // The album goes to the trash (outside the root).
    std::fs::rename(root.join("photos/album"), dir.path().join("trash")).unwrap();
    wait_for_file(variant("album/a.jpg"), false).await;
    assert!(variant("b.png").is_file(), "only the orphans go");

    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forever_mode_processes_files_as_they_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    put_fixture(&root, "tiny.jpg", "photos/first.jpg");
    let worker = Forever::start(&root);

    let wait_for = |path: PathBuf| wait_for_file(path, true);
    // Present at start.
    wait_for(root.join("photos-resized/80/first.jpg.jpg")).await;

    // Dropped in while running, in an existing folder and in a new one.
    put_fixture(&root, "tiny.png", "photos/new.png");
    put_fixture(&root, "tiny.jpg", "photos/2024/may/deep.jpg");
    wait_for(root.join("photos-resized/80/new.png.jpg")).await;
    wait_for(root.join("photos-resized/500/new.png.jpg")).await;
    wait_for(root.join("photos-resized/80/2024/may/deep.jpg.jpg")).await;

    // Overwritten in place: the variants are redone from the new content.
    std::fs::copy(
        fixture_path("small-60x40.jpg"),
        root.join("photos/first.jpg"),
    )
    .unwrap();
    let new_etag = ETag::of_bytes(&std::fs::read(fixture_path("small-60x40.jpg")).unwrap());
    let sidecar = root.join(".resizeq/meta/photos-resized/500/first.jpg.jpg.json");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&sidecar).unwrap()).unwrap();
        if meta["metadata"]["resizeq-source-etag"] == new_etag.as_str() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not redone: {meta}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        dimensions(&root.join("photos-resized/500/first.jpg.jpg")),
        (60, 40)
    );

    // A new bucket folder.
    put_fixture(&root, "tiny.jpg", "albums/x.jpg");
    wait_for(root.join("albums-resized/80/x.jpg.jpg")).await;

    // Made from the complete file.
    assert_eq!(
        dimensions(&root.join("photos-resized/80/new.png.jpg")),
        (80, 53)
    );
    let sidecar = root.join(".resizeq/meta/photos-resized/80/new.png.jpg.json");
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(sidecar).unwrap()).unwrap();
    let png_etag = ETag::of_bytes(&std::fs::read(fixture_path("tiny.png")).unwrap());
    assert_eq!(meta["metadata"]["resizeq-source-etag"], png_etag.as_str());

    worker.stop().await;
    // Our outputs never fed back in.
    assert!(!root.join("photos-resized-resized").exists());
    assert!(failed_lines(&root, "photos").is_empty());
}
