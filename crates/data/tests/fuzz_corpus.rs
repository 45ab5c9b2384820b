//! The image fuzz target's seed corpus and regression files replayed through the decoder in the normal test
//! suite: the seeds (one small image of every format) decode, the regressions (a 69-byte PNG claiming
//! 60000 x 60000 pixels, a truncated JPEG) are refused.

use effnet_data::decode_from;
use std::io::Cursor;
use std::path::{Path, PathBuf};

fn files(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../fuzz/{kind}/image"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn every_seed_image_decodes_and_every_regression_is_refused() {
    let seeds = files("corpus");
    assert!(seeds.len() >= 5, "PNG, JPEG, BMP, TIFF and WebP seeds");
    for path in seeds {
        let img = decode_from(&path, Cursor::new(std::fs::read(&path).unwrap()))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(img.dimensions(), (8, 6), "{}", path.display());
    }
    for path in files("regressions") {
        let e = decode_from(&path, Cursor::new(std::fs::read(&path).unwrap())).unwrap_err();
        assert!(e
            .to_string()
            .contains(path.file_name().unwrap().to_str().unwrap()));
    }
}
