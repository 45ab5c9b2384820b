//! A class map carried back from the network's input square onto the original image: the evaluation
//! preprocessing cropped (or padded) and resized the image into the square, so the part of the image the
//! network never saw gets nothing, and the rest samples the map bilinearly (half-pixel centres, as
//! OpenCV's and PyTorch's resizes do).

use crate::gradcam::ClassMap;
use effnet_arch::preprocess::Preprocessing;
use effnet_data::preprocess::{placement, Placement, Region};
use serde::Serialize;

/// The share of a map in each quadrant of the image (summing to 1, or all 0 for an empty map).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quadrants {
    /// Upper left.
    pub top_left: f64,
    /// Upper right.
    pub top_right: f64,
    /// Lower left.
    pub bottom_left: f64,
    /// Lower right.
    pub bottom_right: f64,
}

/// A class map over the original image, sampled on a grid of `width x height` cells covering it.
#[derive(Debug, Clone)]
pub struct SourceMap {
    /// Grid columns.
    pub width: usize,
    /// Grid rows.
    pub height: usize,
    /// Row-major values (in the map's own units).
    pub values: Vec<f32>,
}

/// Where the network's input square came from: the rectangle `square` of the square (in its pixels)
/// shows the rectangle `source` of the image (in the image's pixels).
struct Correspondence {
    source: Region,
    square: Region,
}

fn correspondence(
    (width, height): (u32, u32),
    pre: &Preprocessing,
    resolution: u32,
) -> Correspondence {
    let res = f64::from(resolution);
    match placement(width, height, pre, resolution) {
        Placement::Region(source) => Correspondence {
            source,
            square: Region {
                left: 0.0,
                top: 0.0,
                width: res,
                height: res,
            },
        },
        Placement::Scaled {
            scaled,
            offset,
            dest,
            ..
        } => {
            let kx = f64::from(width) / f64::from(scaled[0]);
            let ky = f64::from(height) / f64::from(scaled[1]);
            let [dx, dy, lw, lh] = dest.map(f64::from);
            Correspondence {
                source: Region {
                    left: f64::from(offset[0]) * kx,
                    top: f64::from(offset[1]) * ky,
                    width: lw * kx,
                    height: lh * ky,
                },
                square: Region {
                    left: dx,
                    top: dy,
                    width: lw,
                    height: lh,
                },
            }
        }
    }
}

/// Bilinear sample of `map` at fractional cell coordinates (cell centres at integers), clamped at the
/// edges.
fn sample(map: &ClassMap, y: f64, x: f64) -> f32 {
    let clamp = |v: f64, n: usize| v.clamp(0.0, (n - 1) as f64);
    let (y, x) = (clamp(y, map.height), clamp(x, map.width));
    let (y0, x0) = (y.floor() as usize, x.floor() as usize);
    let (y1, x1) = ((y0 + 1).min(map.height - 1), (x0 + 1).min(map.width - 1));
    let (fy, fx) = ((y - y0 as f64) as f32, (x - x0 as f64) as f32);
    let at = |r: usize, c: usize| map.values[r * map.width + c];
    let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
    let bottom = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
    top * (1.0 - fy) + bottom * fy
}

impl SourceMap {
    /// `map`, computed on an image of `image_size` (width, height) preprocessed with `pre` at
    /// `resolution`, sampled on a `grid` (width, height) laid over the whole image.
    pub fn new(
        map: &ClassMap,
        image_size: (u32, u32),
        pre: &Preprocessing,
        resolution: u32,
        (width, height): (usize, usize),
    ) -> Self {
        let c = correspondence(image_size, pre, resolution);
        let res = f64::from(resolution);
        let (iw, ih) = (f64::from(image_size.0), f64::from(image_size.1));
        let mut values = vec![0f32; width * height];
        for (row, line) in values.chunks_exact_mut(width).enumerate() {
            let sy = (row as f64 + 0.5) * ih / height as f64;
            let ty = (sy - c.source.top) / c.source.height;
            if !(0.0..1.0).contains(&ty) {
                continue;
            }
            let my = (c.square.top + ty * c.square.height) * map.height as f64 / res - 0.5;
            for (col, v) in line.iter_mut().enumerate() {
                let sx = (col as f64 + 0.5) * iw / width as f64;
                let tx = (sx - c.source.left) / c.source.width;
                if (0.0..1.0).contains(&tx) {
                    let mx = (c.square.left + tx * c.square.width) * map.width as f64 / res - 0.5;
                    *v = sample(map, my, mx);
                }
            }
        }
        Self {
            width,
            height,
            values,
        }
    }

    /// The largest value.
    pub fn max(&self) -> f32 {
        self.values.iter().copied().fold(0.0, f32::max)
    }

    /// Where the map peaks, `[y, x]` as fractions of the image's height and width (the cell's centre).
    pub fn peak(&self) -> [f64; 2] {
        let best =
            self.values.iter().enumerate().fold(
                0,
                |best, (i, &v)| if v > self.values[best] { i } else { best },
            );
        let (row, col) = (best / self.width, best % self.width);
        [
            (row as f64 + 0.5) / self.height as f64,
            (col as f64 + 0.5) / self.width as f64,
        ]
    }

    /// The map's share in each quadrant of the image (a cell on a middle line counts half to each side).
    pub fn quadrants(&self) -> Quadrants {
        let mut sums = [[0f64; 2]; 2];
        for (row, line) in self.values.chunks_exact(self.width).enumerate() {
            let rows = halves(row, self.height);
            for (col, &v) in line.iter().enumerate() {
                for (r, wr) in rows.iter().enumerate() {
                    for (c, wc) in halves(col, self.width).iter().enumerate() {
                        sums[r][c] += f64::from(v) * wr * wc;
                    }
                }
            }
        }
        let total: f64 = sums.iter().flatten().sum();
        let share = |v: f64| if total > 0.0 { v / total } else { 0.0 };
        Quadrants {
            top_left: share(sums[0][0]),
            top_right: share(sums[0][1]),
            bottom_left: share(sums[1][0]),
            bottom_right: share(sums[1][1]),
        }
    }
}

/// How much of cell `i` of `n` lies in the first and in the second half.
fn halves(i: usize, n: usize) -> [f64; 2] {
    match (2 * i + 1).cmp(&n) {
        std::cmp::Ordering::Less => [1.0, 0.0],
        std::cmp::Ordering::Equal => [0.5, 0.5],
        std::cmp::Ordering::Greater => [0.0, 1.0],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use effnet_arch::preprocess::CropMode;

    fn map(height: usize, width: usize, values: Vec<f32>) -> ClassMap {
        ClassMap {
            class: 0,
            height,
            width,
            values,
        }
    }

    #[test]
    fn a_map_lit_in_one_corner_puts_its_mass_and_peak_there() {
        // Whole image squashed into the square (crop 1.0): the map's cells tile the image.
        let mut pre = Preprocessing::imagenet(4);
        pre.crop_pct = 1.0;
        let m = map(2, 2, vec![0.0, 0.0, 0.0, 1.0]);
        let s = SourceMap::new(&m, (200, 100), &pre, 4, (20, 10));
        let q = s.quadrants();
        assert!(q.bottom_right > 0.7, "{q:?}");
        let sum = q.top_left + q.top_right + q.bottom_left + q.bottom_right;
        assert!((sum - 1.0).abs() < 1e-12);
        let [y, x] = s.peak();
        assert!(y > 0.5 && x > 0.5, "{y} {x}");
    }

    #[test]
    fn what_the_centre_crop_cut_off_gets_nothing() {
        // TF's crop keeps the central square of a wide image: the left and right bands are outside it.
        let mut pre = Preprocessing::imagenet(8);
        pre.crop_pct = 1.0 - 1e-9;
        pre.crop_mode = CropMode::Tf;
        let m = map(1, 1, vec![1.0]);
        let s = SourceMap::new(&m, (300, 100), &pre, 8, (30, 10));
        assert_eq!(s.values[0], 0.0, "left band");
        assert_eq!(s.values[29], 0.0, "right band");
        assert_eq!(s.values[15], 1.0, "centre");
        // A timm centre crop of the same image keeps the same square.
        pre.crop_mode = CropMode::Center;
        let s = SourceMap::new(&m, (300, 100), &pre, 8, (30, 10));
        assert_eq!((s.values[0], s.values[15], s.values[29]), (0.0, 1.0, 0.0));
    }

    #[test]
    fn an_empty_map_has_no_mass() {
        let pre = Preprocessing::imagenet(4);
        let s = SourceMap::new(&map(1, 1, vec![0.0]), (10, 10), &pre, 4, (4, 4));
        assert_eq!(s.quadrants().top_left, 0.0);
        assert_eq!(s.max(), 0.0);
    }
}
