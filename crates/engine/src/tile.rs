//! The GEMM of the packed panels, written once over a tile kernel: the loop over register tiles of
//! pixels and panels of output channels ([`gemm_laid_out`]), and the generic tile of any [`Simd`] block
//! type ([`SimdTile`]). AVX-512 has its own tile kernel (see [`crate::isa::avx512`]).

use crate::activation::{activation_of, with_activation_code};
use crate::isa::Simd;
use crate::panels::{Dest, Epilogue, InputLayout, PanelRows, PANEL};
use effnet_arch::variant::Activation;
use std::marker::PhantomData;
use std::ops::Range;

/// The most pixels a tile kernel takes at once.
pub(crate) const MAX_TILE: usize = 12;

/// Where one tile reads and writes: pointers to its first row of each operand.
#[derive(Clone, Copy)]
pub(crate) struct Tile {
    /// The first pixel's inputs, `k` of them laid out as `layout` says.
    pub x: *const f32,
    pub k: usize,
    pub layout: InputLayout,
    /// The panel, `[k][PANEL]`.
    pub w: *const f32,
    /// The panel's bias.
    pub bias: *const f32,
    /// Each output row's first column of the panel (only the first `R` of a tile of `R` pixels are
    /// used).
    pub out: [*mut f32; MAX_TILE],
    /// Residual rows, `residual_row` floats apart.
    pub residual: Option<*const f32>,
    pub residual_row: usize,
    /// Valid columns of this panel (`1..=PANEL`).
    pub cols: usize,
}

/// A register-tile kernel: `rows` pixels x one panel, bias, activation and residual included.
pub(crate) trait TileKernel {
    /// Pixels of a full tile (at most [`MAX_TILE`]).
    const PIXELS: usize;

    /// Computes the tile `at` of `rows` pixels (1 to [`TileKernel::PIXELS`]).
    ///
    /// # Safety
    /// The instruction set must be available; `rows` input rows of `k` floats (laid out as `at.layout`
    /// says), `k` panel rows, and `rows` output (and residual) rows with columns `0..at.cols` must be
    /// valid where `at` points.
    unsafe fn tile(rows: usize, at: Tile, activation: Option<Activation>);
}

/// `dest = act(x * w + bias) + residual` for `m` pixels whose inputs start at `x` and are laid out as
/// `layout` says, the output channels of `panels`, in tiles of `T`.
///
/// # Safety
/// `T`'s instruction set must be available; every input `layout` addresses for the `m` pixels must be
/// readable, and the rest of the contract of [`crate::panels::gemm()`] must hold.
#[inline(always)]
pub(crate) unsafe fn gemm_laid_out<T: TileKernel>(
    x: *const f32,
    m: usize,
    layout: InputLayout,
    w: PanelRows,
    epilogue: Epilogue,
    dest: Dest,
    panels: Range<usize>,
) {
    let (k, n) = (w.k(), w.n());
    // As many tiles as full tiles would need, but of equal size (49 pixels in tiles of 12 are 10, 10,
    // 10, 10, 9 rather than 12, 12, 12, 12, 1): a one-pixel tile has too few accumulators to hide the
    // FMA latency.
    let tiles = m.div_ceil(T::PIXELS);
    let mut first = 0;
    for t in 0..tiles {
        let rows = m / tiles + usize::from(t < m % tiles);
        // Where each of the tile's rows goes (rows may cross into the next line of the destination).
        let mut starts = [std::ptr::null_mut(); MAX_TILE];
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
            // SAFETY: as above; the tile's outputs are this call's columns.
            unsafe { T::tile(rows, at, epilogue.activation) };
        }
        first += rows;
    }
}

/// Columns of a panel a [`Simd`] tile computes at once: one block.
const HALF: usize = 16;
/// How many panel rows ahead of its reads a [`Simd`] tile prefetches the weights.
const PREFETCH_ROWS: usize = 32;

/// The tile kernel of a [`Simd`] block type: `PIXELS` (1 to 8: as many as the register file holds)
/// pixels x 16 output channels of accumulators, over each half of the panel in turn; each pixel's input
/// is broadcast straight from the NHWC map, so the input needs no packing.
pub(crate) struct SimdTile<S, const PIXELS: usize>(PhantomData<S>);

impl<S: Simd, const PIXELS: usize> TileKernel for SimdTile<S, PIXELS> {
    const PIXELS: usize = {
        assert!(PIXELS >= 1 && PIXELS <= 8, "a SIMD tile has 1 to 8 pixels");
        PIXELS
    };

    #[inline(always)]
    unsafe fn tile(rows: usize, at: Tile, activation: Option<Activation>) {
        // SAFETY (each arm): forwarded; `rows` is at most `PIXELS`, at most 8.
        unsafe {
            with_activation_code!(activation, |ACT| match rows {
                1 => simd_tile::<S, 1, ACT>(at),
                2 => simd_tile::<S, 2, ACT>(at),
                3 => simd_tile::<S, 3, ACT>(at),
                4 => simd_tile::<S, 4, ACT>(at),
                5 => simd_tile::<S, 5, ACT>(at),
                6 => simd_tile::<S, 6, ACT>(at),
                7 => simd_tile::<S, 7, ACT>(at),
                8 => simd_tile::<S, 8, ACT>(at),
                _ => unreachable!("a SIMD tile has 1 to 8 pixels"),
            })
        }
    }
}

/// `R` pixels of the panel of `at`, one 16-column half at a time: `R` blocks of accumulators over the
/// whole `k`, then activation ([`activation_of`] `ACT`) and residual in registers before their only
/// store. A half of fewer than 16 valid columns (the last panel's) is stored through a local block.
///
/// # Safety
/// As [`TileKernel::tile`].
#[inline(always)]
unsafe fn simd_tile<S: Simd, const R: usize, const ACT: u8>(at: Tile) {
    let ((len, stride), pixel) = (at.layout.segment, at.layout.pixel);
    for half in (0..at.cols).step_by(HALF) {
        let cols = (at.cols - half).min(HALF);
        // SAFETY (all pointer arithmetic, loads and stores): bounds as stated in the contract of
        // `TileKernel::tile`; columns past `cols` are read only from the zero-padded panel and from
        // local blocks, and never written to the output.
        unsafe {
            let bias = if cols == HALF {
                S::load(at.bias.add(half))
            } else {
                let mut bias = [0f32; HALF];
                bias[..cols].copy_from_slice(std::slice::from_raw_parts(at.bias.add(half), cols));
                S::load(bias.as_ptr())
            };
            let mut acc = [bias; R];
            // One segment of inputs at a time (plain rows are a single one), and its rows of the panel.
            let (mut x, mut w) = (at.x, at.w.add(half));
            for _ in 0..at.k / len.max(1) {
                for i in 0..len {
                    // At batch 1 every layer's weights come from memory once per image, and the
                    // hardware prefetcher stops at page boundaries: ask for the panel's rows well
                    // ahead (one 64-byte line of this half per row; the address is never read).
                    S::prefetch(w.wrapping_add((i + PREFETCH_ROWS) * PANEL));
                    let weights = S::load(w.add(i * PANEL));
                    for (p, acc) in acc.iter_mut().enumerate() {
                        *acc = S::mul_add_scalar(*x.add(p * pixel + i), weights, *acc);
                    }
                }
                x = x.wrapping_add(stride);
                w = w.add(len * PANEL);
            }
            for (p, acc) in acc.into_iter().enumerate() {
                let out = at.out[p].add(half);
                let residual = at.residual.map(|r| r.add(p * at.residual_row + half));
                let y = S::activate(activation_of(ACT), acc);
                if cols == HALF {
                    let y = match residual {
                        Some(r) => S::add(y, S::load(r)),
                        None => y,
                    };
                    S::store(out, y);
                } else {
                    let mut values = [0f32; HALF];
                    S::store(values.as_mut_ptr(), y);
                    let values = &mut values[..cols];
                    if let Some(r) = residual {
                        let r = std::slice::from_raw_parts(r, cols);
                        values.iter_mut().zip(r).for_each(|(v, r)| *v += r);
                    }
                    std::slice::from_raw_parts_mut(out, cols).copy_from_slice(values);
                }
            }
        }
    }
}
