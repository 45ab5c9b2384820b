//! The GEMM of 1x1 (and dense) convolutions: weights packed once, when the layer is prepared, into
//! panels of [`PANEL`] output channels, and register tiles of pixels x one panel (the kernel table's
//! tile kernel, see [`crate::tile`]) that read each input value straight from the NHWC map (so the input
//! needs no packing) and apply bias, activation and residual before the output's only store.
//!
//! Written by hand because the `gemm` crate packs both operands on every call and leaves the epilogue to
//! a second pass over the output: on B0's layer shapes the AVX-512 kernel takes 0.45-0.7x the time of
//! `gemm` plus that pass.

use crate::buffer::{zeros, Buffer};
use crate::isa::kernels;
use crate::pool;
use effnet_arch::variant::Activation;
use std::ops::Range;

/// Output channels per panel: two AVX-512 registers, four AVX2 ones, eight NEON ones.
pub(crate) const PANEL: usize = 32;

/// A row-major `[k][n]` weight matrix as consecutive `[k][PANEL]` panels of columns, the last one padded
/// with zeros to a whole number of registers.
#[derive(Debug, Clone)]
pub struct Panels {
    data: Buffer,
    k: usize,
    n: usize,
}

impl Panels {
    /// Packs a row-major `[k][n]` matrix.
    pub fn pack(weight: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(weight.len(), k * n, "a [k][n] weight matrix");
        let mut data = zeros(n.div_ceil(PANEL) * PANEL * k);
        for (p, panel) in data.chunks_exact_mut(PANEL * k).enumerate() {
            let cols = p * PANEL..((p + 1) * PANEL).min(n);
            for (dst, src) in panel.chunks_exact_mut(PANEL).zip(weight.chunks_exact(n)) {
                dst[..cols.len()].copy_from_slice(&src[cols.clone()]);
            }
        }
        Self { data, k, n }
    }

    /// The row-major `[k][n]` matrix, unpacked (the inverse of [`Panels::pack`]).
    pub fn unpack(&self) -> Vec<f32> {
        let mut weight = vec![0f32; self.k * self.n];
        for (p, panel) in self.data.chunks_exact(PANEL * self.k).enumerate() {
            let cols = p * PANEL..((p + 1) * PANEL).min(self.n);
            for (src, dst) in panel
                .chunks_exact(PANEL)
                .zip(weight.chunks_exact_mut(self.n))
            {
                dst[cols.clone()].copy_from_slice(&src[..cols.len()]);
            }
        }
        weight
    }

    /// Number of weights (`k * n`, without the padding).
    pub fn weight_count(&self) -> usize {
        self.k * self.n
    }

    /// Number of panels.
    pub fn count(&self) -> usize {
        self.n.div_ceil(PANEL)
    }

    /// Consecutive ranges of panels, one per thread of the current rayon pool (fewer if there are fewer
    /// panels): how the batch-1 paths split output channels across threads.
    pub(crate) fn per_thread(&self) -> Vec<Range<usize>> {
        split_evenly(self.count(), rayon::current_num_threads())
    }

    /// The output channels of `panels`.
    pub(crate) fn columns(&self, panels: &Range<usize>) -> Range<usize> {
        panels.start * PANEL..(panels.end * PANEL).min(self.n)
    }

    /// The same matrix with row `i` scaled by `scale[i]` (squeeze-excite's gate folded into the weights),
    /// in a pooled buffer: hand it to [`Panels::recycle`] when done.
    pub(crate) fn scaled_rows(&self, scale: &[f32]) -> Self {
        assert_eq!(scale.len(), self.k, "one scale per weight row");
        let mut data = pool::take(self.data.len());
        for (dst, src) in data
            .chunks_exact_mut(PANEL * self.k)
            .zip(self.data.chunks_exact(PANEL * self.k))
        {
            for ((dst, src), s) in dst
                .chunks_exact_mut(PANEL)
                .zip(src.chunks_exact(PANEL))
                .zip(scale)
            {
                dst.iter_mut().zip(src).for_each(|(d, w)| *d = w * s);
            }
        }
        Self { data, ..*self }
    }

    /// Returns a buffer made by [`Panels::scaled_rows`] to the pool.
    pub(crate) fn recycle(self) {
        pool::give(self.data);
    }

    /// Rows `rows` of the matrix (a range of input channels), every column.
    pub(crate) fn rows(&self, rows: Range<usize>) -> PanelRows<'_> {
        assert!(
            rows.start <= rows.end && rows.end <= self.k,
            "rows of the matrix"
        );
        PanelRows {
            panels: self,
            first: rows.start,
            k: rows.len(),
        }
    }
}

/// Consecutive rows `first..first + k` of packed weights, every column: [`gemm()`]'s weight operand, so a
/// product can run over part of `k` (inputs holding just those channels, for a sum of partial products).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PanelRows<'a> {
    panels: &'a Panels,
    first: usize,
    k: usize,
}

impl<'a> From<&'a Panels> for PanelRows<'a> {
    fn from(panels: &'a Panels) -> Self {
        panels.rows(0..panels.k)
    }
}

impl PanelRows<'_> {
    /// Input channels (rows).
    pub(crate) fn k(&self) -> usize {
        self.k
    }

    /// Output channels.
    pub(crate) fn n(&self) -> usize {
        self.panels.n
    }

    /// Number of panels.
    pub(crate) fn count(&self) -> usize {
        self.panels.count()
    }

    /// Panel `p`'s first row of these: `k` rows of [`PANEL`] floats follow it.
    pub(crate) fn panel(&self, p: usize) -> &[f32] {
        &self.panels.data[(p * self.panels.k + self.first) * PANEL..][..self.k * PANEL]
    }
}

/// `0..count` as `min(parts, count)` consecutive ranges whose lengths differ by at most one, the shorter
/// ones first. A parallel iterator runs its first item on the calling thread, which is the slower one in
/// a split image: it also runs the serial steps between the parallel regions, and every buffer of the
/// block comes from its pool. Timed per share on B0's 7 x 7 blocks (36 panels, equal shares), the calling
/// thread's share took 3-20% longer; so where the panels do not divide evenly (15 and 21 of them at 14 x
/// 14) it gets the smaller share.
fn split_evenly(count: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.clamp(1, count.max(1));
    let (base, longer) = (count / parts, count % parts);
    let mut first = 0;
    (0..parts)
        .map(|i| {
            let len = base + usize::from(i >= parts - longer);
            first += len;
            first - len..first
        })
        .filter(|range| !range.is_empty())
        .collect()
}

/// What the kernel adds to `x * weight` before storing: bias, activation, then a residual laid out like
/// the output.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Epilogue<'a> {
    pub bias: &'a [f32],
    pub activation: Option<Activation>,
    pub residual: Option<&'a [f32]>,
}

/// `out = act(x * w + bias) + residual` for pixel rows `x` (of `w`'s `k` values) into `out` (rows of its
/// `n` channels).
pub(crate) fn gemm_rows(x: &[f32], w: PanelRows, epilogue: Epilogue, out: &mut [f32]) {
    let m = x.len() / w.k.max(1);
    assert!(x.len() == m * w.k && out.len() == m * w.n() && epilogue.bias.len() == w.n());
    assert!(epilogue.residual.is_none_or(|r| r.len() == out.len()));
    let dest = Dest::rows(out.as_mut_ptr(), w.n(), 0);
    // SAFETY: `out` is exclusively borrowed and holds the `m x n` outputs (asserted above).
    unsafe { gemm(x, w, epilogue, dest, 0..w.count()) }
}

/// [`gemm_rows`] restricted to the columns of `panels`, for pixel rows `x` that are whole lines of `width`
/// pixels of an image, written into the lines of a wider (padded) map of just those columns: line `i`'s
/// outputs start at `out[i * line_stride]`, and what lies between them is left alone. One call covers
/// many lines, so its register tiles are full even on a 7-pixel-wide map.
pub(crate) fn gemm_lines(
    x: &[f32],
    w: &Panels,
    epilogue: Epilogue,
    (width, line_stride): (usize, usize),
    panels: Range<usize>,
    out: &mut [f32],
) {
    let cols = w.columns(&panels);
    let w = PanelRows::from(w);
    let (m, c) = (x.len() / w.k.max(1), cols.len());
    assert!(
        x.len() == m * w.k && width > 0 && m.is_multiple_of(width) && epilogue.residual.is_none()
    );
    assert!(panels.end <= w.count() && width * c <= line_stride && epilogue.bias.len() == w.n());
    assert!(m == 0 || (m / width - 1) * line_stride + width * c <= out.len());
    let dest = Dest {
        lines: Some((width, line_stride)),
        ..Dest::rows(out.as_mut_ptr(), c, cols.start)
    };
    // SAFETY: `out` is exclusively borrowed and holds every line's `width` pixels of the columns of
    // `panels` (asserted above).
    unsafe { gemm(x, w, epilogue, dest, panels) }
}

/// Where [`gemm()`] writes: column `c` of product row `r` goes to `start(r) + c - first_col`, where `start(r)`
/// is `ptr + r * row_len`, or, with `lines = Some((per_line, stride))`,
/// `ptr + (r / per_line) * stride + (r % per_line) * row_len`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dest {
    /// Where row 0 goes.
    pub ptr: *mut f32,
    /// Floats from one row to the next.
    pub row_len: usize,
    /// The first column written (at `start(r)` itself).
    pub first_col: usize,
    /// Rows per line and floats from one line to the next, when the rows are lines of an image stored
    /// in a wider buffer (see [`gemm_lines`]); `None` when rows follow each other.
    pub lines: Option<(usize, usize)>,
}

impl Dest {
    /// Consecutive rows `row_len` floats apart, starting at column `first_col`.
    pub(crate) fn rows(ptr: *mut f32, row_len: usize, first_col: usize) -> Self {
        Self {
            ptr,
            row_len,
            first_col,
            lines: None,
        }
    }

    /// The rows from `first` that lie in one line: how many of them (at most `m - first`), and where the
    /// first of them goes.
    ///
    /// # Safety
    /// Row `first` must be inside the destination (the contract of [`gemm()`]).
    pub(crate) unsafe fn run(&self, first: usize, m: usize) -> (usize, *mut f32) {
        let (per_line, line_stride) = self.lines.unwrap_or((m.max(1), 0));
        let (line, at) = (first / per_line, first % per_line);
        let offset = line * line_stride + at * self.row_len;
        // SAFETY: the caller's contract.
        ((per_line - at).min(m - first), unsafe {
            self.ptr.add(offset)
        })
    }
}

/// [`gemm_rows`] restricted to the columns of `panels`, writing through a pointer: parallel calls can fill
/// disjoint column ranges of one output, or each its own buffer of just its columns.
///
/// # Safety
/// `dest` must address, for each of the `x.len() / k` rows (`k` the rows of `w`; placed as [`Dest`] says),
/// the columns of `panels` (from `first_col`, the first of them, on), and nothing else may access those
/// elements during the call. `panels` must lie within the matrix's panels, `epilogue.bias` must hold one
/// value per column of the matrix and a residual `x.len() / k` rows of as many.
pub(crate) unsafe fn gemm(
    x: &[f32],
    w: PanelRows,
    epilogue: Epilogue,
    dest: Dest,
    panels: Range<usize>,
) {
    let m = x.len() / w.k.max(1);
    let layout = InputLayout::rows(w.k);
    // SAFETY: the caller's contract; plain rows of `k` values are exactly `x`.
    unsafe { (kernels().gemm)(x.as_ptr(), m, layout, w, epilogue, dest, panels) }
}

/// Where a GEMM finds each pixel's `k` inputs: value `j` of segment `s` of pixel `r` is at
/// `r * pixel + s * segment.1 + j` from the first pixel's, in segments of `segment.0` values. Plain rows of
/// `k` values are one segment with `pixel = k`; the patches of a dense convolution, read straight from
/// its NHWC input, are one segment of `kernel * channels` values per kernel row, `segment.1` apart (the
/// input's row length), with `pixel = stride * channels`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InputLayout {
    /// Floats from one pixel's inputs to the next one's.
    pub pixel: usize,
    /// Values per segment and floats from one segment to the next.
    pub segment: (usize, usize),
}

impl InputLayout {
    /// Consecutive rows of `k` values.
    pub(crate) fn rows(k: usize) -> Self {
        Self {
            pixel: k,
            segment: (k, 0),
        }
    }
}

/// The GEMM of a dense convolution on `m` output pixels of one row whose patches lie inside its NHWC
/// input `x`, read from there without an im2col copy: pixel 0's patch starts at `x[origin]` and the
/// patches are laid out as `layout` says. Writes `m` rows of the `n` outputs to `out`.
pub(crate) fn gemm_patches(
    x: &[f32],
    origin: usize,
    layout: InputLayout,
    w: &Panels,
    epilogue: Epilogue,
    out: &mut [f32],
) {
    let m = out.len() / w.n.max(1);
    let (len, stride) = layout.segment;
    assert!(
        len > 0 && w.k.is_multiple_of(len) && out.len() == m * w.n && epilogue.residual.is_none()
    );
    let last = (w.k / len - 1) * stride + len;
    assert!(
        m == 0 || origin + (m - 1) * layout.pixel + last <= x.len(),
        "patches inside the input"
    );
    assert_eq!(epilogue.bias.len(), w.n);
    let dest = Dest::rows(out.as_mut_ptr(), w.n, 0);
    let x = x[origin..].as_ptr();
    // SAFETY: the asserts keep every patch inside `x`, and `out` (exclusively borrowed) holds the
    // `m x n` outputs.
    unsafe { (kernels().gemm)(x, m, layout, w.into(), epilogue, dest, 0..w.count()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{activate, values};

    /// `act(x * w + bias) + residual` in f64, straight from the row-major weights.
    fn reference(x: &[f32], w: &[f32], (k, n): (usize, usize), e: Epilogue) -> Vec<f32> {
        let m = x.len() / k;
        let mut out = vec![0f32; m * n];
        for p in 0..m {
            for c in 0..n {
                let dot: f64 = (0..k)
                    .map(|i| f64::from(x[p * k + i]) * f64::from(w[i * n + c]))
                    .sum();
                let v = activate(e.activation, dot + f64::from(e.bias[c]));
                out[p * n + c] = (v + e.residual.map_or(0.0, |r| f64::from(r[p * n + c]))) as f32;
            }
        }
        out
    }

    type Path = Box<dyn Fn(&[f32], PanelRows, Epilogue, Dest, Range<usize>)>;

    /// The GEMM of every instruction set this machine runs, on plain rows; unsafe to call as
    /// [`gemm()`] is.
    fn paths() -> Vec<(&'static str, Path)> {
        crate::isa::tables()
            .into_iter()
            .map(|(isa, table)| {
                let path: Path = Box::new(move |x, w, e, d, p| {
                    let m = x.len() / w.k();
                    // SAFETY: each test call keeps the contract of `gemm()`.
                    unsafe { (table.gemm)(x.as_ptr(), m, InputLayout::rows(w.k()), w, e, d, p) }
                });
                (isa.name(), path)
            })
            .collect()
    }

    /// Rows that are lines of a narrow image, written into the lines of a wider buffer (as the fused
    /// stage expands into its zero-padded rows): register tiles cross line ends, and nothing between the
    /// lines is touched.
    #[test]
    fn rows_fill_the_lines_of_a_wider_map_and_nothing_else() {
        let (width, lines, k, n) = (5, 3, 9, 40);
        let (gap, m) = (3 * n, width * lines);
        let (x, w, bias) = (values(m * k, 5), values(k * n, 6), values(n, 7));
        let panels = Panels::pack(&w, k, n);
        let e = Epilogue {
            bias: &bias,
            activation: Some(Activation::Swish),
            residual: None,
        };
        let want = reference(&x, &w, (k, n), e);
        let line_stride = width * n + gap;
        for (path, run) in paths() {
            let mut out = vec![7.5f32; lines * line_stride];
            let dest = Dest {
                lines: Some((width, line_stride)),
                ..Dest::rows(out.as_mut_ptr(), n, 0)
            };
            // Keeps the contract of `gemm()`: each line's `width x n` outputs lie inside `out`.
            run(&x, (&panels).into(), e, dest, 0..panels.count());
            for (line, (got, want)) in out
                .chunks_exact(line_stride)
                .zip(want.chunks_exact(width * n))
                .enumerate()
            {
                let (image, between) = got.split_at(width * n);
                for (g, w) in image.iter().zip(want) {
                    assert!(
                        (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                        "{path} line {line}: {g} vs {w}"
                    );
                }
                assert!(
                    between.iter().all(|&v| v == 7.5),
                    "{path} wrote between lines"
                );
            }
        }
    }

    /// Both paths (the portable one and, where the CPU has it, AVX-512) against the reference: short
    /// tiles, one-register and partial panels, residual and activation, and column ranges written by
    /// separate calls. Tiles of 9 to 12 pixels (25 = 9 + 8 + 8, 12, 11, 50 = 5 x 10) take the assembly
    /// loop.
    #[test]
    fn both_paths_match_the_reference_on_odd_shapes() {
        for (m, k, n) in [
            (1, 1, 1),
            (13, 17, 7),
            (25, 40, 33),
            (12, 3, 80),
            (11, 5, 64),
            (50, 24, 96),
        ] {
            let (x, w, bias, res) = (
                values(m * k, 1),
                values(k * n, 2),
                values(n, 3),
                values(m * n, 4),
            );
            let panels = Panels::pack(&w, k, n);
            for activation in [None, Some(Activation::Swish)] {
                for residual in [None, Some(res.as_slice())] {
                    let e = Epilogue {
                        bias: &bias,
                        activation,
                        residual,
                    };
                    let want = reference(&x, &w, (k, n), e);
                    let split = panels.count() / 2;
                    let mut results = Vec::new();
                    for (path, run) in paths() {
                        // Two calls on disjoint panel ranges of one output, as the parallel column split
                        // makes them.
                        let mut out = vec![0f32; m * n];
                        let dest = Dest::rows(out.as_mut_ptr(), n, 0);
                        // Keeps the contract of `gemm()`: `out` holds `m x n` floats and each call writes only its own
                        // panels.
                        run(&x, (&panels).into(), e, dest, 0..split);
                        run(&x, (&panels).into(), e, dest, split..panels.count());
                        results.push((path, out, 0..n));
                        // The second range alone, into a buffer of just its columns.
                        let cols = (split * PANEL).min(n)..n;
                        let mut own = vec![0f32; m * cols.len()];
                        let dest = Dest::rows(own.as_mut_ptr(), cols.len(), cols.start);
                        // Keeps the contract of `gemm()`: `own` holds `m` rows of exactly these columns.
                        run(&x, (&panels).into(), e, dest, split..panels.count());
                        results.push((path, own, cols));
                    }
                    for (path, got, cols) in results {
                        let want: Vec<f32> = want
                            .chunks_exact(n)
                            .flat_map(|row| row[cols.clone()].to_vec())
                            .collect();
                        let residual = residual.is_some();
                        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                            assert!(
                                (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                                "{path} {m}x{k}x{n} columns {cols:?} {activation:?} residual \
                                 {residual}: [{i}] {g} vs {w}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// A range of the matrix's rows times inputs holding just those channels, on both paths: the partial
    /// product a split over input channels adds up.
    #[test]
    fn a_range_of_rows_gives_the_partial_product() {
        let (m, k, n) = (23, 50, 40);
        let (x, w, bias) = (values(m * k, 8), values(k * n, 9), values(n, 10));
        let panels = Panels::pack(&w, k, n);
        for rows in [0..17, 17..50, 20..21] {
            let part: Vec<f32> = x
                .chunks_exact(k)
                .flat_map(|px| px[rows.clone()].to_vec())
                .collect();
            let e = Epilogue {
                bias: &bias,
                activation: None,
                residual: None,
            };
            let want = reference(&part, &w[rows.start * n..rows.end * n], (rows.len(), n), e);
            for (path, run) in paths() {
                let mut out = vec![0f32; m * n];
                let dest = Dest::rows(out.as_mut_ptr(), n, 0);
                // Keeps the contract of `gemm()`: `out` holds the `m x n` outputs.
                run(&part, panels.rows(rows.clone()), e, dest, 0..panels.count());
                for (i, (g, w)) in out.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                        "{path} rows {rows:?}: [{i}] {g} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn panels_split_into_consecutive_ranges_shorter_first() {
        for (count, parts) in [
            (15, 2),
            (21, 2),
            (36, 2),
            (5, 4),
            (3, 8),
            (1, 1),
            (0, 2),
            (8, 3),
        ] {
            let ranges = split_evenly(count, parts);
            assert_eq!(
                ranges.len(),
                parts.min(count),
                "{count} panels, {parts} parts"
            );
            let covered: Vec<usize> = ranges.iter().flat_map(|r| r.clone()).collect();
            assert_eq!(
                covered,
                (0..count).collect::<Vec<_>>(),
                "{count} panels, {parts} parts"
            );
            let lengths: Vec<usize> = ranges.iter().map(|r| r.len()).collect();
            assert!(lengths.windows(2).all(|w| w[0] <= w[1]), "{lengths:?}");
            assert!(lengths.iter().max() <= lengths.iter().min().map(|m| m + 1).as_ref());
        }
    }

    #[test]
    fn scaled_rows_scales_each_input_row() {
        let (k, n) = (5, 40);
        let (w, scale) = (values(k * n, 5), values(k, 6));
        let scaled = Panels::pack(&w, k, n).scaled_rows(&scale);
        let direct: Vec<f32> = w
            .iter()
            .enumerate()
            .map(|(i, v)| v * scale[i / n])
            .collect();
        assert_eq!(scaled.data, Panels::pack(&direct, k, n).data);
        scaled.recycle();
    }

    #[test]
    fn unpacking_gives_back_the_packed_matrix() {
        for (k, n) in [(1, 1), (3, 31), (7, 32), (5, 70)] {
            let w = values(k * n, 9);
            let panels = Panels::pack(&w, k, n);
            assert_eq!(panels.weight_count(), k * n);
            assert_eq!(panels.unpack(), w, "k {k}, n {n}");
        }
    }
}
