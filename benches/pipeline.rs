//! The Rust side of `scripts/bench`: runs the default pipeline over the given files and prints
//! one JSON line per file per round, `{"file":…,"round":…,"ms":…}` (bytes in memory to encoded
//! variants in memory), plus the split of the time by stage. Writes each file's 500 px output
//! to `--out DIR/<file name>.500.jpg` for the SSIM comparison.
//!
//! `cargo bench --bench pipeline -- --rounds 3 --out target/bench/resizeq FILE...`
//!
//! The output table: `--formats jpeg,webp,avif` (each `FORMAT[:QUALITY[:SPEED[:ENCODER]]]`,
//! speed and encoder for AVIF) also renders, outside the timed default run, one 500 px variant
//! per format, adding `<format>_bytes` and `<format>_encode_ms` to the line and writing
//! `DIR/<file name>.500.<format>.<ext>`; and times the default variants plus a 500 px WebP and
//! AVIF together (`set_ms`: the cost of a `<picture>` set beside the JPEG-only `ms`).

use std::path::PathBuf;
use std::time::Instant;

use resizeq::pipeline::{OutputFormat, Pipeline, PipelineSettings, VariantSpec};

/// One 500 px variant of one format, in a pipeline of its own.
struct FormatRun {
    label: String,
    pipeline: Pipeline,
}

/// `jpeg`, `webp:75`, `avif:60:7:aom`, ...
fn format_run(spec: &str) -> FormatRun {
    let mut parts = spec.split(':');
    let format = match parts.next() {
        Some("jpeg") => OutputFormat::Jpeg,
        Some("webp") => OutputFormat::Webp,
        Some("avif") => OutputFormat::Avif,
        Some("png") => OutputFormat::Png,
        other => panic!("--formats: unknown format {other:?}"),
    };
    let mut variant = VariantSpec::jpeg_width(500);
    variant.format = format;
    variant.quality = parts
        .next()
        .map_or(format.default_quality(), |q| q.parse().expect("quality"));
    let mut settings = PipelineSettings {
        variants: vec![variant],
        ..Default::default()
    };
    if let Some(speed) = parts.next() {
        settings.output.avif.speed = speed.parse().expect("speed");
    }
    if let Some(encoder) = parts.next() {
        settings.output.avif.encoder = encoder.into();
    }
    FormatRun {
        label: spec.replace(':', "_"),
        pipeline: Pipeline::new(settings).expect("valid --formats"),
    }
}

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let mut rounds = 1usize;
    let mut out: Option<PathBuf> = None;
    let mut files = Vec::new();
    let mut formats: Vec<FormatRun> = Vec::new();
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
            "--formats" => {
                formats = args
                    .next()
                    .expect("--formats LIST")
                    .split(',')
                    .map(format_run)
                    .collect()
            }
            "--bench" => {} // cargo bench passes this to every bench target
            _ => files.push(PathBuf::from(arg)),
        }
    }
    let pipeline = Pipeline::new(PipelineSettings::default()).expect("default settings are valid");
    // The default variants plus a 500 px WebP and AVIF: what a <picture> set costs.
    let set = (!formats.is_empty()).then(|| {
        let mut settings = PipelineSettings::default();
        for format in [OutputFormat::Webp, OutputFormat::Avif] {
            let mut v = VariantSpec::jpeg_width(500);
            v.format = format;
            v.quality = format.default_quality();
            settings.variants.push(v);
        }
        Pipeline::new(settings).expect("valid set")
    });
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
                    let mut line = serde_json::json!({
                        "file": name,
                        "round": round,
                        "ms": ms,
                        "decode_ms": t.decode.as_secs_f64() * 1000.0,
                        "resize_ms": t.resize.as_secs_f64() * 1000.0,
                        "encode_ms": t.encode.as_secs_f64() * 1000.0,
                    });
                    // Untimed by `ms`: the output table's runs.
                    if let Some(set) = &set {
                        let started = Instant::now();
                        set.process(data, name)
                            .expect("the set renders what the default did");
                        line["set_ms"] = (started.elapsed().as_secs_f64() * 1000.0).into();
                    }
                    for run in &formats {
                        let out1 = run.pipeline.process(data, name).expect("format renders");
                        let v = &out1.variants[0];
                        line[format!("{}_bytes", run.label)] = v.bytes.len().into();
                        line[format!("{}_encode_ms", run.label)] =
                            (out1.timings.encode.as_secs_f64() * 1000.0).into();
                        if let (Some(dir), 0) = (&out, round) {
                            let file = format!("{name}.500.{}.{}", run.label, v.format.extension());
                            std::fs::write(dir.join(file), &v.bytes).expect("write output");
                        }
                    }
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
