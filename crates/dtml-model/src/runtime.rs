//! Process-wide settings under which candle's CPU work runs fast. A binary
//! applies them once, first thing in `main`.
//!
//! - Allocator: a training step allocates and frees the same few hundred
//!   large buffers every iteration. glibc serves blocks above its mmap
//!   threshold (128 KiB, rising to at most 32 MiB) with fresh `mmap`s and
//!   unmaps them on free, so every step faults in and zeroes its activation
//!   pages again (about a tenth of a demo-size step on 2 cores). Serving
//!   everything from the heap and never trimming it lets later steps reuse
//!   those pages. Peak memory is unchanged; the process keeps its peak until
//!   it exits, as PyTorch's caching allocator does.
//! - candle's element-wise pool: candle 0.11 runs element-wise ops on its
//!   own pool of spin-waiting threads, beside the rayon pool that runs our
//!   kernels. The two pools compete for the same cores, and on 2 cores the
//!   spinning took about a tenth of a training step. With
//!   `CANDLE_NUM_THREADS=1` (unless the user set it) element-wise ops run on
//!   the calling thread and every core stays with the rayon kernels.

/// Applies the settings above.
///
/// # Safety
/// Call before the process starts any other thread: it writes the
/// environment, which another thread may be reading.
pub unsafe fn prepare_process() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: the caller guarantees no other thread exists yet.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
}
