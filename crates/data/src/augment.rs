//! Training augmentation: random-resized crop (Inception-style: area 8–100%, aspect 3/4–4/3), horizontal
//! flip, and RandAugment (Cubuk et al. 2019) with the official EfficientNet op list.
//!
//! RandAugment applies `n` ops drawn uniformly, each at magnitude `m` on the 0–10 scale. Magnitudes follow
//! the "stronger with `m`" convention (timm's `increasing` ops): rotate up to 30°, shear up to 0.3,
//! translate up to 45% of the side, posterize down to 4 bits, solarize threshold down to 0, enhancement
//! factors `1 ± 0.9 m / 10`, cutout up to 20% of the side. Geometric ops fill with gray 128, as TF does.

use crate::preprocess::{normalize, resize_region, NormalizedImage, Region};
use effnet_arch::preprocess::Preprocessing;
use image::{Rgb, RgbImage};
use imageproc::geometric_transformations::{warp, Border, Interpolation, Projection};
use rand::Rng;

const FILL: Rgb<u8> = Rgb([128, 128, 128]);

/// RandAugment's two parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandAugment {
    /// Ops per image.
    pub n: u32,
    /// Magnitude on the 0–10 scale.
    pub m: f64,
}

/// The training-time transform.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Augment {
    /// Range of the crop's area as a fraction of the image (0.08–1).
    pub scale: (f64, f64),
    /// Range of the crop's aspect ratio (3/4–4/3), sampled log-uniformly.
    pub ratio: (f64, f64),
    /// Probability of a horizontal flip.
    pub flip: f64,
    /// RandAugment, if enabled.
    pub rand_augment: Option<RandAugment>,
}

impl Default for Augment {
    fn default() -> Self {
        Self {
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            flip: 0.5,
            rand_augment: None,
        }
    }
}

/// Inception's random crop: up to ten tries for a region with a random area and aspect ratio that fits,
/// otherwise the central crop at the nearest allowed aspect ratio.
pub fn random_resized_crop(width: u32, height: u32, aug: &Augment, rng: &mut impl Rng) -> Region {
    let (w, h) = (f64::from(width), f64::from(height));
    let area = w * h;
    let (log_lo, log_hi) = (aug.ratio.0.ln(), aug.ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.random_range(aug.scale.0..=aug.scale.1);
        let aspect = rng.random_range(log_lo..=log_hi).exp();
        let cw = (target * aspect).sqrt().round();
        let ch = (target / aspect).sqrt().round();
        if cw >= 1.0 && ch >= 1.0 && cw <= w && ch <= h {
            return Region {
                left: rng.random_range(0.0..=w - cw).floor(),
                top: rng.random_range(0.0..=h - ch).floor(),
                width: cw,
                height: ch,
            };
        }
    }
    let aspect = (w / h).clamp(aug.ratio.0, aug.ratio.1);
    let (cw, ch) = if w / h < aspect {
        (w, (w / aspect).round())
    } else {
        ((h * aspect).round(), h)
    };
    Region {
        left: ((w - cw) / 2.0).floor(),
        top: ((h - ch) / 2.0).floor(),
        width: cw,
        height: ch,
    }
}

/// One augmented, normalised training image at `resolution`.
pub fn augment(
    img: &RgbImage,
    aug: &Augment,
    pre: &Preprocessing,
    resolution: u32,
    rng: &mut impl Rng,
) -> NormalizedImage {
    let region = random_resized_crop(img.width(), img.height(), aug, rng);
    let mut out = resize_region(img, region, pre.interpolation, resolution);
    if rng.random_bool(aug.flip.clamp(0.0, 1.0)) {
        image::imageops::flip_horizontal_in_place(&mut out);
    }
    if let Some(ra) = aug.rand_augment {
        for _ in 0..ra.n {
            out = apply(&out, OPS[rng.random_range(0..OPS.len())], ra.m / 10.0, rng);
        }
    }
    normalize(&out, pre)
}

/// The official EfficientNet RandAugment ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Stretch each channel to 0–255.
    AutoContrast,
    /// Equalise each channel's histogram.
    Equalize,
    /// `255 - v`.
    Invert,
    /// Rotate about the centre.
    Rotate,
    /// Keep only the top bits.
    Posterize,
    /// Invert values above a threshold.
    Solarize,
    /// Add to values below 128.
    SolarizeAdd,
    /// Blend with the grayscale image.
    Color,
    /// Blend with the mean gray.
    Contrast,
    /// Blend with black.
    Brightness,
    /// Blend with a smoothed copy.
    Sharpness,
    /// Horizontal shear.
    ShearX,
    /// Vertical shear.
    ShearY,
    /// Horizontal shift.
    TranslateX,
    /// Vertical shift.
    TranslateY,
    /// Gray square at a random place.
    Cutout,
}

/// Every op, in the official list's order.
pub const OPS: [Op; 16] = [
    Op::AutoContrast,
    Op::Equalize,
    Op::Invert,
    Op::Rotate,
    Op::Posterize,
    Op::Solarize,
    Op::Color,
    Op::Contrast,
    Op::Brightness,
    Op::Sharpness,
    Op::ShearX,
    Op::ShearY,
    Op::TranslateX,
    Op::TranslateY,
    Op::Cutout,
    Op::SolarizeAdd,
];

fn signed(level: f64, rng: &mut impl Rng) -> f64 {
    if rng.random_bool(0.5) {
        -level
    } else {
        level
    }
}

fn map_values(img: &RgbImage, f: impl Fn(usize, u8) -> u8) -> RgbImage {
    let mut out = img.clone();
    for (i, v) in out.iter_mut().enumerate() {
        *v = f(i % 3, *v);
    }
    out
}

/// `degenerate + factor * (img - degenerate)`, clamped: PIL's `ImageEnhance`.
fn blend(img: &RgbImage, degenerate: &RgbImage, factor: f64) -> RgbImage {
    let mut out = img.clone();
    for (o, (&a, &d)) in out.iter_mut().zip(img.iter().zip(degenerate.iter())) {
        let v = f64::from(d) + factor * (f64::from(a) - f64::from(d));
        *o = v.round().clamp(0.0, 255.0) as u8;
    }
    out
}

fn luma(p: &Rgb<u8>) -> f64 {
    (f64::from(p[0]) * 299.0 + f64::from(p[1]) * 587.0 + f64::from(p[2]) * 114.0) / 1000.0
}

fn channel_histograms(img: &RgbImage) -> [[u32; 256]; 3] {
    let mut h = [[0u32; 256]; 3];
    for (i, &v) in img.iter().enumerate() {
        h[i % 3][v as usize] += 1;
    }
    h
}

/// PIL's `ImageOps.equalize` per channel: a lookup table from the cumulative histogram.
fn equalize(img: &RgbImage) -> RgbImage {
    let hist = channel_histograms(img);
    let luts: Vec<[u8; 256]> = hist
        .iter()
        .map(|h| {
            let mut lut = [0u8; 256];
            let last = h.iter().rposition(|&c| c > 0).map_or(0, |i| h[i]);
            let total: u32 = h.iter().sum();
            let step = (total - last) / 255;
            if step == 0 {
                for (i, l) in lut.iter_mut().enumerate() {
                    *l = i as u8;
                }
                return lut;
            }
            let mut acc = step / 2;
            for (i, l) in lut.iter_mut().enumerate() {
                *l = (acc / step).min(255) as u8;
                acc += h[i];
            }
            lut
        })
        .collect();
    map_values(img, |c, v| luts[c][v as usize])
}

fn auto_contrast(img: &RgbImage) -> RgbImage {
    let hist = channel_histograms(img);
    let ranges: Vec<(u8, u8)> = hist
        .iter()
        .map(|h| {
            let lo = h.iter().position(|&c| c > 0).unwrap_or(0) as u8;
            let hi = h.iter().rposition(|&c| c > 0).unwrap_or(255) as u8;
            (lo, hi)
        })
        .collect();
    map_values(img, |c, v| {
        let (lo, hi) = ranges[c];
        if hi <= lo {
            return v;
        }
        let scaled = (f64::from(v) - f64::from(lo)) * 255.0 / f64::from(hi - lo);
        scaled.round().clamp(0.0, 255.0) as u8
    })
}

/// PIL's SMOOTH kernel `[1 1 1; 1 5 1; 1 1 1] / 13` inside, the original pixels on the border.
fn smooth(img: &RgbImage) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut out = img.clone();
    for y in 1..h.saturating_sub(1) {
        for x in 1..w.saturating_sub(1) {
            let mut acc = [0u32; 3];
            for dy in 0..3 {
                for dx in 0..3 {
                    let weight = if dx == 1 && dy == 1 { 5 } else { 1 };
                    let p = img.get_pixel(x + dx - 1, y + dy - 1);
                    for c in 0..3 {
                        acc[c] += weight * u32::from(p[c]);
                    }
                }
            }
            out.put_pixel(x, y, Rgb(acc.map(|a| ((a + 6) / 13) as u8)));
        }
    }
    out
}

fn affine(img: &RgbImage, matrix: [f32; 9]) -> RgbImage {
    let projection = Projection::from_matrix(matrix).expect("an invertible affine map");
    warp(
        img,
        projection,
        Interpolation::Bilinear,
        Border::Constant(FILL),
    )
}

/// Applies `op` at `level` in [0, 1] (the magnitude over 10).
pub fn apply(img: &RgbImage, op: Op, level: f64, rng: &mut impl Rng) -> RgbImage {
    let (w, h) = (img.width() as f32, img.height() as f32);
    match op {
        Op::AutoContrast => auto_contrast(img),
        Op::Equalize => equalize(img),
        Op::Invert => map_values(img, |_, v| 255 - v),
        Op::Rotate => {
            let theta = signed(30.0 * level, rng).to_radians() as f32;
            let (cx, cy) = (w / 2.0, h / 2.0);
            let rotate = Projection::translate(cx, cy)
                * Projection::rotate(theta)
                * Projection::translate(-cx, -cy);
            warp(img, rotate, Interpolation::Bilinear, Border::Constant(FILL))
        }
        Op::Posterize => {
            let bits = 8 - (4.0 * level) as u32;
            let mask = (0xffu32 << (8 - bits)) as u8;
            map_values(img, |_, v| v & mask)
        }
        Op::Solarize => {
            let threshold = (256.0 * (1.0 - level)) as u32;
            map_values(img, |_, v| {
                if u32::from(v) >= threshold {
                    255 - v
                } else {
                    v
                }
            })
        }
        Op::SolarizeAdd => {
            let add = (110.0 * level) as u32;
            map_values(img, |_, v| {
                if v < 128 {
                    (u32::from(v) + add).min(255) as u8
                } else {
                    v
                }
            })
        }
        Op::Color => {
            let gray = RgbImage::from_fn(img.width(), img.height(), |x, y| {
                let l = luma(img.get_pixel(x, y)).round() as u8;
                Rgb([l; 3])
            });
            blend(img, &gray, 1.0 + signed(0.9 * level, rng))
        }
        Op::Contrast => {
            let n = f64::from(img.width() * img.height()).max(1.0);
            let mean = (img.pixels().map(luma).sum::<f64>() / n).round() as u8;
            let flat = RgbImage::from_pixel(img.width(), img.height(), Rgb([mean; 3]));
            blend(img, &flat, 1.0 + signed(0.9 * level, rng))
        }
        Op::Brightness => {
            let black = RgbImage::new(img.width(), img.height());
            blend(img, &black, 1.0 + signed(0.9 * level, rng))
        }
        Op::Sharpness => blend(img, &smooth(img), 1.0 + signed(0.9 * level, rng)),
        Op::ShearX => {
            let s = signed(0.3 * level, rng) as f32;
            affine(img, [1.0, s, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0])
        }
        Op::ShearY => {
            let s = signed(0.3 * level, rng) as f32;
            affine(img, [1.0, 0.0, 0.0, s, 1.0, 0.0, 0.0, 0.0, 1.0])
        }
        Op::TranslateX => {
            let t = signed(0.45 * level, rng) as f32 * w;
            affine(img, [1.0, 0.0, t, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0])
        }
        Op::TranslateY => {
            let t = signed(0.45 * level, rng) as f32 * h;
            affine(img, [1.0, 0.0, 0.0, 0.0, 1.0, t, 0.0, 0.0, 1.0])
        }
        Op::Cutout => {
            let side = (0.2 * level * f64::from(img.width().min(img.height()))) as u32;
            let mut out = img.clone();
            if side == 0 {
                return out;
            }
            let cx = rng.random_range(0..img.width());
            let cy = rng.random_range(0..img.height());
            let (x0, y0) = (cx.saturating_sub(side / 2), cy.saturating_sub(side / 2));
            for y in y0..(y0 + side).min(img.height()) {
                for x in x0..(x0 + side).min(img.width()) {
                    out.put_pixel(x, y, FILL);
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn gradient() -> RgbImage {
        RgbImage::from_fn(40, 30, |x, y| Rgb([(x * 6) as u8, (y * 8) as u8, 100]))
    }

    #[test]
    fn random_crops_stay_inside_and_respect_area_and_ratio() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let aug = Augment::default();
        for _ in 0..500 {
            let r = random_resized_crop(200, 120, &aug, &mut rng);
            assert!(r.left >= 0.0 && r.top >= 0.0);
            assert!(
                r.left + r.width <= 200.0 && r.top + r.height <= 120.0,
                "{r:?}"
            );
            let area = r.width * r.height / (200.0 * 120.0);
            assert!(area <= 1.0 + 1e-9, "{r:?}");
            let ratio = r.width / r.height;
            assert!((0.7..=1.4).contains(&ratio), "{r:?}");
        }
    }

    #[test]
    fn value_ops_match_their_formulas() {
        let img = gradient();
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let inv = apply(&img, Op::Invert, 0.5, &mut rng);
        assert_eq!(inv.get_pixel(3, 4).0, [255 - 18, 255 - 32, 155]);
        let post = apply(&img, Op::Posterize, 1.0, &mut rng);
        assert_eq!(post.get_pixel(3, 4).0, [18 & 0xf0, 32 & 0xf0, 100 & 0xf0]);
        let sol = apply(&img, Op::Solarize, 0.5, &mut rng);
        assert_eq!(sol.get_pixel(30, 20).0, [255 - 180, 255 - 160, 100]);
        let ac = apply(&img, Op::AutoContrast, 0.5, &mut rng);
        assert_eq!(ac.get_pixel(39, 29).0[0], 255);
        assert_eq!(ac.get_pixel(0, 0).0[0], 0);
        let eq = apply(&img, Op::Equalize, 0.5, &mut rng);
        let before: Vec<u8> = (0..40).map(|x| img.get_pixel(x, 0)[0]).collect();
        let after: Vec<u8> = (0..40).map(|x| eq.get_pixel(x, 0)[0]).collect();
        assert!(
            after.windows(2).all(|w| w[1] >= w[0]),
            "equalize keeps order"
        );
        assert_ne!(before, after);
    }

    #[test]
    fn geometric_ops_move_pixels_and_fill_with_gray() {
        let img = gradient();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let t = apply(&img, Op::TranslateX, 1.0, &mut rng);
        let gray = t.pixels().filter(|p| p.0 == [128, 128, 128]).count();
        // A shift of 45% of the width leaves that share of each row to the fill.
        assert!((gray as f64 / 1200.0 - 0.45).abs() < 0.05, "{gray}");
        let zero = apply(&img, Op::Rotate, 0.0, &mut rng);
        assert_eq!(zero, img, "magnitude 0 rotates by nothing");
        for op in OPS {
            let out = apply(&img, op, 0.9, &mut rng);
            assert_eq!(out.dimensions(), img.dimensions(), "{op:?}");
        }
    }

    #[test]
    fn augmentation_is_reproducible_from_the_seed() {
        let img = gradient();
        let aug = Augment {
            rand_augment: Some(RandAugment { n: 2, m: 9.0 }),
            ..Augment::default()
        };
        let pre = Preprocessing::imagenet(16);
        let run = |seed| {
            augment(
                &img,
                &aug,
                &pre,
                16,
                &mut rand::rngs::StdRng::seed_from_u64(seed),
            )
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
        assert_eq!(run(5).data.len(), 16 * 16 * 3);
    }
}
