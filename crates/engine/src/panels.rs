//! The GEMM of 1x1 (and im2col'd dense) convolutions on AVX-512: weights packed once, when the layer is
//! prepared, into panels of [`PANEL`] output channels, and a register-blocked kernel of [`TILE`] pixels x
//! one panel that broadcasts each input value straight from the NHWC map (so the input needs no packing)
//! and applies bias, activation and residual to its accumulators before their only store. The inner loop
//! of the tiles that do nearly all of the work is in assembly, in [`crate::tile_asm`].
//!
//! Written by hand because the `gemm` crate packs both operands on every call and leaves the epilogue to
//! a second pass over the output: on B0's layer shapes this kernel takes 0.45-0.7x the time of `gemm`
//! plus that pass. On CPUs without AVX-512 the `gemm` crate runs each panel, followed by a vectorised
//! epilogue pass.

use crate::activation::sigmoid;
#[cfg(target_arch = "x86_64")]
use crate::activation::{avx512, with_avx512_activation};
use crate::buffer::{zeros, Buffer};
use crate::kernels::matmul_strided;
use crate::pool;
use effnet_arch::variant::Activation;
use multiversion::multiversion;
use std::ops::Range;

/// Output channels per panel: two AVX-512 registers.
pub(crate) const PANEL: usize = 32;
/// Pixels per register tile: 12 x 2 accumulators, 2 weight registers and the broadcast fit in 32 registers.
pub(crate) const TILE: usize = 12;
/// How many panel rows (of 128 bytes) ahead of its reads the kernel prefetches. At batch 1 every layer's
/// weights come from memory once per image, and the hardware prefetcher, which stops at 4 KB pages, does
/// not run far enough ahead of this FMA-bound loop: the first of the seven row passes over B0's 885 KB
/// 192 -> 1152 expansion took 4.8x a warm pass without this, 2.7x with it. Panels are consecutive, so near
/// a panel's end this fetches the start of the next one.
pub(crate) const PREFETCH_ROWS: usize = 32;
/// Lanes of one AVX-512 register.
const LANES: usize = 16;

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
    /// Output channels.
    fn n(&self) -> usize {
        self.panels.n
    }

    /// Number of panels.
    fn count(&self) -> usize {
        self.panels.count()
    }

    /// Panel `p`'s first row of these: `k` rows of [`PANEL`] floats follow it.
    fn panel(&self, p: usize) -> &[f32] {
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
    unsafe fn run(&self, first: usize, m: usize) -> (usize, *mut f32) {
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
    #[cfg(target_arch = "x86_64")]
    if avx512::detected() {
        // SAFETY: AVX-512F and DQ were detected; the rest is the caller's contract.
        return unsafe { gemm_avx512(x, w, epilogue, dest, panels) };
    }
    // SAFETY: the caller's contract.
    unsafe { gemm_portable(x, w, epilogue, dest, panels) }
}

/// The portable path: the `gemm` crate on each panel, then the epilogue on each row's panel columns.
///
/// # Safety
/// As [`gemm()`].
unsafe fn gemm_portable(
    x: &[f32],
    w: PanelRows,
    epilogue: Epilogue,
    dest: Dest,
    panels: Range<usize>,
) {
    let (k, n) = (w.k, w.n());
    let m = x.len() / k.max(1);
    let mut first = 0;
    while first < m {
        // SAFETY: row `first` is inside the destination (caller's contract).
        let (rows, start) = unsafe { dest.run(first, m) };
        for p in panels.clone() {
            let cols = p * PANEL..((p + 1) * PANEL).min(n);
            // SAFETY: the panel holds `k x PANEL` floats; the destination columns of these rows are ours
            // (caller's contract).
            unsafe {
                let out = start.add(cols.start - dest.first_col);
                matmul_strided(
                    &x[first * k..(first + rows) * k],
                    k,
                    (w.panel(p).as_ptr(), PANEL),
                    (out, dest.row_len),
                    cols.len(),
                    gemm::Parallelism::None,
                );
                for r in 0..rows {
                    let row = std::slice::from_raw_parts_mut(out.add(r * dest.row_len), cols.len());
                    let residual = epilogue
                        .residual
                        .map(|res| &res[(first + r) * n..][cols.clone()]);
                    bias_activation_rows(
                        row,
                        &epilogue.bias[cols.clone()],
                        epilogue.activation,
                        residual,
                    );
                }
            }
        }
        first += rows;
    }
}

/// `v = act(v + bias) (+ residual)` over rows of `bias.len()` channels, one loop per activation so each
/// vectorises.
#[inline(always)]
fn epilogue<F: Fn(f32) -> f32>(rows: &mut [f32], bias: &[f32], residual: Option<&[f32]>, act: F) {
    let n = bias.len();
    match residual {
        Some(residual) => rows
            .chunks_exact_mut(n)
            .zip(residual.chunks_exact(n))
            .for_each(|(row, res)| {
                row.iter_mut()
                    .zip(bias.iter().zip(res))
                    .for_each(|(v, (b, r))| *v = act(*v + b) + r);
            }),
        None => rows
            .chunks_exact_mut(n)
            .for_each(|row| row.iter_mut().zip(bias).for_each(|(v, b)| *v = act(*v + b))),
    }
}

/// The portable path's epilogue: bias, activation and residual over rows of `bias.len()` channels (the
/// AVX-512 path applies them in registers instead).
#[multiversion(targets("x86_64+avx2+fma"))]
fn bias_activation_rows(
    rows: &mut [f32],
    bias: &[f32],
    activation: Option<Activation>,
    residual: Option<&[f32]>,
) {
    match activation {
        None => epilogue(rows, bias, residual, |v| v),
        Some(Activation::Swish) => epilogue(rows, bias, residual, |v| v * sigmoid(v)),
        Some(Activation::Relu6) => epilogue(rows, bias, residual, |v| v.clamp(0.0, 6.0)),
        Some(Activation::Sigmoid) => epilogue(rows, bias, residual, sigmoid),
    }
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
    fn rows(k: usize) -> Self {
        Self {
            pixel: k,
            segment: (k, 0),
        }
    }
}

/// The AVX-512 path on plain rows of inputs.
///
/// # Safety
/// The CPU must support AVX-512F and DQ, and the contract of [`gemm()`] must hold.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn gemm_avx512(
    x: &[f32],
    w: PanelRows,
    epilogue: Epilogue,
    dest: Dest,
    panels: Range<usize>,
) {
    let m = x.len() / w.k.max(1);
    // SAFETY: forwarded; plain rows of `k` values are exactly `x`.
    unsafe {
        gemm_avx512_laid_out(
            x.as_ptr(),
            m,
            InputLayout::rows(w.k),
            w,
            epilogue,
            dest,
            panels,
        )
    }
}

/// The AVX-512 path: register tiles of [`TILE`] pixels x one panel, on `m` pixels whose inputs start at
/// `x` and are laid out as `layout` says.
///
/// # Safety
/// The CPU must support AVX-512F and DQ; every input `layout` addresses for the `m` pixels must be readable,
/// and the rest of the contract of [`gemm()`] must hold.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn gemm_avx512_laid_out(
    x: *const f32,
    m: usize,
    layout: InputLayout,
    w: PanelRows,
    epilogue: Epilogue,
    dest: Dest,
    panels: Range<usize>,
) {
    let (k, n) = (w.k, w.n());
    // As many tiles as `TILE`-pixel tiles would need, but of equal size (49 pixels are 10, 10, 10, 10, 9
    // rather than 12, 12, 12, 12, 1): a one-pixel tile has too few accumulators to hide the FMA latency.
    let tiles = m.div_ceil(TILE);
    let mut first = 0;
    for t in 0..tiles {
        let rows = m / tiles + usize::from(t < m % tiles);
        // Where each of the tile's rows goes (rows may cross into the next line of the destination).
        let mut starts = [std::ptr::null_mut(); TILE];
        for (r, start) in starts.iter_mut().enumerate().take(rows) {
            // SAFETY: row `first + r` is inside the destination (caller's contract).
            *start = unsafe { dest.run(first + r, m).1 };
        }
        for p in panels.clone() {
            let c0 = p * PANEL;
            // SAFETY: the offsets address the tile's rows and columns inside the operands and the
            // destination (the caller's contract).
            let at = unsafe {
                Tile {
                    x: x.add(first * layout.pixel),
                    k,
                    layout,
                    w: w.panel(p).as_ptr(),
                    bias: epilogue.bias.as_ptr().add(c0),
                    out: starts.map(|start| start.wrapping_add(c0 - dest.first_col)),
                    residual: epilogue.residual.map(|r| r.as_ptr().add(first * n + c0)),
                    residual_row: n,
                    cols: PANEL.min(n - c0),
                }
            };
            let wide = at.cols > LANES;
            let act = epilogue.activation;
            // SAFETY: as above; the tile's outputs are this call's columns.
            unsafe {
                match (rows, wide) {
                    (TILE, true) => tile::<TILE, 2>(at, act),
                    (TILE, false) => tile::<TILE, 1>(at, act),
                    _ => short_tile(rows, wide, at, act),
                }
            }
        }
        first += rows;
    }
}

/// The GEMM of a dense convolution on `m` output pixels of one row whose patches lie inside its NHWC
/// input `x`, read from there without an im2col copy: pixel 0's patch starts at `x[origin]` and the
/// patches are laid out as `layout` says. Writes `m` rows of the `n` outputs to `out`. Returns `false`,
/// doing nothing, where the CPU lacks AVX-512 (whose kernel alone reads such layouts).
pub(crate) fn gemm_patches(
    x: &[f32],
    origin: usize,
    layout: InputLayout,
    w: &Panels,
    epilogue: Epilogue,
    out: &mut [f32],
) -> bool {
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
    #[cfg(target_arch = "x86_64")]
    if avx512::detected() {
        let dest = Dest::rows(out.as_mut_ptr(), w.n, 0);
        // SAFETY: AVX-512F and DQ were detected; the asserts keep every patch inside `x`, and `out`
        // (exclusively borrowed) holds the `m x n` outputs.
        unsafe {
            gemm_avx512_laid_out(
                x[origin..].as_ptr(),
                m,
                layout,
                w.into(),
                epilogue,
                dest,
                0..w.count(),
            );
        }
        return true;
    }
    false
}

/// A tile of fewer than [`TILE`] pixels: one instance per pixel count.
///
/// # Safety
/// As [`tile`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn short_tile(rows: usize, wide: bool, at: Tile, activation: Option<Activation>) {
    macro_rules! dispatch {
        ($($r:literal)*) => {
            match (rows, wide) {
                $(($r, true) => tile::<$r, 2>(at, activation),
                ($r, false) => tile::<$r, 1>(at, activation),)*
                _ => unreachable!("a short tile has 1 to {} pixels", TILE - 1),
            }
        };
    }
    // SAFETY: forwarded from the caller.
    unsafe { dispatch!(1 2 3 4 5 6 7 8 9 10 11) }
}

/// Where one tile reads and writes: pointers to its first row of each operand.
#[derive(Clone, Copy)]
struct Tile {
    /// The first pixel's inputs, `k` of them laid out as `layout` says.
    x: *const f32,
    k: usize,
    layout: InputLayout,
    /// The panel, `[k][PANEL]`.
    w: *const f32,
    /// The panel's bias.
    bias: *const f32,
    /// Each output row's first column of the panel (only the first `R` of a tile of `R` pixels are
    /// used).
    out: [*mut f32; TILE],
    /// Residual rows, `residual_row` floats apart.
    residual: Option<*const f32>,
    residual_row: usize,
    /// Valid columns of this panel (`1..=PANEL`).
    cols: usize,
}

/// `R` pixels x `V` registers of one panel: `R * V` accumulators over the whole `k`, then the epilogue.
///
/// # Safety
/// The CPU must support AVX-512F and DQ; `R` input rows of `k` floats, `k` panel rows, and `R` output (and
/// residual) rows with columns `0..at.cols` must be valid where `at` points.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn tile<const R: usize, const V: usize>(at: Tile, activation: Option<Activation>) {
    use std::arch::x86_64::*;
    let k = at.k;
    // SAFETY (all loads and stores): bounds as stated in the contract; lanes past `at.cols` are masked off.
    unsafe {
        let masks: [u16; V] = std::array::from_fn(|v| {
            let lanes = at.cols.saturating_sub(v * LANES).min(LANES);
            ((1u32 << lanes) - 1) as u16
        });
        // The accumulators start from the bias, which saves an add per register in the epilogue.
        let bias: [__m512; V] =
            std::array::from_fn(|v| _mm512_maskz_loadu_ps(masks[v], at.bias.add(v * LANES)));
        let mut acc = [bias; R];
        // One segment of inputs at a time (plain rows are a single one), and its rows of the panel.
        let ((len, stride), pixel) = (at.layout.segment, at.layout.pixel);
        let (mut x, mut weights) = (at.x, at.w);
        for _ in 0..k / len.max(1) {
            if V == 2 && (9..=TILE).contains(&R) && len > 0 {
                // The two-register tiles of 9 to 12 pixels, nearly all of the work, step through the
                // segment in assembly (see `crate::tile_asm`); `acc` is `R` pairs of registers.
                crate::tile_asm::k_steps::<R>(acc.as_mut_ptr().cast(), x, pixel, weights, len);
            } else {
                for i in 0..len {
                    // A prefetch never faults, so one past the last panel is harmless; the address is
                    // only formed (with `wrapping_add`), never read.
                    let ahead = weights.wrapping_add((i + PREFETCH_ROWS) * PANEL);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(LANES).cast());
                    let w: [__m512; V] = std::array::from_fn(|v| {
                        _mm512_loadu_ps(weights.add(i * PANEL + v * LANES))
                    });
                    for (p, acc) in acc.iter_mut().enumerate() {
                        let a = _mm512_set1_ps(*x.add(p * pixel + i));
                        for v in 0..V {
                            acc[v] = _mm512_fmadd_ps(a, w[v], acc[v]);
                        }
                    }
                }
            }
            x = x.wrapping_add(stride);
            weights = weights.add(len * PANEL);
        }
        // One store loop per activation, so no register's epilogue branches on it.
        with_avx512_activation!(activation, |f| store(acc, at, masks, f))
    }
}

/// Stores a tile's accumulators after `activation` (and the residual, if any), under the panel's column
/// masks. It takes them by value: given a reference, the compiler kept the accumulators in a stack array
/// from their initialisation on, storing them there before the `k` loop and one of them in every step
/// (the whole network took about 1.01-1.02x as long).
///
/// # Safety
/// As [`tile`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
#[inline]
unsafe fn store<const R: usize, const V: usize>(
    acc: [[std::arch::x86_64::__m512; V]; R],
    at: Tile,
    masks: [u16; V],
    activation: impl Fn(std::arch::x86_64::__m512) -> std::arch::x86_64::__m512,
) {
    use std::arch::x86_64::*;
    // SAFETY: bounds as stated in the contract of `tile`; lanes past `at.cols` are masked off.
    unsafe {
        for (p, acc) in acc.iter().enumerate() {
            for v in 0..V {
                let mut y = activation(acc[v]);
                if let Some(residual) = at.residual {
                    let r = residual.add(p * at.residual_row + v * LANES);
                    y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(masks[v], r));
                }
                _mm512_mask_storeu_ps(at.out[p].add(v * LANES), masks[v], y);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    /// `act(x * w + bias) + residual` in f64, straight from the row-major weights.
    fn reference(x: &[f32], w: &[f32], (k, n): (usize, usize), e: Epilogue) -> Vec<f32> {
        let m = x.len() / k;
        let mut out = vec![0f32; m * n];
        for p in 0..m {
            for c in 0..n {
                let dot: f64 = (0..k)
                    .map(|i| f64::from(x[p * k + i]) * f64::from(w[i * n + c]))
                    .sum();
                let v = dot + f64::from(e.bias[c]);
                let v = match e.activation {
                    Some(Activation::Swish) => v / (1.0 + (-v).exp()),
                    _ => v,
                };
                out[p * n + c] = (v + e.residual.map_or(0.0, |r| f64::from(r[p * n + c]))) as f32;
            }
        }
        out
    }

    type Path = unsafe fn(&[f32], PanelRows, Epilogue, Dest, Range<usize>);

    /// The portable path and, where the CPU has it, the AVX-512 one.
    fn paths() -> Vec<(&'static str, Path)> {
        let mut paths: Vec<(&str, Path)> = vec![("portable", gemm_portable)];
        #[cfg(target_arch = "x86_64")]
        if avx512::detected() {
            paths.push(("avx512", |x, w, e, d, p| {
                // SAFETY: AVX-512F and DQ were detected; the rest is forwarded.
                unsafe { gemm_avx512(x, w, e, d, p) }
            }));
        }
        paths
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
            // SAFETY: each line's `width x n` outputs lie inside `out`.
            unsafe { run(&x, (&panels).into(), e, dest, 0..panels.count()) };
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
                        // SAFETY: `out` holds `m x n` floats and each call writes only its own panels.
                        unsafe {
                            run(&x, (&panels).into(), e, dest, 0..split);
                            run(&x, (&panels).into(), e, dest, split..panels.count());
                        }
                        results.push((path, out, 0..n));
                        // The second range alone, into a buffer of just its columns.
                        let cols = (split * PANEL).min(n)..n;
                        let mut own = vec![0f32; m * cols.len()];
                        let dest = Dest::rows(own.as_mut_ptr(), cols.len(), cols.start);
                        // SAFETY: `own` holds `m` rows of exactly these columns.
                        unsafe { run(&x, (&panels).into(), e, dest, split..panels.count()) };
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
                // SAFETY: `out` holds the `m x n` outputs.
                unsafe { run(&part, panels.rows(rows.clone()), e, dest, 0..panels.count()) };
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
}
