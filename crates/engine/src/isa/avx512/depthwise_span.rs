//! The interior of a depthwise output row on AVX-512, for 5 x 5 kernels: every block of [`PIXELS`]
//! pixels whose taps all lie inside the input, in one call per row.
//!
//! The per-block kernel re-derives its addresses and reloads its weights for every four pixels and runs
//! its taps as loops. Here the kernel size and stride are compile-time constants, so all 25 taps unroll
//! into straight-line code, and each kernel row's input pixels are loaded once and multiplied into every
//! accumulator that takes them (8 loads per channel block and kernel row instead of 20 at stride 1, 11 at
//! stride 2). B0's 5 x 5 layers took 0.89-0.95x the time of the per-block kernel, measured in alternation
//! in one process. (On 3 x 3 kernels, whose rows share too few inputs, this measured no faster.)

use super::Avx512;
use crate::activation::{activation_of, with_activation_code};
use crate::depthwise::{RowSpan, LANES, PIXELS};
use crate::feature_map::MapView;
use crate::geometry::Geometry;
use crate::isa::Simd;
use crate::layers::PreparedConv;
use std::arch::x86_64::{__m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_storeu_ps};
use std::ops::Range;

/// The 5 x 5 row kernel of the AVX-512 table.
pub(crate) struct Span5x5;

impl RowSpan for Span5x5 {
    #[inline(always)]
    unsafe fn span(
        x: &MapView,
        c: &PreparedConv,
        g: Geometry,
        row: (usize, Range<usize>),
        row_out: &mut [f32],
    ) -> bool {
        // SAFETY: forwarded.
        unsafe { depthwise_span(x, c, g, row, row_out) }
    }
}

/// The blocks of output row `oy` starting at the pixels `blocks` (steps of [`PIXELS`]; the last one may
/// run past the row's end, and only the pixels before it are stored), for the channels in whole
/// 16-channel blocks, into `row_out` (the row's pixels). Returns `false`, doing nothing, for a kernel it
/// has no instance for (the per-block kernels then run).
///
/// # Safety
/// The CPU must support AVX-512F and DQ, and every tap of every pixel of the blocks (all [`PIXELS`] of the
/// last one too) must lie inside `x`.
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn depthwise_span(
    x: &MapView,
    c: &PreparedConv,
    g: Geometry,
    (oy, blocks): (usize, Range<usize>),
    row_out: &mut [f32],
) -> bool {
    let run = match (c.kernel, c.stride) {
        (5, 1) => channel_blocks::<5, 1>,
        (5, 2) => channel_blocks::<5, 2>,
        _ => return false,
    };
    // SAFETY: forwarded.
    unsafe { run(x, c, g, (oy, blocks), row_out) };
    true
}

/// [`depthwise_span`] for a `K x K` kernel at stride `S`: two 16-channel blocks at a time (eight
/// independent accumulators keep both FMA units busy through their latency), then a last single one.
///
/// # Safety
/// As [`depthwise_span`].
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn channel_blocks<const K: usize, const S: usize>(
    x: &MapView,
    c: &PreparedConv,
    g: Geometry,
    (oy, blocks): (usize, Range<usize>),
    row_out: &mut [f32],
) {
    let ch = x.channels.len();
    let mut c0 = 0;
    // SAFETY (both calls): forwarded; `c0 + 16 * B <= ch`.
    while c0 + 2 * LANES <= ch {
        unsafe { span_of::<2, K, S>(x, c, g, (oy, blocks.clone(), c0), row_out) };
        c0 += 2 * LANES;
    }
    if c0 + LANES <= ch {
        unsafe { span_of::<1, K, S>(x, c, g, (oy, blocks, c0), row_out) };
    }
}

/// The span's blocks for channels `c0..c0 + 16 * B`.
///
/// # Safety
/// As [`depthwise_span`], and `c0 + 16 * B` must not exceed the channel count.
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn span_of<const B: usize, const K: usize, const S: usize>(
    x: &MapView,
    c: &PreparedConv,
    g: Geometry,
    (oy, blocks, c0): (usize, Range<usize>, usize),
    row_out: &mut [f32],
) {
    let ch = x.channels.len();
    let out_w = row_out.len() / ch;
    let taps = c.out_channels;
    // SAFETY (all pointer arithmetic, loads and stores below): weights and bias hold `taps` channels from
    // `x.channels.start`, of which `c0 + 16 * B` are inside; the caller guarantees every tap of the blocks
    // is inside `x` (so `oy * S >= pad_top` and the first block's `ox * S >= pad_left`); the stores go to
    // the first `min(PIXELS, out_w - ox)` pixels of each block, inside `row_out`.
    unsafe {
        let weight = c.rows().as_ptr().add(x.channels.start + c0);
        let bias = c.bias.as_ptr().add(x.channels.start + c0);
        let top = x
            .data
            .as_ptr()
            .add((oy * S - g.pad_top) * x.width * ch + c0);
        with_activation_code!(c.activation, |ACT| {
            for ox in blocks.clone().step_by(PIXELS) {
                let mut acc: [[__m512; PIXELS]; B] =
                    std::array::from_fn(|b| [_mm512_loadu_ps(bias.add(b * LANES)); PIXELS]);
                // Through `black_box`, so the compiler derives each load's address from this one
                // pointer rather than keeping (and spilling) one induction variable per address.
                let origin = std::hint::black_box(top.add((ox * S - g.pad_left) * ch));
                for ky in 0..K {
                    let row = origin.add(ky * x.width * ch);
                    let w: [[__m512; K]; B] = std::array::from_fn(|b| {
                        std::array::from_fn(|kx| {
                            _mm512_loadu_ps(weight.add((ky * K + kx) * taps + b * LANES))
                        })
                    });
                    // Input pixel `col` of the kernel row feeds pixel `p` at tap `col - p * S`.
                    for col in 0..(PIXELS - 1) * S + K {
                        for (b, acc) in acc.iter_mut().enumerate() {
                            let v = _mm512_loadu_ps(row.add(col * ch + b * LANES));
                            for (p, a) in acc.iter_mut().enumerate() {
                                if col >= p * S && col - p * S < K {
                                    *a = _mm512_fmadd_ps(v, w[b][col - p * S], *a);
                                }
                            }
                        }
                    }
                }
                let dst = row_out.as_mut_ptr().add(ox * ch + c0);
                for (b, acc) in acc.iter().enumerate() {
                    for (p, a) in acc.iter().enumerate().take(PIXELS.min(out_w - ox)) {
                        let y = Avx512::activate(activation_of(ACT), *a);
                        _mm512_storeu_ps(dst.add(p * ch + b * LANES), y);
                    }
                }
            }
        })
    }
}
