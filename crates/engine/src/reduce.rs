//! Per-channel sums and means over NHWC maps, and sums of partial results in a fixed order (so a split
//! computation's result does not depend on which thread finished first).

use crate::feature_map::FeatureMap;
use crate::isa::kernels;

/// Per-channel sums over NHWC pixels of `channels` values: f32 over runs of [`SUM_RUN`] pixels (which
/// vectorises), each run's total added in f64.
pub(crate) fn channel_sums(pixels: &[f32], channels: usize) -> Vec<f64> {
    (kernels().channel_sums)(pixels, channels)
}

/// [`channel_sums`], inlined into each instruction set's table entry.
#[inline(always)]
pub(crate) fn channel_sums_body(pixels: &[f32], channels: usize) -> Vec<f64> {
    let mut sums = vec![0f64; channels];
    let mut run = vec![0f32; channels];
    for pixels in pixels.chunks(channels * SUM_RUN) {
        run.fill(0.0);
        for px in pixels.chunks_exact(channels) {
            run.iter_mut().zip(px).for_each(|(s, &v)| *s += v);
        }
        sums.iter_mut()
            .zip(&run)
            .for_each(|(s, &v)| *s += f64::from(v));
    }
    sums
}

/// Pixels summed in f32 before the f64 total: the rounding error of a run stays below 64 ulps.
const SUM_RUN: usize = 64;

/// Per-channel mean over all pixels (accumulated in f64).
pub fn global_average(x: &FeatureMap) -> Vec<f32> {
    means(channel_sums(&x.data, x.channels), x.height * x.width)
}

/// Adds per-task channel sums in task order, so the total does not depend on scheduling.
pub(crate) fn total_sums(parts: impl IntoIterator<Item = Vec<f64>>, channels: usize) -> Vec<f64> {
    let mut sums = vec![0f64; channels];
    add_in_order(&mut sums, parts);
    sums
}

/// Adds each of `parts` into `total`, element by element, one part after another: the partial results of
/// a split computation add up the same whichever thread finished first.
pub(crate) fn add_in_order<T: Copy + std::ops::AddAssign>(
    total: &mut [T],
    parts: impl IntoIterator<Item = impl AsRef<[T]>>,
) {
    for part in parts {
        total
            .iter_mut()
            .zip(part.as_ref())
            .for_each(|(t, &p)| *t += p);
    }
}

/// Per-channel means from per-channel sums over `pixels` pixels.
pub(crate) fn means(sums: Vec<f64>, pixels: usize) -> Vec<f32> {
    let n = pixels as f64;
    sums.into_iter().map(|s| (s / n) as f32).collect()
}
