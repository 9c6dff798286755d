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
    let inputs: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|f| {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            (
                name,
                std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())),
            )
        })
        .collect();
    if let Some(dir) = &out {
        std::fs::create_dir_all(dir).expect("create --out");
    }
    for round in 0..rounds {
        for (name, data) in &inputs {
            let started = Instant::now();
            let result = pipeline.process(data, name);
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            match result {
                Ok(output) => {
                    let t = output.timings;
                    println!(
                        "{{\"file\":{:?},\"round\":{round},\"ms\":{ms:.3},\"decode_ms\":{:.3},\"resize_ms\":{:.3},\"encode_ms\":{:.3}}}",
                        name,
                        t.decode.as_secs_f64() * 1000.0,
                        t.resize.as_secs_f64() * 1000.0,
                        t.encode.as_secs_f64() * 1000.0
                    );
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
                    "{{\"file\":{:?},\"round\":{round},\"error\":{:?}}}",
                    name,
                    e.to_string()
                ),
            }
        }
    }
}
