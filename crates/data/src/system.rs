//! What the machine can hold: a job whose planned memory is more than the memory available is refused up
//! front with the two figures, instead of aborting on an allocation failure part-way through.

/// Memory this process can still use, in bytes: the kernel's `MemAvailable`, or less where the cgroup's
/// remaining limit or the process's address-space limit (`ulimit -v`) leaves less; `None` where unknown.
pub fn available_memory_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let available = proc_kib("/proc/meminfo", "MemAvailable:")? * 1024;
        let read = |file: &str| -> Option<u64> {
            std::fs::read_to_string(format!("/sys/fs/cgroup/{file}"))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        let cgroup =
            read("memory.max").map(|max| max.saturating_sub(read("memory.current").unwrap_or(0)));
        Some(
            [cgroup, address_space_left()]
                .into_iter()
                .flatten()
                .fold(available, u64::min),
        )
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// The value of the `key` line (`VmHWM:`, `MemAvailable:`...) of a `/proc` file that reports kibibytes.
pub fn proc_kib(file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// What the address-space limit (`RLIMIT_AS`) leaves above the process's current size, if it has one.
#[cfg(target_os = "linux")]
fn address_space_left() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let limit: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max address space"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    let size = proc_kib("/proc/self/status", "VmSize:")? * 1024;
    Some(limit.saturating_sub(size))
}

/// `Err` naming `what`, the bytes it needs and the bytes available, when it needs more than is available.
pub fn ensure_memory(what: &str, needed: u64) -> Result<(), String> {
    match available_memory_bytes() {
        Some(available) if needed > available => Err(format!(
            "{what} needs {:.1} GiB of memory but this machine has {:.1} GiB available",
            needed as f64 / (1u64 << 30) as f64,
            available as f64 / (1u64 << 30) as f64
        )),
        _ => Ok(()),
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn an_impossible_need_is_refused_with_both_figures() {
        assert!(available_memory_bytes().is_some_and(|b| b > 0));
        let e = ensure_memory("this job", u64::MAX / 2).unwrap_err();
        assert!(
            e.contains("this job needs") && e.contains("GiB available"),
            "{e}"
        );
        assert!(ensure_memory("a small job", 1 << 20).is_ok());
    }
}
