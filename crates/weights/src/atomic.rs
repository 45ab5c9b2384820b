//! Atomic file writes: everything effnet writes goes to a temporary file in the target's folder first and is
//! renamed into place only when complete, so an interruption never leaves a partial or corrupt file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Why an atomic write failed.
#[derive(Debug)]
pub struct AtomicWriteError {
    /// The target path.
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
}

impl std::fmt::Display for AtomicWriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for AtomicWriteError {}

/// The prefix of every temporary file effnet writes; the process id, a counter and a random tag follow.
const TEMP_PREFIX: &str = ".effnet-";

/// Writes `path` atomically: `write` fills a temporary file in the same folder (with the same extension, so
/// writers that pick a format from the name still work), which is then renamed over `path`. On failure the
/// temporary file is removed and `path` is untouched.
///
/// The temporary's name is short whatever `path`'s (a name near the file system's 255-byte limit still
/// works). A `path` that is a symbolic link is written through: its target is replaced, the link kept.
pub fn write_atomically_with<E: std::fmt::Display>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), AtomicWriteError> {
    let fail = |reason: String| AtomicWriteError {
        path: path.to_path_buf(),
        reason,
    };
    let target = link_target(path).map_err(|e| fail(format!("cannot follow the link: {e}")))?;
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if target.file_name().is_none() {
        return Err(fail("not a file name".into()));
    }
    let extension = target
        .extension()
        .map_or("part".into(), |e| e.to_string_lossy());
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let tmp = dir.join(format!(
        "{TEMP_PREFIX}{}-{}-{:08x}.tmp.{extension}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        random_tag()
    ));
    let result = write(&tmp).map_err(|e| fail(e.to_string())).and_then(|()| {
        std::fs::rename(&tmp, &target)
            .map_err(|e| fail(format!("cannot move the finished file into place: {e}")))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// 32 random bits (from the standard library's randomly seeded hasher): two processes with the same id
/// on different machines, writing into one shared folder, still pick different temporary names.
fn random_tag() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish() as u32
}

/// The file a write to `path` should replace: `path` itself, or the final target of a symbolic link.
fn link_target(path: &Path) -> std::io::Result<PathBuf> {
    let mut target = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&target) {
            Ok(m) if m.file_type().is_symlink() => {
                let next = std::fs::read_link(&target)?;
                target = match target.parent() {
                    Some(parent) if next.is_relative() => parent.join(next),
                    _ => next,
                };
            }
            _ => return Ok(target),
        }
    }
    Err(std::io::Error::other("too many levels of symbolic links"))
}

/// Removes the temporary files that interrupted effnet processes left in `dir` (those of processes no
/// longer running); returns how many. Only Linux can tell a live process from a dead one here, so
/// elsewhere nothing is removed.
pub fn remove_stale_temporaries(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            let pid = name
                .strip_prefix(TEMP_PREFIX)
                .filter(|rest| rest.contains(".tmp."))
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok());
            pid.is_some_and(|pid| !process_runs(pid)) && std::fs::remove_file(p).is_ok()
        })
        .count()
}

/// Whether process `pid` is running (always assumed on platforms that cannot tell).
fn process_runs(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
}

/// Writes `bytes` to `path` atomically (flushed to disk before the rename).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), AtomicWriteError> {
    write_atomically_with(path, |tmp| -> std::io::Result<()> {
        let mut f = std::fs::File::create(tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_leave_the_old_file_and_no_temporary() {
        let dir = std::env::temp_dir().join(format!("effnet-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("out.txt");
        write_atomically(&target, b"done").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "done");
        let failed = write_atomically_with(&target, |tmp| {
            std::fs::write(tmp, "half").map_err(|e| e.to_string())?;
            Err("interrupted".to_string())
        });
        assert!(failed.unwrap_err().to_string().contains("interrupted"));
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "done",
            "old content survives"
        );
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left"
        );
        assert!(write_atomically(&dir.join("no/such/dir/x"), b"x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn long_names_links_and_stale_temporaries() {
        let dir = std::env::temp_dir().join(format!("effnet-atomic2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A 250-byte name: the temporary beside it must not be longer than the file system allows.
        let long = dir.join(format!("{}.txt", "n".repeat(246)));
        write_atomically(&long, b"long").unwrap();
        assert_eq!(std::fs::read(&long).unwrap(), b"long");
        #[cfg(unix)]
        {
            let real = dir.join("real.txt");
            std::fs::write(&real, b"old").unwrap();
            let link = dir.join("link.txt");
            std::os::unix::fs::symlink("real.txt", &link).unwrap();
            write_atomically(&link, b"new").unwrap();
            assert!(std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink());
            assert_eq!(
                std::fs::read(&real).unwrap(),
                b"new",
                "written through the link"
            );
        }
        // A temporary of a process that no longer runs (pid 0 never names a user process on Linux).
        let stale = dir.join(".effnet-0-7.tmp.safetensors");
        std::fs::write(&stale, b"half").unwrap();
        let ours = dir.join(format!(".effnet-{}-9.tmp.json", std::process::id()));
        std::fs::write(&ours, b"in progress").unwrap();
        if cfg!(target_os = "linux") {
            assert_eq!(remove_stale_temporaries(&dir), 1);
            assert!(
                !stale.exists() && ours.exists(),
                "only the dead process's file goes"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
