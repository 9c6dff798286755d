//! Hostile inputs are refused from their headers, without allocating what they claim. Its own
//! test binary, because it counts every allocation of the process: one test, one thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use resizeq::pipeline::{Pipeline, PipelineSettings};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        PEAK.fetch_max(live, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn hostile_headers_are_refused_without_allocating_their_claims() {
    let pipeline = Pipeline::new(PipelineSettings::default()).unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    // (file, what its header claims in bytes of RGB pixels or frames)
    for (name, claimed) in [
        ("huge-dims.png", 100_000u64 * 100_000 * 3),
        ("huge-dims.jpg", 60_000u64 * 60_000 * 3),
        ("many-frames.gif", 5_000u64 * 16 * 16 * 4),
    ] {
        let data = std::fs::read(dir.join(name)).unwrap();
        let before = LIVE.load(Ordering::SeqCst);
        PEAK.store(before, Ordering::SeqCst);
        let started = std::time::Instant::now();
        let err = pipeline.process(&data, name).expect_err(name);
        let elapsed = started.elapsed();
        let grew = PEAK.load(Ordering::SeqCst) - before;
        assert!(err.is_permanent(), "{name}: {err}");
        // Rust-side allocations only (the C decoders are refused before they are called):
        // a few KiB of parsing state, never the claimed size.
        assert!(
            grew < 1 << 20,
            "{name}: allocated {grew} bytes while refusing (claims {claimed})"
        );
        assert!(
            elapsed.as_millis() < 2_000,
            "{name}: took {elapsed:?} to refuse"
        );
    }
}
