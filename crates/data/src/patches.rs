//! Turning a few large images into a labelled dataset: each image is one class, cut into square patches on a
//! regular grid; the top part of every image gives the training patches and the bottom part the validation
//! patches, so the two sets never share pixels.

use crate::files::DataError;
use crate::preprocess::decode;
use effnet_weights::atomic::write_atomically;
use image::RgbImage;
use std::path::{Path, PathBuf};

/// How to cut.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PatchGrid {
    /// Side of a patch in pixels.
    pub size: u32,
    /// Distance between patch origins.
    pub stride: u32,
    /// Share of the rows, from the top, that go to training (the rest to validation).
    pub train_rows: f64,
}

/// The square patches of `img` whose rows lie in `rows`, left to right, top to bottom.
pub fn patches(img: &RgbImage, grid: &PatchGrid, rows: std::ops::Range<u32>) -> Vec<RgbImage> {
    let mut out = Vec::new();
    let stride = grid.stride.max(1) as usize;
    for y in (rows.start..rows.end.saturating_sub(grid.size - 1)).step_by(stride) {
        for x in (0..img.width().saturating_sub(grid.size - 1)).step_by(stride) {
            out.push(image::imageops::crop_imm(img, x, y, grid.size, grid.size).to_image());
        }
    }
    out
}

fn write_png(path: &Path, img: &RgbImage) -> Result<(), DataError> {
    let fail = |reason: String| DataError::Input {
        path: path.to_path_buf(),
        reason,
    };
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(|e| fail(format!("cannot encode: {e}")))?;
    write_atomically(path, &bytes).map_err(|e| fail(e.reason))
}

/// Cuts every image into `out/train/{class}/` and `out/val/{class}/` (class = file stem) and returns the
/// two folders.
pub fn cut_dataset(
    images: &[PathBuf],
    grid: &PatchGrid,
    out: &Path,
) -> Result<(PathBuf, PathBuf), DataError> {
    if grid.size == 0 || !(0.0..=1.0).contains(&grid.train_rows) {
        return Err(DataError::Input {
            path: out.to_path_buf(),
            reason: "the patch size must be positive and the training share of rows within [0, 1]"
                .into(),
        });
    }
    let (train, val) = (out.join("train"), out.join("val"));
    for path in images {
        let img = decode(path)?;
        let class = path
            .file_stem()
            .map_or_else(|| "class".into(), |s| s.to_string_lossy().into_owned());
        let split = (f64::from(img.height()) * grid.train_rows).round() as u32;
        for (dir, rows) in [(&train, 0..split), (&val, split..img.height())] {
            let class_dir = dir.join(&class);
            std::fs::create_dir_all(&class_dir).map_err(|e| DataError::Input {
                path: class_dir.clone(),
                reason: format!("cannot create: {e}"),
            })?;
            let cut = patches(&img, grid, rows);
            if cut.is_empty() {
                return Err(DataError::Input {
                    path: path.clone(),
                    reason: format!("too small for {}-pixel patches in both parts", grid.size),
                });
            }
            for (i, patch) in cut.iter().enumerate() {
                write_png(&class_dir.join(format!("{i:04}.png")), patch)?;
            }
        }
    }
    Ok((train, val))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_512_texture_gives_105_patches_per_half() {
        let img = RgbImage::from_fn(512, 512, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let grid = PatchGrid {
            size: 64,
            stride: 32,
            train_rows: 0.5,
        };
        let top = patches(&img, &grid, 0..256);
        let bottom = patches(&img, &grid, 256..512);
        assert_eq!((top.len(), bottom.len()), (105, 105));
        assert_eq!(top[1].get_pixel(0, 0).0, [32, 0, 0]);
        assert_eq!(
            bottom[0].get_pixel(0, 0).0,
            [0, 0, 0],
            "row 256 wraps to 0 in u8"
        );
        assert_eq!(bottom[15].get_pixel(0, 0).0, [0, 32, 0]);
        // No validation patch reaches into the training rows.
        assert!(top.iter().all(|p| p.height() == 64));
    }
}
