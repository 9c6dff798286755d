//! Returning memory after large jobs.
//!
//! jemalloc serves every allocation of the process (Rust's and the C codecs', through its
//! unprefixed `malloc`) and keeps freed pages for reuse, which saves first-touch page faults
//! on the next image. But decoders need very different shapes of memory (libjpeg's
//! whole-image coefficient arrays for a progressive JPEG, libheif's planes, a PNG's RGBA
//! frame), and pages kept from one shape are not always reusable by the next: RSS creeps
//! up towards the sum of the largest jobs instead of the largest one. Purging after a large
//! job keeps the process near one job's peak: over the corpus, peak RSS 126 MiB instead of
//! 141–144 MiB, with no measurable loss of throughput (1.50 s vs 1.55 s per corpus pass, one
//! core; the next large job re-faults its pages, but a large job's decode dwarfs that).
//!
//! Shared libraries (Debian's libde265 for HEVC) bind `malloc` to glibc, not to our jemalloc,
//! and glibc keeps their freed heap: about 45 MB after one 12 MP HEIC. `malloc_trim` hands
//! that back too.

/// Sources at least this large (in pixels) purge freed pages when done.
pub const LARGE_JOB_PIXELS: u64 = 8_000_000;

/// Returns the freed ("dirty") pages of every arena to the kernel. Live memory is untouched,
/// so this is safe while other threads work.
pub fn release_freed_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            /// glibc's: returns free heap memory of every arena to the kernel.
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: glibc's malloc_trim has no preconditions.
        unsafe {
            malloc_trim(0);
        }
    }
    // "arena.<MALLCTL_ARENAS_ALL>.purge"; MALLCTL_ARENAS_ALL is 4096 in jemalloc 5.
    let name = b"arena.4096.purge\0";
    // SAFETY: a void mallctl: no old or new value pointers.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
}
