//! Atomic file writes: everything effnet writes goes to a temporary file in the target's folder first and is
//! renamed into place only when complete, so an interruption never leaves a partial or corrupt file.

use std::io::Write;
use std::path::{Path, PathBuf};

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

/// Writes `path` atomically: `write` fills a temporary file in the same folder (with the same extension, so
/// writers that pick a format from the name still work), which is then renamed over `path`. On failure the
/// temporary file is removed and `path` is untouched.
pub fn write_atomically_with<E: std::fmt::Display>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), AtomicWriteError> {
    let fail = |reason: String| AtomicWriteError {
        path: path.to_path_buf(),
        reason,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| fail("not a file name".into()))?
        .to_string_lossy();
    let extension = path
        .extension()
        .map_or("part".into(), |e| e.to_string_lossy());
    let tmp = dir.join(format!(".{name}.{}.tmp.{extension}", std::process::id()));
    let result = write(&tmp).map_err(|e| fail(e.to_string())).and_then(|()| {
        std::fs::rename(&tmp, path)
            .map_err(|e| fail(format!("cannot move the finished file into place: {e}")))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
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
}
