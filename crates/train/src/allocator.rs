//! The C allocator's policy for training processes.

/// Keeps freed memory in the process for the next allocation instead of handing it back to the system,
/// with glibc; call it at start-up, before other threads exist, in a process that trains.
///
/// A training step frees and allocates the same large activation and gradient buffers every step, and
/// glibc serves each buffer above its mapping threshold (at most 32 MiB) with a fresh mapping whose pages
/// the kernel faults in and zeroes again, step after step. Served from the heap and never trimmed, the
/// buffers are reused instead, and a training step's peak stays the same. A process that only runs
/// inference should not call it: the engine allocates its arena once, and the heap's fragments from
/// loading the weights would outlive the loading and raise the peak above the plan. With other C
/// libraries and systems this does nothing.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets the allocator's parameters, and the caller does so before other
    // threads exist. A refused setting leaves glibc's default, which is only slower.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
    }
}
