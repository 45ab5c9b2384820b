//! Labelled image folders (`DIR/class/*.jpg`, as torchvision's `ImageFolder`): classes are the sorted
//! sub-folder names, every image below a class folder (recursively) belongs to it; a seeded, stratified
//! split carves a validation set out of a training folder.

use crate::files::{image_files, DataError};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::path::{Path, PathBuf};

/// One labelled image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The image file.
    pub path: PathBuf,
    /// Index into [`ImageFolder::classes`].
    pub label: usize,
}

/// A labelled set of images.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFolder {
    /// The folder it was read from.
    pub root: PathBuf,
    /// Class names, sorted; a label is an index into this list.
    pub classes: Vec<String>,
    /// The images, class by class, each class sorted by path.
    pub samples: Vec<Sample>,
}

fn input_error(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Input {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl ImageFolder {
    /// Reads `root`: one sub-folder per class, each with at least one image.
    pub fn open(root: &Path) -> Result<Self, DataError> {
        let entries =
            std::fs::read_dir(root).map_err(|e| input_error(root, format!("cannot list: {e}")))?;
        let mut class_dirs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        class_dirs.sort();
        if class_dirs.is_empty() {
            return Err(input_error(
                root,
                "no class folders: expected one sub-folder of images per class (DIR/class/*.jpg)",
            ));
        }
        let mut classes = Vec::new();
        let mut samples = Vec::new();
        // A file linked into two class folders keeps its first label only.
        let mut seen = std::collections::HashSet::new();
        for dir in &class_dirs {
            let files = image_files(std::slice::from_ref(dir)).map_err(|_| {
                input_error(
                    dir,
                    "this class folder has no images; remove it or add images",
                )
            })?;
            let label = classes.len();
            let name = dir.file_name().unwrap_or_default();
            classes.push(name.to_str().map(str::to_owned).ok_or_else(|| {
                input_error(
                    dir,
                    "this class folder's name is not valid UTF-8; rename it (labels are text)",
                )
            })?);
            let unseen = files
                .into_iter()
                .filter(|p| seen.insert(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())));
            samples.extend(unseen.map(|path| Sample { path, label }));
        }
        Ok(Self {
            root: root.to_path_buf(),
            classes,
            samples,
        })
    }

    /// Splits off `fraction` of every class (at least one image when a class has two or more) as a
    /// validation set, choosing the images with a `seed`ed shuffle; returns `(train, validation)`.
    pub fn split(&self, fraction: f64, seed: u64) -> (Self, Self) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut train = Vec::new();
        let mut val = Vec::new();
        for label in 0..self.classes.len() {
            let mut of_class: Vec<&Sample> =
                self.samples.iter().filter(|s| s.label == label).collect();
            of_class.shuffle(&mut rng);
            let n = of_class.len();
            let take = if n < 2 {
                0
            } else {
                ((n as f64 * fraction).round() as usize).clamp(1, n - 1)
            };
            let (v, t) = of_class.split_at(take);
            val.extend(v.iter().map(|&s| s.clone()));
            train.extend(t.iter().map(|&s| s.clone()));
        }
        let part = |samples: Vec<Sample>| {
            let mut samples = samples;
            samples.sort_by(|a, b| (a.label, &a.path).cmp(&(b.label, &b.path)));
            Self {
                root: self.root.clone(),
                classes: self.classes.clone(),
                samples,
            }
        };
        (part(train), part(val))
    }

    /// Checks that `other` (a validation folder) has exactly the same classes, naming the differences.
    pub fn check_same_classes(&self, other: &Self) -> Result<(), DataError> {
        if self.classes == other.classes {
            return Ok(());
        }
        let missing: Vec<&str> = self
            .classes
            .iter()
            .filter(|c| !other.classes.contains(c))
            .map(String::as_str)
            .collect();
        let extra: Vec<&str> = other
            .classes
            .iter()
            .filter(|c| !self.classes.contains(c))
            .map(String::as_str)
            .collect();
        Err(input_error(
            &other.root,
            format!(
                "its classes differ from {}: missing [{}], extra [{}]",
                self.root.display(),
                missing.join(", "),
                extra.join(", ")
            ),
        ))
    }

    /// Images per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for s in &self.samples {
            counts[s.label] += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(name: &str, layout: &[(&str, usize)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("effnet-folder-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (class, n) in layout {
            std::fs::create_dir_all(dir.join(class)).unwrap();
            for i in 0..*n {
                std::fs::write(dir.join(class).join(format!("{i:02}.png")), b"x").unwrap();
            }
        }
        dir
    }

    #[test]
    fn classes_are_sorted_folders_and_labels_follow_them() {
        let dir = tree("open", &[("zebra", 2), ("apple", 3)]);
        let f = ImageFolder::open(&dir).unwrap();
        assert_eq!(f.classes, ["apple", "zebra"]);
        assert_eq!(f.class_counts(), [3, 2]);
        assert!(f.samples[..3].iter().all(|s| s.label == 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_empty_class_folder_is_named() {
        let dir = tree("empty", &[("cats", 2), ("dogs", 0)]);
        let e = ImageFolder::open(&dir).unwrap_err().to_string();
        assert!(e.contains("dogs") && e.contains("no images"), "{e}");
        let flat = tree("flat", &[]);
        std::fs::create_dir_all(&flat).unwrap();
        let e = ImageFolder::open(&flat).unwrap_err().to_string();
        assert!(e.contains("no class folders"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&flat).unwrap();
    }

    #[test]
    fn the_split_is_stratified_disjoint_and_seeded() {
        let dir = tree("split", &[("a", 10), ("b", 5), ("c", 1)]);
        let f = ImageFolder::open(&dir).unwrap();
        let (train, val) = f.split(0.2, 7);
        assert_eq!(val.class_counts(), [2, 1, 0]);
        assert_eq!(train.class_counts(), [8, 4, 1]);
        assert!(val.samples.iter().all(|v| !train.samples.contains(v)));
        assert_eq!(f.split(0.2, 7), (train.clone(), val.clone()));
        let other_seeds = (8..20).any(|seed| f.split(0.2, seed).1 != val);
        assert!(other_seeds, "the seed changes which images are held out");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn differing_class_sets_are_reported() {
        let a = tree("classes-a", &[("cat", 1), ("dog", 1)]);
        let b = tree("classes-b", &[("cat", 1), ("fox", 1)]);
        let fa = ImageFolder::open(&a).unwrap();
        let fb = ImageFolder::open(&b).unwrap();
        let e = fa.check_same_classes(&fb).unwrap_err().to_string();
        assert!(
            e.contains("missing [dog]") && e.contains("extra [fox]"),
            "{e}"
        );
        std::fs::remove_dir_all(&a).unwrap();
        std::fs::remove_dir_all(&b).unwrap();
    }
}
