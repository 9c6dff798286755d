//! The Rust side of `scripts/bench`: runs the default pipeline over the given files and prints
//! one JSON line per file per round, `{"file":…,"round":…,"ms":…}` (bytes in memory to encoded
//! variants in memory), plus the split of the time by stage. Writes each file's 500 px output
//! to `--out DIR/<file name>.500.jpg` for the SSIM comparison.
//!
//! `cargo bench --bench pipeline -- --rounds 3 --out target/bench/resizeq FILE...`

use std::path::PathBuf;
use std::time::Instant;

use resizeq::pipeline::{Pipeline, PipelineSettings};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let mut rounds = 1usize;
    let mut out: Option<PathBuf> = None;
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--rounds N")
            }
            "--out" => out = Some(PathBuf::from(args.next().expect("--out DIR"))),
            "--bench" => {} // cargo bench passes this to every bench target
            _ => files.push(PathBuf::from(arg)),
        }
    }
    let pipeline = Pipeline::new(PipelineSettings::default()).expect("default settings are valid");
    if let Some(dir) = &out {
        std::fs::create_dir_all(dir).expect("create --out");
    }
    // RESIZEQ_BENCH_RSS=1: resident and peak memory after each file, on stderr.
    let show_rss = std::env::var_os("RESIZEQ_BENCH_RSS").is_some();
    for round in 0..rounds {
        for file in &files {
            // Read each file just before its timed section, as the sharp side does, so that
            // peak RSS compares the pipelines rather than how many inputs sit in memory.
            let name = &file.file_name().unwrap().to_string_lossy().into_owned();
            let data = &std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let started = Instant::now();
            let result = pipeline.process(data, name);
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            match result {
                Ok(output) => {
                    let t = output.timings;
                    let line = serde_json::json!({
                        "file": name,
                        "round": round,
                        "ms": ms,
                        "decode_ms": t.decode.as_secs_f64() * 1000.0,
                        "resize_ms": t.resize.as_secs_f64() * 1000.0,
                        "encode_ms": t.encode.as_secs_f64() * 1000.0,
                    });
                    println!("{line}");
                    if let (Some(dir), Some(v500)) =
                        (&out, output.variants.iter().find(|v| v.name == "500"))
                    {
                        if round == 0 {
                            std::fs::write(dir.join(format!("{name}.500.jpg")), &v500.bytes)
                                .expect("write output");
                        }
                    }
                }
                Err(e) => println!(
                    "{}",
                    serde_json::json!({"file": name, "round": round, "error": e.to_string()})
                ),
            }
            if show_rss {
                let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
                let field = |key: &str| {
                    status
                        .lines()
                        .find(|l| l.starts_with(key))
                        .map_or(String::new(), |l| l[key.len()..].trim().to_string())
                };
                eprintln!(
                    "{name}: VmRSS {} VmHWM {}",
                    field("VmRSS:"),
                    field("VmHWM:")
                );
            }
        }
    }
}
