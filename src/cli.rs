//! The `resizeq` subcommands that need no AWS: `resize` previews a config on local files.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::pipeline::Pipeline;

/// `resizeq resize FILE... --out DIR`: runs exactly the configured pipeline. A local file's key
/// is its file name. Every bad file gets one line on stderr; the good ones are still written.
/// Returns how many files failed.
pub fn resize(
    config: &Config,
    files: &[PathBuf],
    out_dir: &Path,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<usize> {
    let pipeline = Pipeline::new(config.pipeline_settings())?;
    let mut failed = 0;
    for file in files {
        if let Err(e) = resize_one(&pipeline, file, out_dir, stdout) {
            failed += 1;
            let _ = writeln!(stderr, "error: {}: {}", file.display(), e);
        }
    }
    Ok(failed)
}

fn resize_one(
    pipeline: &Pipeline,
    file: &Path,
    out_dir: &Path,
    stdout: &mut dyn Write,
) -> Result<()> {
    let data = std::fs::read(file).map_err(|e| Error::io(format!("cannot read: {e}")))?;
    let key = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::io("not a file name"))?;
    let started = Instant::now();
    let output = pipeline.process(&data, &key)?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    for variant in &output.variants {
        let path = out_dir.join(&variant.key);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("cannot create {}: {e}", parent.display())))?;
        }
        std::fs::write(&path, &variant.bytes)
            .map_err(|e| Error::io(format!("cannot write {}: {e}", path.display())))?;
        let _ = writeln!(
            stdout,
            "{}\t{}x{}\t{} bytes\t{:.1} ms",
            variant.key,
            variant.width,
            variant.height,
            variant.bytes.len(),
            ms
        );
    }
    Ok(())
}
