//! Training-mode batch norm on NCHW batches, optionally followed by swish, forward and backward in two
//! passes each. burn's default batch norm is a chain of about ten tensor operations, two of which copy
//! the batch into a channel-major layout; here the statistics, the normalisation and the activation are
//! computed per channel on the planes as they lie, and the backward recomputes the pre-activation from
//! the input instead of keeping it.

use effnet_engine::activation::sigmoid;
use multiversion::multiversion;
use rayon::prelude::*;

/// Batch-norm shapes and settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNorm {
    /// Images in the batch.
    pub batch: usize,
    /// Channels (each normalised over the batch and its pixels).
    pub channels: usize,
    /// Pixels per channel (height x width).
    pub pixels: usize,
    /// Added to the variance before the square root.
    pub epsilon: f64,
    /// Whether swish follows the normalisation.
    pub swish: bool,
}

/// Output of [`BatchNorm::forward`].
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    /// The normalised (and activated) batch.
    pub output: Vec<f32>,
    /// Per-channel batch mean.
    pub mean: Vec<f32>,
    /// Per-channel biased batch variance.
    pub variance: Vec<f32>,
}

/// Output of [`BatchNorm::backward`].
#[derive(Debug, Clone, PartialEq)]
pub struct Gradients {
    /// Gradient of the input.
    pub input: Vec<f32>,
    /// Gradient of the scale.
    pub gamma: Vec<f32>,
    /// Gradient of the shift.
    pub beta: Vec<f32>,
}

/// Lanes of independent partial sums, so the compiler can vectorise reductions it may not reorder.
const LANES: usize = 16;

/// `swish(z)` and its derivative `s + z s (1 - s)`.
#[inline(always)]
fn swish_and_slope(z: f32) -> (f32, f32) {
    let s = sigmoid(z);
    (z * s, s * (1.0 + z * (1.0 - s)))
}

/// `(Σ (x - shift), Σ (x - shift)²)` over one plane in one pass, with [`LANES`] partial sums each.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma",
    "x86_64+avx2+fma"
))]
fn plane_moments(x: &[f32], shift: f32) -> (f32, f32) {
    let (mut sum, mut squares) = ([0f32; LANES], [0f32; LANES]);
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for lane in 0..LANES {
            let d = chunk[lane] - shift;
            sum[lane] += d;
            squares[lane] += d * d;
        }
    }
    for (lane, v) in tail.iter().enumerate() {
        let d = v - shift;
        sum[lane] += d;
        squares[lane] += d * d;
    }
    (sum.iter().sum(), squares.iter().sum())
}

#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma",
    "x86_64+avx2+fma"
))]
fn normalize_plane(x: &[f32], y: &mut [f32], scale: f32, shift: f32, swish: bool) {
    let pairs = y.iter_mut().zip(x);
    if swish {
        pairs.for_each(|(y, x)| *y = swish_and_slope(x * scale + shift).0);
    } else {
        pairs.for_each(|(y, x)| *y = x * scale + shift);
    }
}

/// Per-channel constants of the backward pass: `z = x * scale + shift`, `xhat = (x - mean) * inv_std`.
#[derive(Clone, Copy)]
struct ChannelAffine {
    mean: f32,
    inv_std: f32,
    scale: f32,
    shift: f32,
}

impl ChannelAffine {
    fn new(mean: f32, variance: f32, gamma: f32, beta: f32, epsilon: f64) -> Self {
        let inv_std = (1.0 / (f64::from(variance) + epsilon).sqrt()) as f32;
        Self {
            mean,
            inv_std,
            scale: gamma * inv_std,
            shift: beta - mean * gamma * inv_std,
        }
    }
}

/// The gradient reaching the normalised value: `dy` through swish when there is one.
#[inline(always)]
fn pre_activation_grad<const SWISH: bool>(a: ChannelAffine, x: f32, dy: f32) -> f32 {
    if SWISH {
        dy * swish_and_slope(x * a.scale + a.shift).1
    } else {
        dy
    }
}

/// `(Σ dz, Σ dz * xhat)` over one plane, in one pass with [`LANES`] partial sums each.
#[inline(always)]
fn grad_sums<const SWISH: bool>(a: ChannelAffine, x: &[f32], dy: &[f32]) -> (f32, f32) {
    let (mut sum, mut sum_xhat) = ([0f32; LANES], [0f32; LANES]);
    let mut add = |lane: usize, x: f32, dy: f32| {
        let dz = pre_activation_grad::<SWISH>(a, x, dy);
        sum[lane] += dz;
        sum_xhat[lane] += dz * (x - a.mean) * a.inv_std;
    };
    let (xs, dys) = (x.chunks_exact(LANES), dy.chunks_exact(LANES));
    let tail = xs.remainder().iter().zip(dys.remainder());
    tail.enumerate()
        .for_each(|(lane, (&x, &dy))| add(lane, x, dy));
    for (x, dy) in xs.zip(dys) {
        for lane in 0..LANES {
            add(lane, x[lane], dy[lane]);
        }
    }
    (sum.iter().sum(), sum_xhat.iter().sum())
}

#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma",
    "x86_64+avx2+fma"
))]
fn grad_sums_plane(a: ChannelAffine, x: &[f32], dy: &[f32], swish: bool) -> (f32, f32) {
    if swish {
        grad_sums::<true>(a, x, dy)
    } else {
        grad_sums::<false>(a, x, dy)
    }
}

#[inline(always)]
fn input_grad<const SWISH: bool>(
    a: ChannelAffine,
    (mean_dz, mean_dz_xhat): (f32, f32),
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) {
    for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
        let xhat = (x - a.mean) * a.inv_std;
        let dz = pre_activation_grad::<SWISH>(a, x, dy);
        *dx = a.scale * (dz - mean_dz - xhat * mean_dz_xhat);
    }
}

#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma",
    "x86_64+avx2+fma"
))]
fn input_grad_plane(
    a: ChannelAffine,
    means: (f32, f32),
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    swish: bool,
) {
    if swish {
        input_grad::<true>(a, means, x, dy, dx)
    } else {
        input_grad::<false>(a, means, x, dy, dx)
    }
}

impl BatchNorm {
    fn count(&self) -> f64 {
        (self.batch * self.pixels) as f64
    }

    /// The planes of channel `c`, one per image.
    fn planes<'a>(&self, data: &'a [f32], c: usize) -> impl Iterator<Item = &'a [f32]> + 'a {
        let (p, channels) = (self.pixels, self.channels);
        (0..self.batch).map(move |b| &data[(b * channels + c) * p..][..p])
    }

    /// Normalises `x` with its own batch statistics, scales by `gamma`, shifts by `beta`, then applies
    /// swish if configured.
    pub fn forward(&self, x: &[f32], gamma: &[f32], beta: &[f32]) -> Normalized {
        // One pass per channel: moments about the channel's first value (a sample, so near the mean
        // and free of the cancellation that raw sums of squares suffer), combined in f64.
        let stats: Vec<(f32, f32)> = (0..self.channels)
            .into_par_iter()
            .map(|c| {
                let shift = x[c * self.pixels];
                let (mut sum, mut squares) = (0f64, 0f64);
                for plane in self.planes(x, c) {
                    let (s, q) = plane_moments(plane, shift);
                    sum += f64::from(s);
                    squares += f64::from(q);
                }
                let offset = sum / self.count();
                let variance = (squares / self.count() - offset * offset).max(0.0);
                ((f64::from(shift) + offset) as f32, variance as f32)
            })
            .collect();
        let (mean, variance): (Vec<f32>, Vec<f32>) = stats.into_iter().unzip();
        let mut output = vec![0.0; x.len()];
        output
            .par_chunks_mut(self.pixels)
            .zip(x.par_chunks(self.pixels))
            .enumerate()
            .for_each(|(i, (y, x))| {
                let c = i % self.channels;
                let a = ChannelAffine::new(mean[c], variance[c], gamma[c], beta[c], self.epsilon);
                normalize_plane(x, y, a.scale, a.shift, self.swish);
            });
        Normalized {
            output,
            mean,
            variance,
        }
    }

    /// Gradients of the input, `gamma` and `beta` given the gradient `dy` of the output, the input and
    /// the statistics [`forward`](Self::forward) returned.
    pub fn backward(
        &self,
        x: &[f32],
        gamma: &[f32],
        beta: &[f32],
        mean: &[f32],
        variance: &[f32],
        dy: &[f32],
    ) -> Gradients {
        let affine =
            |c: usize| ChannelAffine::new(mean[c], variance[c], gamma[c], beta[c], self.epsilon);
        let sums: Vec<(f32, f32)> = (0..self.channels)
            .into_par_iter()
            .map(|c| {
                let a = affine(c);
                let (mut sum, mut sum_xhat) = (0f64, 0f64);
                for (x, dy) in self.planes(x, c).zip(self.planes(dy, c)) {
                    let (s, sx) = grad_sums_plane(a, x, dy, self.swish);
                    sum += f64::from(s);
                    sum_xhat += f64::from(sx);
                }
                (sum as f32, sum_xhat as f32)
            })
            .collect();
        let (beta_grad, gamma_grad): (Vec<f32>, Vec<f32>) = sums.into_iter().unzip();
        let m = self.count() as f32;
        let mut input = vec![0.0; x.len()];
        input
            .par_chunks_mut(self.pixels)
            .zip(x.par_chunks(self.pixels).zip(dy.par_chunks(self.pixels)))
            .enumerate()
            .for_each(|(i, (dx, (x, dy)))| {
                let c = i % self.channels;
                let means = (beta_grad[c] / m, gamma_grad[c] / m);
                input_grad_plane(affine(c), means, x, dy, dx, self.swish);
            });
        Gradients {
            input,
            gamma: gamma_grad,
            beta: beta_grad,
        }
    }
}
