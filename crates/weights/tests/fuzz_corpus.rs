//! The fuzz targets' seed corpus and regression files (fuzz/corpus, fuzz/regressions) replayed through the
//! same readers in the normal test suite: every file gives tensors or an error, never a panic; the seeds
//! (valid files) give tensors, and the regressions (hostile files) give errors.

use effnet_weights::pth::read_pth_from;
use effnet_weights::safetensors_io::read_safetensors_from;
use effnet_weights::WeightMetadata;
use std::io::Cursor;
use std::path::{Path, PathBuf};

fn files(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz")
        .join(kind)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

#[test]
fn the_pth_corpus_loads_and_its_regressions_are_refused() {
    let seeds = files("corpus", "pth");
    assert!(seeds.len() >= 2, "the seed corpus is in the repository");
    for path in seeds {
        let bytes = std::fs::read(&path).unwrap();
        let tensors = read_pth_from(&path, Cursor::new(bytes))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(tensors.len(), 2, "{}", path.display());
    }
    let regressions = files("regressions", "pth");
    assert!(regressions.len() >= 5);
    for path in regressions {
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            read_pth_from(&path, Cursor::new(bytes)).is_err(),
            "{} is refused",
            path.display()
        );
    }
}

#[test]
fn the_safetensors_corpus_loads() {
    let seeds = files("corpus", "safetensors");
    assert!(!seeds.is_empty());
    for path in seeds.into_iter().chain(files("regressions", "safetensors")) {
        let bytes = std::fs::read(&path).unwrap();
        if let Ok(contents) = read_safetensors_from(&path, Cursor::new(bytes)) {
            assert!(!contents.tensors.is_empty(), "{}", path.display());
            // Metadata decoding runs on whatever the file holds (an error is fine).
            let _ = WeightMetadata::from_map(&path, &contents.metadata);
        } else {
            assert!(path.components().any(|c| c.as_os_str() == "regressions"));
        }
    }
}

#[test]
fn the_tf_index_corpus_lists_its_variables_and_its_regressions_are_refused() {
    use effnet_weights::tf_checkpoint::list_variables;
    let seeds = files("corpus", "tf_index");
    assert!(!seeds.is_empty());
    for path in seeds {
        let variables = list_variables(&path, std::fs::read(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(variables
            .iter()
            .any(|(name, _)| name.ends_with("stem/conv2d/kernel")));
    }
    let regressions = files("regressions", "tf_index");
    assert!(regressions.len() >= 3);
    for path in regressions {
        let refused = list_variables(&path, std::fs::read(&path).unwrap());
        assert!(refused.is_err(), "{} is refused", path.display());
    }
}
