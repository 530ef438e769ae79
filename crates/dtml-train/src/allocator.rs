//! Keeps freed activation memory in the process for the next step.
//!
//! A training step allocates and frees the same few hundred large buffers
//! every iteration. glibc serves blocks above its mmap threshold (128 KiB,
//! rising to at most 32 MiB) with fresh `mmap`s and unmaps them on free, so
//! every step faults in and zeroes its activation pages again: about a
//! tenth of a demo-size step on 2 cores. Serving everything from the heap
//! and never trimming it makes later steps reuse those pages. Peak memory
//! is unchanged; the process simply keeps its peak until it exits, as
//! PyTorch's caching allocator does.

/// Tunes glibc's allocator as above; call once at the start of a binary,
/// before the work starts. Does nothing on other allocators and platforms.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before
    // the process starts its worker threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
