//! Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) within a batch, as timm mixes: image `i` is
//! mixed with image `n - 1 - i` (the batch reversed), one mixing weight `lambda ~ Beta(alpha, alpha)` per
//! batch, and the targets mixed with the same weight. With both enabled, each batch uses one of them with
//! equal chance.

use crate::batches::Batch;
use rand::Rng;
use rand_distr::{Beta, Distribution};
use serde::{Deserialize, Serialize};

/// Which mixing a run uses, by its Beta distribution's `alpha` (`None`: off).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Mixing {
    /// Mixup's `alpha`: the images blended pixel by pixel.
    pub mixup: Option<f64>,
    /// CutMix's `alpha`: a box of the partner image pasted in.
    pub cutmix: Option<f64>,
}

impl Mixing {
    /// Whether any mixing is on.
    pub fn is_on(&self) -> bool {
        self.mixup.is_some() || self.cutmix.is_some()
    }
}

/// The share of a mixed image that belongs to its own label (the rest belongs to its partner's).
fn draw_lambda(alpha: f64, rng: &mut impl Rng) -> f64 {
    // A valid alpha is checked with the run's options; a Beta of it always exists.
    Beta::new(alpha, alpha)
        .map_or(1.0, |beta| beta.sample(rng))
        .clamp(0.0, 1.0)
}

/// The partner of image `i` in a batch of `n`.
pub fn partner(i: usize, n: usize) -> usize {
    n - 1 - i
}

/// Runs `each` on every pair of partners `(i, n - 1 - i)`, `i < n - 1 - i`, with their images (a
/// middle image is its own partner and is left as it is). Partnering is symmetric, so each pair is
/// mixed in place, without a copy of the batch.
fn for_each_pair(batch: &mut Batch, mut each: impl FnMut(&mut [f32], &mut [f32])) {
    let n = batch.len();
    let per_image = batch.images.len() / n.max(1);
    for i in 0..n / 2 {
        let (front, back) = batch.images.split_at_mut(partner(i, n) * per_image);
        each(
            &mut front[i * per_image..][..per_image],
            &mut back[..per_image],
        );
    }
}

/// Blends every image with its partner: `lambda * own + (1 - lambda) * partner's`.
fn mixup(batch: &mut Batch, lambda: f32) {
    for_each_pair(batch, |a, b| {
        for (x, y) in a.iter_mut().zip(b.iter_mut()) {
            (*x, *y) = (
                lambda * *x + (1.0 - lambda) * *y,
                lambda * *y + (1.0 - lambda) * *x,
            );
        }
    });
}

/// A box of `1 - lambda` of the area, centred anywhere and clipped to the image: `(top, left, bottom,
/// right)`, exclusive at the end.
fn cut_box(size: usize, lambda: f64, rng: &mut impl Rng) -> (usize, usize, usize, usize) {
    let side = (size as f64 * (1.0 - lambda).sqrt()).round() as usize;
    let (cy, cx) = (rng.random_range(0..size), rng.random_range(0..size));
    let (top, bottom) = (cy.saturating_sub(side / 2), (cy + side / 2).min(size));
    let (left, right) = (cx.saturating_sub(side / 2), (cx + side / 2).min(size));
    (top, left, bottom, right)
}

/// Pastes the box of every image's partner into it (NCHW): partners swap their boxes. Returns the share
/// of the area left the image's own.
fn cutmix(batch: &mut Batch, (top, left, bottom, right): (usize, usize, usize, usize)) -> f64 {
    let size = batch.size;
    let plane = size * size;
    for_each_pair(batch, |a, b| {
        for c in 0..3 {
            for y in top..bottom {
                let row = c * plane + y * size;
                a[row + left..row + right].swap_with_slice(&mut b[row + left..row + right]);
            }
        }
    });
    1.0 - ((bottom - top) * (right - left)) as f64 / plane as f64
}

/// Mixes `batch` as `mixing` says, recording the weight of each image's own label in `batch.mix`.
pub fn mix_batch(batch: &mut Batch, mixing: &Mixing, rng: &mut impl Rng) {
    let (alpha, use_cutmix) = match (mixing.mixup, mixing.cutmix) {
        (None, None) => return,
        (Some(mixup), None) => (mixup, false),
        (None, Some(cutmix)) => (cutmix, true),
        (Some(_), Some(cutmix)) if rng.random_bool(0.5) => (cutmix, true),
        (Some(mixup), Some(_)) => (mixup, false),
    };
    let drawn = draw_lambda(alpha, rng);
    let lambda = if use_cutmix {
        let cut = cut_box(batch.size, drawn, rng);
        cutmix(batch, cut)
    } else {
        mixup(batch, drawn as f32);
        drawn
    };
    batch.mix = Some(lambda as f32);
}

/// The training targets of `batch` as `classes`-wide rows: label smoothing's `1 - smoothing +
/// smoothing / classes` on the label and `smoothing / classes` elsewhere, blended with the partner's
/// row when the batch is mixed.
pub fn soft_targets(batch: &Batch, classes: usize, smoothing: f64) -> Vec<f32> {
    let n = batch.len();
    let off = (smoothing / classes as f64) as f32;
    let on = (1.0 - smoothing) as f32;
    let own = batch.mix.unwrap_or(1.0);
    let mut target = vec![off; n * classes];
    for (i, &label) in batch.labels.iter().enumerate() {
        target[i * classes + label] += own * on;
        let other = batch.labels[partner(i, n)];
        target[i * classes + other] += (1.0 - own) * on;
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// Image `i` filled with the value `i + 1`.
    fn batch(n: usize, size: usize) -> Batch {
        Batch {
            images: (0..n)
                .flat_map(|i| std::iter::repeat_n((i + 1) as f32, 3 * size * size))
                .collect(),
            labels: (0..n).collect(),
            size,
            mix: None,
        }
    }

    #[test]
    fn mixup_blends_each_image_with_the_reversed_batch_and_its_targets_alike() {
        let mut b = batch(4, 2);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mixing = Mixing {
            mixup: Some(0.2),
            cutmix: None,
        };
        mix_batch(&mut b, &mixing, &mut rng);
        let lambda = b.mix.expect("mixed");
        assert!((0.0..=1.0).contains(&lambda));
        // Image 0 (value 1) with image 3 (value 4).
        let expected = lambda + (1.0 - lambda) * 4.0;
        assert!(b.images[..12].iter().all(|v| (v - expected).abs() < 1e-6));
        let t = soft_targets(&b, 4, 0.0);
        assert_eq!(&t[..4], &[lambda, 0.0, 0.0, 1.0 - lambda]);
        // Each row still sums to one with smoothing.
        let t = soft_targets(&b, 4, 0.1);
        assert!(t
            .chunks(4)
            .all(|row| (row.iter().sum::<f32>() - 1.0).abs() < 1e-6));
    }

    #[test]
    fn cutmix_pastes_a_box_whose_area_sets_the_weight() {
        let mut b = batch(3, 16);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mixing = Mixing {
            mixup: None,
            cutmix: Some(1.0),
        };
        mix_batch(&mut b, &mixing, &mut rng);
        let lambda = b.mix.expect("mixed");
        // Image 0's planes: its own value 1 outside the box, its partner's 3 inside.
        let plane = 16 * 16;
        for c in 0..3 {
            let own = b.images[c * plane..][..plane]
                .iter()
                .filter(|&&v| v == 1.0)
                .count();
            let pasted = b.images[c * plane..][..plane]
                .iter()
                .filter(|&&v| v == 3.0)
                .count();
            assert_eq!(own + pasted, plane);
            assert!((own as f32 / plane as f32 - lambda).abs() < 1e-6);
        }
        // The middle image is its own partner and stays whole.
        assert!(b.images[3 * plane..6 * plane].iter().all(|&v| v == 2.0));
    }

    #[test]
    fn no_mixing_leaves_the_batch_and_one_hot_targets() {
        let mut b = batch(2, 2);
        let before = b.clone();
        mix_batch(
            &mut b,
            &Mixing::default(),
            &mut rand::rngs::StdRng::seed_from_u64(0),
        );
        assert_eq!(b, before);
        assert_eq!(soft_targets(&b, 3, 0.0), vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn the_box_covers_about_one_minus_lambda_when_not_clipped() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..50 {
            let (t, l, b, r) = cut_box(64, 0.75, &mut rng);
            assert!(b <= 64 && r <= 64 && t <= b && l <= r);
            // Half the side (sqrt of 0.25), at most.
            assert!(b - t <= 32 && r - l <= 32);
        }
    }
}
