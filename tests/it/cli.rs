//! The `resizeq` binary as a user runs it: `resize` on local files and `config check/show`.

use crate::common::fixture_path;
use std::path::Path;
use std::process::Command;

fn resizeq() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_resizeq"));
    // Tests must not pick up a developer's resizeq.toml or RESIZEQ_ variables.
    cmd.current_dir(std::env::temp_dir());
    for (key, _) in std::env::vars() {
        if key.starts_with("RESIZEQ_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

#[test]
fn resize_writes_variants_under_their_keys_and_reports_bad_files() {
    let out = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cat = dir.path().join("cat.heic");
    std::fs::copy(fixture_path("tiny.heic"), &cat).unwrap();
    let result = resizeq()
        .arg("resize")
        .arg(&cat)
        .arg(fixture_path("page.jpg"))
        .arg(fixture_path("tiny.png"))
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(
        result.status.code(),
        Some(1),
        "a bad file fails the run\n{stdout}\n{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line per bad file: {stderr}");
    assert!(
        stderr.contains("page.jpg") && stderr.contains("unsupported"),
        "{stderr}"
    );
    for key in [
        "80/cat.heic.jpg",
        "500/cat.heic.jpg",
        "80/tiny.png.jpg",
        "500/tiny.png.jpg",
    ] {
        assert!(out.path().join(key).is_file(), "{key} written\n{stdout}");
        assert!(stdout.contains(key), "{key} reported\n{stdout}");
    }
    assert!(stdout.contains("80/cat.heic.jpg\t80x53\t"), "{stdout}");
    assert!(stdout.contains("500/cat.heic.jpg\t120x80\t"), "{stdout}");
    assert!(!out.path().join("80/page.jpg.jpg").exists());
}

#[test]
fn resize_uses_the_config_file() {
    let out = tempfile::tempdir().unwrap();
    let config = out.path().join("r.toml");
    std::fs::write(&config, "[[variants]]\nname = \"sq\"\nwidth = 32\nheight = 32\nfit = \"cover\"\nformat = \"png\"\n[output]\nkey_template = \"{name}/{stem}.{ext}\"\n").unwrap();
    let result = resizeq()
        .args(["--config".as_ref(), config.as_os_str(), "resize".as_ref()])
        .arg(fixture_path("tiny.jpg"))
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let png = image::open(out.path().join("sq/tiny.png")).unwrap();
    assert_eq!((png.width(), png.height()), (32, 32));
}

#[test]
fn config_check_names_the_bad_key_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[limits]\nmax_pixel = 10\n").unwrap();
    let result = resizeq()
        .arg("--config")
        .arg(&config)
        .args(["config", "check"])
        .output()
        .unwrap();
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("max_pixel"), "{stderr}");

    let result = resizeq()
        .env("RESIZEQ_LIMITS__MAX_FRAMES", "lots")
        .args(["config", "check"])
        .output()
        .unwrap();
    assert!(!result.status.success());
    assert!(String::from_utf8_lossy(&result.stderr).contains("limits.max_frames"));
}

#[test]
fn config_show_prints_the_effective_values() {
    let result = resizeq()
        .env("RESIZEQ_LIMITS__MAX_FRAMES", "12")
        .args(["config", "show"])
        .output()
        .unwrap();
    assert!(result.status.success());
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(stdout.contains("max_frames = 12"), "{stdout}");
    assert!(
        stdout.contains("key_template = \"{width}/{key}.{ext}\""),
        "{stdout}"
    );
}

#[test]
fn config_show_says_the_retry_schedule() {
    let result = resizeq()
        .env("RESIZEQ_QUEUE__RETRY_WINDOW_SECS", "3600")
        .args(["config", "show"])
        .output()
        .unwrap();
    assert!(result.status.success());
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        stdout.contains(
            "#   maxReceiveCount 5: retries after 8m34s, 17m8s, 34m17s (1h in all); receive 4 \
             dead-letters as transient_exhausted (receive 5 kept in reserve)\n"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("retry_window_secs = 3600"), "{stdout}");
}

#[test]
fn the_annotated_example_config_is_valid_and_matches_the_defaults() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/resizeq.example.toml");
    let check = resizeq()
        .arg("--config")
        .arg(&example)
        .args(["config", "check"])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let from_file = resizeq()
        .arg("--config")
        .arg(&example)
        .args(["config", "show"])
        .output()
        .unwrap();
    let defaults = resizeq().args(["config", "show"]).output().unwrap();
    // The worker's part only: the sidecar's [presign] tables (last in the output) are the
    // sidecar's to check (resizeq::presign::config tests).
    let names = |out: &[u8]| {
        let text = String::from_utf8_lossy(out);
        let worker_part = text.split("\n[presign").next().unwrap_or_default();
        worker_part
            .replace("name = \"80\"\n", "")
            .replace("name = \"500\"\n", "")
    };
    assert_eq!(
        names(&from_file.stdout),
        names(&defaults.stdout),
        "the example documents the defaults"
    );
}
