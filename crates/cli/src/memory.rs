//! The process's own memory: its measured peak, and the allocator setting that keeps an inference's peak at
//! the plan's figure.

/// Peak resident memory of this process so far, in bytes; `None` where the platform does not report it.
///
/// On Linux this is the address space's high-water mark (`VmHWM`). `getrusage`'s maximum RSS would also
/// count the parent's memory at the moment it started this program (Linux carries the pre-`exec` peak
/// over), so a small run started by a large process would report the large one.
pub fn peak_rss_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        Some(effnet_data::system::proc_kib("/proc/self/status", "VmHWM:")? * 1024)
    }
    #[cfg(all(unix, not(target_os = "linux")))]
    {
        // SAFETY: `getrusage` fills the zeroed struct it is given and reads nothing else.
        let usage = unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            (libc::getrusage(libc::RUSAGE_SELF, &mut usage) == 0).then_some(usage)
        }?;
        let max = u64::try_from(usage.ru_maxrss).ok()?;
        // macOS reports bytes, the other Unixes kibibytes.
        Some(if cfg!(target_os = "macos") {
            max
        } else {
            max * 1024
        })
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Prints `effnet: peak memory N bytes (X MiB)` to stderr (`--report-memory`).
pub fn report_peak() {
    match peak_rss_bytes() {
        Some(peak) => eprintln!(
            "effnet: peak memory {peak} bytes ({:.1} MiB)",
            peak as f64 / (1u64 << 20) as f64
        ),
        None => eprintln!("effnet: peak memory is not reported on this platform"),
    }
}

/// Makes glibc's `malloc` serve every large block with its own mapping, returned to the system when freed.
///
/// By default glibc raises its mapping threshold to the size of each large block freed, and later blocks
/// below it come from the heap, where freed ones stay resident: preparing a network frees one temporary
/// per layer between the packed weights it keeps, and those holes stayed in the peak. Inference
/// allocates its large buffers once (weights, then the activation pool), so mapping them costs nothing
/// per image. Training allocates tensors every step and keeps the default (mapping every one of them
/// slows a step down).
pub fn map_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes the allocator's tuning; 128 KiB is glibc's own default threshold.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
