//! The GEMM register tile on AVX-512: [`TILE`] pixels x one panel of 32 output channels (two registers)
//! in 24 accumulators, each input broadcast straight from the NHWC map, and bias, activation and
//! residual applied to the accumulators before their only store. The inner loop of the tiles that do
//! nearly all of the work is in assembly, in [`super::tile_asm`].

use super::Avx512;
use crate::activation::{activation_of, with_activation_code};
use crate::isa::Simd;
use crate::panels::PANEL;
use crate::tile::{Tile, TileKernel};
use effnet_arch::variant::Activation;

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

/// The AVX-512 tile kernel.
pub(crate) struct Avx512Tile;

impl TileKernel for Avx512Tile {
    const PIXELS: usize = TILE;

    #[inline(always)]
    unsafe fn tile(rows: usize, at: Tile, activation: Option<Activation>) {
        let wide = at.cols > LANES;
        // SAFETY: forwarded from the caller.
        unsafe {
            match (rows, wide) {
                (TILE, true) => tile::<TILE, 2>(at, activation),
                (TILE, false) => tile::<TILE, 1>(at, activation),
                _ => short_tile(rows, wide, at, activation),
            }
        }
    }
}

/// A tile of fewer than [`TILE`] pixels: one instance per pixel count.
///
/// # Safety
/// As [`tile`].
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

/// `R` pixels x `V` registers of one panel: `R * V` accumulators over the whole `k`, then the epilogue.
///
/// # Safety
/// The CPU must support AVX-512F and DQ; `R` input rows of `k` floats, `k` panel rows, and `R` output (and
/// residual) rows with columns `0..at.cols` must be valid where `at` points.
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
                // segment in assembly (see `super::tile_asm`); `acc` is `R` pairs of registers.
                super::tile_asm::k_steps::<R>(acc.as_mut_ptr().cast(), x, pixel, weights, len);
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
        with_activation_code!(activation, |ACT| store::<R, V, ACT>(acc, at, masks))
    }
}

/// Stores a tile's accumulators after `activation` (and the residual, if any), under the panel's column
/// masks. It takes them by value: given a reference, the compiler kept the accumulators in a stack array
/// from their initialisation on, storing them there before the `k` loop and one of them in every step
/// (the whole network took about 1.01-1.02x as long).
///
/// # Safety
/// As [`tile`].
#[target_feature(enable = "avx512f,avx512dq")]
#[inline]
unsafe fn store<const R: usize, const V: usize, const ACT: u8>(
    acc: [[std::arch::x86_64::__m512; V]; R],
    at: Tile,
    masks: [u16; V],
) {
    use std::arch::x86_64::*;
    // SAFETY: bounds as stated in the contract of `tile`; lanes past `at.cols` are masked off.
    unsafe {
        for (p, acc) in acc.iter().enumerate() {
            for v in 0..V {
                let mut y = Avx512::activate(activation_of(ACT), acc[v]);
                if let Some(residual) = at.residual {
                    let r = residual.add(p * at.residual_row + v * LANES);
                    y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(masks[v], r));
                }
                _mm512_mask_storeu_ps(at.out[p].add(v * LANES), masks[v], y);
            }
        }
    }
}
