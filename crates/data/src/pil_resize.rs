//! Pillow's 8-bit resampling (`libImaging/Resample.c`), reproduced exactly: the weights pytorch-image-models
//! and torchvision publish were evaluated on images resized by PIL, and their reference accuracy is only
//! reproduced bit for bit with the same arithmetic. fast_image_resize rounds differently (up to a few 8-bit
//! levels at edges), which moved Lite0's logits by up to 0.15; this module gives the same bytes as PIL.
//!
//! The algorithm: per axis, each output pixel's filter weights over the input pixels it covers (the filter
//! stretched by the scale when reducing), normalised to sum 1 and turned into 22-bit fixed point; a
//! horizontal pass into 8-bit rows, then a vertical pass, each rounding to 8 bits. Only the window of the
//! output that is kept (a centre crop) is computed; its pixels equal those of the whole resize.

use effnet_arch::preprocess::Interpolation;
use image::RgbImage;

/// Fixed-point fraction bits of the weights (`PRECISION_BITS` in Pillow).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's bicubic kernel, `a = -0.5`.
fn bicubic(x: f64) -> f64 {
    let a = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * a
    } else {
        0.0
    }
}

/// Pillow's bilinear (triangle) kernel.
fn bilinear(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// The fixed-point weights of some output pixels along one axis: for each, the first input pixel and one
/// weight per input pixel from there.
struct AxisWeights {
    taps: Vec<(usize, Vec<i32>)>,
}

/// Weights of output pixels `window` of a resize from `input` to `output` pixels (`precompute_coeffs` and
/// `normalize_coeffs_8bpc`).
fn axis_weights(
    input: u32,
    output: u32,
    window: std::ops::Range<u32>,
    interpolation: Interpolation,
) -> AxisWeights {
    let (filter, support): (fn(f64) -> f64, f64) = match interpolation {
        Interpolation::Bicubic => (bicubic, 2.0),
        Interpolation::Bilinear => (bilinear, 1.0),
    };
    let scale = f64::from(input) / f64::from(output);
    let filterscale = scale.max(1.0);
    let support = support * filterscale;
    let one = f64::from(1u32 << PRECISION_BITS);
    let taps = window
        .map(|xx| {
            let center = (f64::from(xx) + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C's (int) casts truncate toward zero, as `as` does.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(i64::from(input));
            let mut k: Vec<f64> = (xmin..xmax)
                .map(|x| filter((x as f64 - center + 0.5) * ss))
                .collect();
            let ww: f64 = k.iter().sum();
            if ww != 0.0 {
                k.iter_mut().for_each(|v| *v /= ww);
            }
            let fixed = k
                .iter()
                .map(|&v| {
                    if v < 0.0 {
                        (-0.5 + v * one) as i32
                    } else {
                        (0.5 + v * one) as i32
                    }
                })
                .collect();
            (xmin as usize, fixed)
        })
        .collect();
    AxisWeights { taps }
}

/// Pillow's `clip8`: a fixed-point sum back to a byte.
fn clip8(sum: i32) -> u8 {
    if sum >= (1 << PRECISION_BITS << 8) {
        255
    } else if sum <= 0 {
        0
    } else {
        (sum >> PRECISION_BITS) as u8
    }
}

/// The window `[left, top, width, height]` of `img` resized by PIL to `scaled` (width, height) with
/// `interpolation`: equal, byte for byte, to `img.resize(scaled, filter).crop(window)` in Pillow.
pub fn resize_window(
    img: &RgbImage,
    scaled: [u32; 2],
    [left, top, width, height]: [u32; 4],
    interpolation: Interpolation,
) -> RgbImage {
    let columns = axis_weights(img.width(), scaled[0], left..left + width, interpolation);
    let rows = axis_weights(img.height(), scaled[1], top..top + height, interpolation);
    // The input rows the vertical pass reads, and the horizontal pass's output for them.
    let first = rows.taps.first().map_or(0, |t| t.0);
    let last = rows.taps.last().map_or(0, |t| t.0 + t.1.len());
    let half = 1 << (PRECISION_BITS - 1);
    let raw = img.as_raw();
    let row_len = img.width() as usize * 3;
    let mut temp = vec![0u8; (last - first) * width as usize * 3];
    for (y, out) in (first..last).zip(temp.chunks_exact_mut(width as usize * 3)) {
        let src = &raw[y * row_len..(y + 1) * row_len];
        for ((x0, k), px) in columns.taps.iter().zip(out.chunks_exact_mut(3)) {
            for (c, value) in px.iter_mut().enumerate() {
                let sum = k
                    .iter()
                    .enumerate()
                    .fold(half, |s, (i, &w)| s + i32::from(src[(x0 + i) * 3 + c]) * w);
                *value = clip8(sum);
            }
        }
    }
    let stride = width as usize * 3;
    let mut out = vec![0u8; height as usize * stride];
    for ((y0, k), row) in rows.taps.iter().zip(out.chunks_exact_mut(stride)) {
        for (i, value) in row.iter_mut().enumerate() {
            let sum = k.iter().enumerate().fold(half, |s, (j, &w)| {
                s + i32::from(temp[(y0 - first + j) * stride + i]) * w
            });
            *value = clip8(sum);
        }
    }
    RgbImage::from_raw(width, height, out).expect("buffer size matches")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_normalised_fixed_point_and_identity_at_scale_one() {
        let same = axis_weights(10, 10, 0..10, Interpolation::Bicubic);
        for (i, (x0, k)) in same.taps.iter().enumerate() {
            let at = i - x0;
            assert_eq!(k[at], 1 << PRECISION_BITS, "pixel {i} keeps itself");
            assert!(k.iter().enumerate().all(|(j, &w)| j == at || w == 0));
        }
        let reduce = axis_weights(100, 30, 0..30, Interpolation::Bilinear);
        for (_, k) in &reduce.taps {
            let sum: i32 = k.iter().sum();
            assert!(
                (sum - (1 << PRECISION_BITS)).abs() <= k.len() as i32,
                "{sum}"
            );
        }
    }

    #[test]
    fn a_window_equals_the_same_part_of_the_whole_resize() {
        let img = RgbImage::from_fn(97, 61, |x, y| {
            image::Rgb([
                (x * 7 % 256) as u8,
                (y * 13 % 256) as u8,
                ((x ^ y) * 5 % 256) as u8,
            ])
        });
        for interpolation in [Interpolation::Bicubic, Interpolation::Bilinear] {
            let whole = resize_window(&img, [50, 40], [0, 0, 50, 40], interpolation);
            let part = resize_window(&img, [50, 40], [7, 5, 30, 20], interpolation);
            for (x, y, px) in part.enumerate_pixels() {
                assert_eq!(px, whole.get_pixel(x + 7, y + 5));
            }
        }
    }
}
