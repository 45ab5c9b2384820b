//! Depthwise convolutions on NCHW batches with explicit (TF "SAME" or symmetric) padding, forward and
//! both gradients. burn's CPU backend has a fast depthwise forward but computes the input gradient with
//! a generic transposed convolution (after padding a copy of the input) and the weight gradient with one
//! sliced convolution per channel.
//!
//! Here each plane is first copied into a zero-padded buffer split by stride phase (row and column
//! modulo the stride). Every tap of the kernel then becomes one multiply-add over a single contiguous
//! run covering all output rows at once (with a few discarded columns between rows), so the inner loops
//! stay vectorised even on the 7- and 14-pixel-wide maps where per-row loops would be scalar.

use multiversion::multiversion;
use rayon::prelude::*;

/// Geometry of a depthwise convolution: one `kernel x kernel` filter per channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Depthwise {
    /// Images in the batch.
    pub batch: usize,
    /// Channels (each filtered by its own kernel).
    pub channels: usize,
    /// Input height and width.
    pub input: [usize; 2],
    /// Square kernel size.
    pub kernel: usize,
    /// Stride in both directions.
    pub stride: usize,
    /// Zero padding before the first row and column.
    pub pad_begin: [usize; 2],
    /// Zero padding after the last row and column.
    pub pad_end: [usize; 2],
}

impl Depthwise {
    /// Output height and width.
    pub fn output(&self) -> [usize; 2] {
        let size = |d: usize| {
            (self.input[d] + self.pad_begin[d] + self.pad_end[d] - self.kernel) / self.stride + 1
        };
        [size(0), size(1)]
    }

    fn plane_sizes(&self) -> (usize, usize) {
        let [oh, ow] = self.output();
        (self.input[0] * self.input[1], oh * ow)
    }

    /// `y = depthwise(x, weight)`; `weight` is `[channels, 1, k, k]`.
    pub fn forward(&self, x: &[f32], weight: &[f32]) -> Vec<f32> {
        let (in_plane, out_plane) = self.plane_sizes();
        self.map_planes(
            weight,
            (x, in_plane),
            out_plane,
            |layout, w, x, (phased, wide), y| {
                layout.split(x, phased);
                forward_taps(layout, phased, w, wide);
                layout.narrow(wide, y);
            },
        )
    }

    /// The gradient of the input, given the gradient `dy` of the output.
    pub fn input_grad(&self, weight: &[f32], dy: &[f32]) -> Vec<f32> {
        let (in_plane, out_plane) = self.plane_sizes();
        self.map_planes(
            weight,
            (dy, out_plane),
            in_plane,
            |layout, w, dy, (phased, wide), dx| {
                layout.widen(dy, wide);
                input_grad_taps(layout, wide, w, phased);
                layout.unsplit(phased, dx);
            },
        )
    }

    /// A new batch of `dst_plane`-sized planes, each computed in parallel by `f` from the matching
    /// `src_plane`-sized plane of `src`, its channel's kernel and per-task scratch buffers.
    fn map_planes(
        &self,
        weight: &[f32],
        (src, src_plane): (&[f32], usize),
        dst_plane: usize,
        f: impl Fn(&Phased, &[f32], &[f32], &mut (Vec<f32>, Vec<f32>), &mut [f32]) + Sync,
    ) -> Vec<f32> {
        let layout = Phased::new(self);
        let k2 = self.kernel * self.kernel;
        let mut dst = vec![0.0; self.batch * self.channels * dst_plane];
        dst.par_chunks_mut(dst_plane)
            .zip(src.par_chunks(src_plane))
            .enumerate()
            .for_each_init(
                || layout.scratch(),
                |scratch, (i, (dst, src))| {
                    let w = &weight[(i % self.channels) * k2..][..k2];
                    f(&layout, w, src, scratch, dst);
                },
            );
        dst
    }

    /// The gradient of the `[channels, 1, k, k]` weight: each channel's taps summed over the batch.
    pub fn weight_grad(&self, x: &[f32], dy: &[f32]) -> Vec<f32> {
        let (in_plane, out_plane) = self.plane_sizes();
        let layout = Phased::new(self);
        let k2 = self.kernel * self.kernel;
        let mut dw = vec![0.0; self.channels * k2];
        dw.par_chunks_mut(k2).enumerate().for_each_init(
            || layout.scratch(),
            |(phased, wide), (c, dw)| {
                for b in 0..self.batch {
                    let plane = b * self.channels + c;
                    layout.split(&x[plane * in_plane..][..in_plane], phased);
                    layout.widen(&dy[plane * out_plane..][..out_plane], wide);
                    weight_grad_taps(&layout, phased, wide, dw);
                }
            },
        );
        dw
    }
}

/// A plane zero-padded and split into `stride x stride` phase sub-planes of `rows x cols` each, and
/// the "wide" output grid of `out_h` rows of `cols` columns (the last `cols - out_w` of each row are
/// scratch).
///
/// Output `(oh, ow)` reads padded input `(oh * s + kh, ow * s + kw)`, which lies in phase sub-plane
/// `(kh % s, kw % s)` at `(oh + kh / s, ow + kw / s)`; so tap `(kh, kw)` reads the wide grid shifted by
/// a constant, one contiguous run per tap.
struct Phased {
    geometry: Depthwise,
    out: [usize; 2],
    /// Padded extent actually read: `(out - 1) * stride + kernel` on each axis.
    padded: [usize; 2],
    rows: usize,
    cols: usize,
    /// Per column phase, the input columns it holds: a contiguous run in each phased row.
    column_runs: Vec<ColumnRun>,
}

/// The input columns `first_column, first_column + stride, ...` (`count` of them), stored
/// contiguously from `offset` after the start of a padded row's phase-0 position.
struct ColumnRun {
    first_column: usize,
    count: usize,
    offset: usize,
}

impl Phased {
    fn new(g: &Depthwise) -> Self {
        let out = g.output();
        let padded = out.map(|o| (o - 1) * g.stride + g.kernel);
        let mut layout = Self {
            geometry: *g,
            out,
            padded,
            rows: padded[0].div_ceil(g.stride),
            cols: padded[1].div_ceil(g.stride),
            column_runs: Vec::new(),
        };
        let (s, left) = (g.stride, g.pad_begin[1]);
        // Columns past `limit` are never read.
        let limit = g.input[1].min(padded[1] - left);
        layout.column_runs = (0..s)
            .map(|phase| {
                let first_padded = left + (phase + s - left % s) % s;
                let first_column = first_padded - left;
                ColumnRun {
                    first_column,
                    count: limit.saturating_sub(first_column).div_ceil(s),
                    offset: layout.index(0, first_padded),
                }
            })
            .collect();
        layout
    }

    fn sub_plane(&self) -> usize {
        self.rows * self.cols
    }

    /// Length of the wide run every tap covers: up to the last real output column.
    fn span(&self) -> usize {
        (self.out[0] - 1) * self.cols + self.out[1]
    }

    fn scratch(&self) -> (Vec<f32>, Vec<f32>) {
        let s = self.geometry.stride;
        (
            vec![0.0; s * s * self.sub_plane()],
            vec![0.0; self.out[0] * self.cols],
        )
    }

    /// Where padded position `(r, c)` lies in the phased buffer.
    fn index(&self, r: usize, c: usize) -> usize {
        let s = self.geometry.stride;
        ((r % s) * s + c % s) * self.sub_plane() + (r / s) * self.cols + c / s
    }

    /// Start of tap `(kh, kw)`'s run in the phased buffer.
    fn tap(&self, kh: usize, kw: usize) -> usize {
        self.index(kh, kw)
    }

    /// The input rows that the convolution reads, each with where its padded row starts in the
    /// phased buffer.
    fn rows_read(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let (top, height) = (self.geometry.pad_begin[0], self.geometry.input[0]);
        (0..height)
            .map(move |r| (r, r + top))
            .filter(|&(_, pr)| pr < self.padded[0])
            .map(|(r, pr)| (r, self.index(pr, 0)))
    }

    /// Copies an input plane into the zero-padded phased buffer.
    fn split(&self, x: &[f32], phased: &mut [f32]) {
        phased.fill(0.0);
        let (width, s) = (self.geometry.input[1], self.geometry.stride);
        for (r, base) in self.rows_read() {
            let src = &x[r * width..][..width];
            for run in &self.column_runs {
                let dst = &mut phased[base + run.offset..][..run.count];
                let src = src[run.first_column..].iter().step_by(s);
                dst.iter_mut().zip(src).for_each(|(d, v)| *d = *v);
            }
        }
    }

    /// Gathers the input gradient from the phased buffer (positions never read get zero).
    fn unsplit(&self, phased: &[f32], dx: &mut [f32]) {
        dx.fill(0.0);
        let (width, s) = (self.geometry.input[1], self.geometry.stride);
        for (r, base) in self.rows_read() {
            let dst = &mut dx[r * width..][..width];
            for run in &self.column_runs {
                let src = &phased[base + run.offset..][..run.count];
                let dst = dst[run.first_column..].iter_mut().step_by(s);
                dst.zip(src).for_each(|(d, v)| *d = *v);
            }
        }
    }

    /// Copies an output-shaped plane into the wide grid, zeroing the scratch columns.
    fn widen(&self, y: &[f32], wide: &mut [f32]) {
        for (src, dst) in y
            .chunks_exact(self.out[1])
            .zip(wide.chunks_exact_mut(self.cols))
        {
            dst[..src.len()].copy_from_slice(src);
            dst[src.len()..].fill(0.0);
        }
    }

    /// Copies the real columns of the wide grid into an output-shaped plane.
    fn narrow(&self, wide: &[f32], y: &mut [f32]) {
        for (dst, src) in y
            .chunks_exact_mut(self.out[1])
            .zip(wide.chunks_exact(self.cols))
        {
            dst.copy_from_slice(&src[..dst.len()]);
        }
    }

    fn taps(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let k = self.geometry.kernel;
        (0..k * k).map(move |t| (t, self.tap(t / k, t % k)))
    }
}

#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma",
    "x86_64+avx2+fma"
))]
fn forward_taps(layout: &Phased, phased: &[f32], w: &[f32], wide: &mut [f32]) {
    let span = layout.span();
    let out = &mut wide[..span];
    for (t, start) in layout.taps() {
        let wv = w[t];
        let src = &phased[start..][..span];
        if t == 0 {
            out.iter_mut().zip(src).for_each(|(o, i)| *o = wv * i);
        } else {
            out.iter_mut().zip(src).for_each(|(o, i)| *o += wv * i);
        }
    }
}

#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma",
    "x86_64+avx2+fma"
))]
fn input_grad_taps(layout: &Phased, wide: &[f32], w: &[f32], phased: &mut [f32]) {
    let span = layout.span();
    let grad = &wide[..span];
    phased.fill(0.0);
    for (t, start) in layout.taps() {
        let wv = w[t];
        let dst = &mut phased[start..][..span];
        dst.iter_mut().zip(grad).for_each(|(d, g)| *d += wv * g);
    }
}

/// Lanes of independent partial sums, so the compiler can vectorise a reduction it may not reorder.
const LANES: usize = 16;

#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma",
    "x86_64+avx2+fma"
))]
fn weight_grad_taps(layout: &Phased, phased: &[f32], wide: &[f32], dw: &mut [f32]) {
    let span = layout.span();
    let grad = &wide[..span];
    for (t, start) in layout.taps() {
        let src = &phased[start..][..span];
        let mut acc = [0f32; LANES];
        let (g_chunks, s_chunks) = (grad.chunks_exact(LANES), src.chunks_exact(LANES));
        let tail: f32 = g_chunks
            .remainder()
            .iter()
            .zip(s_chunks.remainder())
            .map(|(g, s)| g * s)
            .sum();
        for (g, s) in g_chunks.zip(s_chunks) {
            for lane in 0..LANES {
                acc[lane] += g[lane] * s[lane];
            }
        }
        dw[t] += acc.iter().sum::<f32>() + tail;
    }
}
