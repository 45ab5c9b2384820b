//! What the local caches hold (`effnet weights cache`): the hub repositories under `HF_HUB_CACHE` and
//! torchvision's checkpoints under `$TORCH_HOME/hub/checkpoints`; pruning removes interrupted downloads and
//! blobs no snapshot points to.

use crate::hf::HfSettings;
use crate::torchvision::torch_home;
use crate::{HubError, Result};
use serde::Serialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// One cached repository or checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CacheEntry {
    /// The name `--weights` takes for it.
    pub name: String,
    /// Its folder or file.
    pub path: PathBuf,
    /// Bytes on disk (blobs, partial downloads included).
    pub bytes: u64,
    /// Snapshots (commits) held, for a hub repository.
    pub snapshots: Vec<String>,
    /// Bytes of interrupted downloads.
    pub partial_bytes: u64,
}

fn size_of(path: &Path) -> u64 {
    std::fs::symlink_metadata(path).map_or(0, |m| if m.is_file() { m.len() } else { 0 })
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Every cached repository and checkpoint.
pub fn entries(settings: &HfSettings) -> Vec<CacheEntry> {
    let mut out = Vec::new();
    for folder in names(&settings.cache) {
        let Some(repo) = folder.strip_prefix("models--") else {
            continue;
        };
        let path = settings.cache.join(&folder);
        let blobs = path.join("blobs");
        let (mut bytes, mut partial_bytes) = (0, 0);
        for blob in names(&blobs) {
            let size = size_of(&blobs.join(&blob));
            bytes += size;
            if blob.ends_with(".incomplete") {
                partial_bytes += size;
            }
        }
        out.push(CacheEntry {
            name: format!("hf:{}", repo.replacen("--", "/", 1)),
            snapshots: names(&path.join("snapshots")),
            path,
            bytes,
            partial_bytes,
        });
    }
    let checkpoints = torch_home().join("hub").join("checkpoints");
    for file in names(&checkpoints) {
        let Some(weights) = crate::torchvision::WEIGHTS
            .iter()
            .find(|w| file == w.file || file == format!("{}.partial", w.file))
        else {
            continue;
        };
        let path = checkpoints.join(&file);
        let partial = file.ends_with(".partial");
        out.push(CacheEntry {
            name: format!("torchvision:{}.{}", weights.model, weights.member),
            bytes: size_of(&path),
            partial_bytes: if partial { size_of(&path) } else { 0 },
            path,
            snapshots: Vec::new(),
        });
    }
    out
}

/// Removes interrupted downloads and the blobs no snapshot links to; returns the bytes freed.
pub fn prune(settings: &HfSettings) -> Result<u64> {
    let mut freed = 0;
    for entry in entries(settings) {
        if entry.name.starts_with("torchvision:") {
            if entry.partial_bytes > 0 {
                std::fs::remove_file(&entry.path).map_err(|e| HubError::io(&entry.path, e))?;
                freed += entry.partial_bytes;
            }
            continue;
        }
        let blobs = entry.path.join("blobs");
        let mut used = HashSet::new();
        for snapshot in &entry.snapshots {
            let folder = entry.path.join("snapshots").join(snapshot);
            for file in names(&folder) {
                if let Ok(target) = std::fs::read_link(folder.join(&file)) {
                    if let Some(name) = target.file_name() {
                        used.insert(name.to_string_lossy().into_owned());
                    }
                }
            }
        }
        for blob in names(&blobs) {
            if !used.contains(&blob) {
                let path = blobs.join(&blob);
                freed += size_of(&path);
                std::fs::remove_file(&path).map_err(|e| HubError::io(&path, e))?;
            }
        }
    }
    Ok(freed)
}
