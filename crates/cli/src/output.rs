//! Shared output helpers: human-readable numbers, tables, JSON printing and atomic file writes.

use anyhow::{Context, Result};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use serde::Serialize;
use std::path::Path;

/// `5288548` -> `5,288,548`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Multiply-adds in G with three decimals (`0.386 G`).
pub fn giga(n: u64) -> String {
    format!("{:.3} G", n as f64 / 1e9)
}

/// A multiplier with at most four decimals (`1.1968`, `1.1`).
pub fn decimal(x: f64) -> String {
    let s = format!("{x:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Bytes in binary units (`21.4 MiB`).
pub fn bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

/// A table with the project's style and the given header.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_header(header.to_vec());
    t
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json(value: &impl Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Writes `path` atomically: `write` fills a temporary file in the same folder (same extension, so
/// format-sniffing writers still work), which is then renamed over `path`.
pub fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id(),
        ext(path)
    ));
    let result = write(&tmp).and_then(|()| {
        std::fs::rename(&tmp, path).with_context(|| {
            format!(
                "{}: cannot move the finished file into place",
                path.display()
            )
        })
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn ext(path: &Path) -> String {
    path.extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| "part".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(5288548), "5,288,548");
        assert_eq!(thousands(999), "999");
        assert_eq!(giga(385_852_000), "0.386 G");
        assert_eq!(bytes(6_021_120), "5.7 MiB");
        assert_eq!(bytes(12), "12 B");
        assert_eq!(decimal(1.1968100061193032), "1.1968");
        assert_eq!(decimal(2.0), "2");
    }

    #[test]
    fn atomic_writes_leave_nothing_behind_on_failure() {
        let dir = std::env::temp_dir().join(format!("effnet-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("out.txt");
        write_atomically(&target, |tmp| Ok(std::fs::write(tmp, "done")?)).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "done");
        let failed = write_atomically(&target, |tmp| {
            std::fs::write(tmp, "half")?;
            anyhow::bail!("interrupted")
        });
        assert!(failed.is_err());
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
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
