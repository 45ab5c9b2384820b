//! Turning command-line paths (files and folders) into the list of images to process.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why an input could not be used; every message names the file.
#[derive(Debug, Error)]
pub enum DataError {
    /// The file could not be read or decoded as an image.
    #[error("{path}: {reason}")]
    Image {
        /// The file.
        path: PathBuf,
        /// The problem.
        reason: String,
    },
    /// The image is larger than the pixel limit (or than the memory available to decode it).
    #[error("{path}: {reason}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The problem.
        reason: String,
    },
    /// A folder held no images, or a path does not exist.
    #[error("{path}: {reason}")]
    Input {
        /// The path.
        path: PathBuf,
        /// The problem.
        reason: String,
    },
}

/// File extensions treated as images when a folder is expanded.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "bmp", "tif", "tiff", "webp"];

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Expands folders (recursively, sorted) into their image files; files are kept as given. Each real folder
/// is walked once, however many links lead to it (a link to a parent would otherwise repeat its images
/// without end), and a file reached twice (through links, or given twice) is listed once.
pub fn image_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, DataError> {
    let mut walk = Walk::default();
    for path in paths {
        if path.is_dir() {
            let before = walk.files.len();
            walk.folder(path)?;
            if walk.files.len() == before {
                return Err(DataError::Input {
                    path: path.clone(),
                    reason: format!("no images ({}) in this folder", IMAGE_EXTENSIONS.join(", ")),
                });
            }
        } else if path.exists() {
            walk.file(path.clone());
        } else {
            return Err(DataError::Input {
                path: path.clone(),
                reason: "no such file or folder".into(),
            });
        }
    }
    Ok(walk.files)
}

/// Folders visited and files listed so far, both by their canonical paths.
#[derive(Default)]
struct Walk {
    folders: HashSet<PathBuf>,
    seen: HashSet<PathBuf>,
    files: Vec<PathBuf>,
}

impl Walk {
    fn file(&mut self, path: PathBuf) {
        let real = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if self.seen.insert(real) {
            self.files.push(path);
        }
    }

    fn folder(&mut self, dir: &Path) -> Result<(), DataError> {
        let real = std::fs::canonicalize(dir).map_err(|e| DataError::Input {
            path: dir.to_path_buf(),
            reason: format!("cannot resolve: {e}"),
        })?;
        if !self.folders.insert(real) {
            return Ok(());
        }
        let read = std::fs::read_dir(dir).map_err(|e| DataError::Input {
            path: dir.to_path_buf(),
            reason: format!("cannot list: {e}"),
        })?;
        let mut entries: Vec<PathBuf> = read.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                self.folder(&path)?;
            } else if is_image(&path) {
                self.file(path);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_expand_sorted_and_empty_ones_are_named() {
        let dir = std::env::temp_dir().join(format!("effnet-files-{}", std::process::id()));
        let sub = dir.join("sub");
        std::fs::create_dir_all(&sub).unwrap();
        for f in ["b.png", "a.JPG", "notes.txt", "sub/c.webp"] {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
        let got = image_files(std::slice::from_ref(&dir)).unwrap();
        let names: Vec<String> = got
            .iter()
            .map(|p| p.strip_prefix(&dir).unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["a.JPG", "b.png", "sub/c.webp"]);
        let empty = dir.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let e = image_files(&[empty]).unwrap_err().to_string();
        assert!(e.contains("empty") && e.contains("no images"), "{e}");
        assert!(image_files(&[dir.join("missing.png")])
            .unwrap_err()
            .to_string()
            .contains("no such file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_link_cycle_is_walked_once_and_linked_files_are_listed_once() {
        let dir = std::env::temp_dir().join(format!("effnet-cycle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.png"), b"x").unwrap();
        std::os::unix::fs::symlink(".", dir.join("self")).unwrap();
        std::os::unix::fs::symlink("a.png", dir.join("b.png")).unwrap();
        let got = image_files(std::slice::from_ref(&dir)).unwrap();
        assert_eq!(got, [dir.join("a.png")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
