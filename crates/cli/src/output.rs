//! Shared output helpers: human-readable numbers, tables, JSON printing, and checks of output paths.

use anyhow::Result;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use npyz::WriterBuilder;
use serde::Serialize;
use std::path::Path;

/// `5288548` -> `5,288,548`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
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

/// A float32 `.npy` array of `shape` holding `values` in row-major order.
pub fn npy_f32(shape: &[u64], values: impl IntoIterator<Item = f32>) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut writer = npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .shape(shape)
        .writer(&mut bytes)
        .begin_nd()?;
    writer.extend(values)?;
    writer.finish()?;
    Ok(bytes)
}

/// The folder `out` is written in.
pub fn folder_of(out: &Path) -> &Path {
    out.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Refuses, before any work, an output file whose folder is missing or that is a folder.
pub fn check_output_file(out: &Path) -> Result<()> {
    let folder = folder_of(out);
    if !folder.is_dir() {
        anyhow::bail!("{}: the output folder does not exist", folder.display());
    }
    if out.is_dir() {
        anyhow::bail!("{}: is a folder, not an output file", out.display());
    }
    Ok(())
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
}
