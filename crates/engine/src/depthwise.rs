//! Depthwise k x k convolutions (weights `[ky][kx][channel]`) with fused bias and activation, and the
//! per-channel sums of their output for squeeze-excite.
//!
//! The loop over output rows, blocks of [`PIXELS`] pixels and 16-channel blocks is written once,
//! [`depthwise_rows_with`], and so is the kernel of one block, [`SimdBlocks`], over the [`Simd`]
//! registers of the kernel table's instruction set; an instruction set may add a kernel for whole rows
//! ([`RowSpan`]).

use crate::activation::{activation_of, apply, with_activation_code};
use crate::feature_map::{for_rows, Exec, FeatureMap, MapView};
use crate::geometry::{geometry, source, taps_inside, Geometry};
use crate::isa::{kernels, Simd};
use crate::layers::PreparedConv;
use crate::pool;
use crate::reduce::{channel_sums, means, total_sums};
use effnet_arch::Padding;
use std::marker::PhantomData;
use std::ops::Range;

/// Channels per block of the depthwise kernels (one [`Simd`] block of registers).
pub(crate) const LANES: usize = 16;
/// Output pixels per register block of the depthwise kernels.
pub(crate) const PIXELS: usize = 4;

/// Where a depthwise kernel's block sits: output row, first output pixel, and how many of the
/// [`PIXELS`] pixels from there to store (a row's last block may be short).
pub(crate) type BlockAt = (usize, usize, usize);

/// A kernel for the interior of whole output rows, where an instruction set has one for some
/// convolutions (AVX-512's unrolled 5 x 5 rows).
pub(crate) trait RowSpan {
    /// Every block of output row `oy` starting at the pixels of `blocks` (steps of [`PIXELS`]) at once,
    /// for the channels in whole 16-channel blocks, into `row_out`; returns `false`, doing nothing,
    /// where there is no such kernel for `c`.
    ///
    /// (None, by default: every block runs the per-block kernel.)
    ///
    /// # Safety
    /// The instruction set must be available, and every tap of every pixel of the blocks (all
    /// [`PIXELS`] of the last one too) must lie inside `x`.
    #[inline(always)]
    unsafe fn span(
        x: &MapView,
        c: &PreparedConv,
        g: Geometry,
        row: (usize, Range<usize>),
        row_out: &mut [f32],
    ) -> bool {
        let _ = (x, c, g, row, row_out);
        false
    }
}

/// No row kernel: every block runs the per-block kernel.
pub(crate) struct NoSpan;

impl RowSpan for NoSpan {}

/// `a * b + c`, as one fused instruction where `fused` (the instruction set has FMA; without it
/// `mul_add` would be a slow library call).
#[inline(always)]
fn multiply_add(a: f32, b: f32, c: f32, fused: bool) -> f32 {
    if fused {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// One channel `c0` of up to [`PIXELS`] output pixels from `ox`, taps in the padding skipped: the tail of
/// channels that do not fill a 16-channel block.
#[inline(always)]
fn depthwise_channel(
    x: &MapView,
    c: &PreparedConv,
    g: Geometry,
    (oy, ox, count): BlockAt,
    c0: usize,
    out: &mut [f32],
    fused: bool,
) {
    let (ch, taps, k, s) = (x.channels.len(), c.out_channels, c.kernel, c.stride);
    let (weight, bias) = (&c.rows()[x.channels.start..], &c.bias[x.channels.start..]);
    let mut acc = [bias[c0]; PIXELS];
    for ky in 0..k {
        let Some(iy) = source(oy, s, ky, g.pad_top, x.height) else {
            continue;
        };
        let row = &x.data[iy * x.width * ch..(iy + 1) * x.width * ch];
        for kx in 0..k {
            let w = weight[(ky * k + kx) * taps + c0];
            for (p, a) in acc.iter_mut().enumerate().take(count) {
                if let Some(ix) = source(ox + p, s, kx, g.pad_left, x.width) {
                    *a = multiply_add(row[ix * ch + c0], w, *a, fused);
                }
            }
        }
    }
    apply(c.activation, &mut acc[..count]);
    for (p, a) in acc.iter().enumerate().take(count) {
        out[p * ch + c0] = *a;
    }
}

/// The depthwise blocks of any [`Simd`] register type: [`PIXELS`] x `B` blocks of accumulators,
/// activated in registers before their only store.
pub(crate) struct SimdBlocks<S>(PhantomData<S>);

impl<S: Simd> SimdBlocks<S> {
    /// The bias of channels `c0..c0 + 16 * B` as [`PIXELS`] accumulators each.
    ///
    /// # Safety
    /// As [`SimdBlocks::block`].
    #[inline(always)]
    unsafe fn accumulators<const B: usize>(bias: &[f32], c0: usize) -> [[S::Block; PIXELS]; B] {
        // SAFETY: the caller keeps the blocks inside the channels. (A loop, not `array::from_fn`: a
        // closure does not take the kernel's target features, so its loads would not inline.)
        let mut acc = [[unsafe { S::load(bias.as_ptr().add(c0)) }; PIXELS]; B];
        for (b, acc) in acc.iter_mut().enumerate().skip(1) {
            *acc = [unsafe { S::load(bias.as_ptr().add(c0 + b * LANES)) }; PIXELS];
        }
        acc
    }

    /// Stores the first `count` pixels' accumulators, activated in registers ([`activation_of`] `ACT`),
    /// pixel `p`'s at `out[p * ch + c0..]`.
    ///
    /// # Safety
    /// As [`SimdBlocks::block`]; `out` holds `count` pixels of `ch` channels.
    #[inline(always)]
    unsafe fn store<const B: usize, const ACT: u8>(
        acc: [[S::Block; PIXELS]; B],
        (ch, c0, count): (usize, usize, usize),
        out: &mut [f32],
    ) {
        for (b, acc) in acc.iter().enumerate() {
            for (p, a) in acc.iter().enumerate().take(count) {
                let at = p * ch + c0 + b * LANES;
                let dst = &mut out[at..at + LANES];
                // SAFETY: `dst` holds the block's 16 values; the caller's instruction set.
                unsafe { S::store(dst.as_mut_ptr(), S::activate(activation_of(ACT), *a)) };
            }
        }
    }

    /// The block at `at`, channels `c0..c0 + 16 * B`, bias and activation included: with `INSIDE`,
    /// every tap is inside the image and none is checked; else taps in the padding are skipped.
    ///
    /// # Safety
    /// The instruction set must be available, and `c0 + 16 * B` must not exceed the channel count.
    /// With `INSIDE`, every tap of pixels `ox..ox + PIXELS` (all of them, even past `count`) must be
    /// inside `x`.
    #[inline(always)]
    pub(crate) unsafe fn block<const B: usize, const INSIDE: bool>(
        x: &MapView,
        c: &PreparedConv,
        g: Geometry,
        (oy, ox, count): BlockAt,
        c0: usize,
        out: &mut [f32],
    ) {
        let (ch, k, s) = (x.channels.len(), c.kernel, c.stride);
        let (weight, bias) = (&c.rows()[x.channels.start..], &c.bias[x.channels.start..]);
        let tap = |out: usize, tap: usize, pad: usize, size: usize| {
            if INSIDE {
                Some(out * s + tap - pad)
            } else {
                source(out, s, tap, pad, size)
            }
        };
        // SAFETY (all pointer arithmetic and loads): weights and bias are inside their slices (the
        // caller keeps the channel blocks inside `ch`), and an input is loaded only for a tap inside the
        // image (all of them, with `INSIDE`, by the caller's guarantee).
        unsafe {
            let mut acc = Self::accumulators::<B>(bias, c0);
            for ky in 0..k {
                let Some(iy) = tap(oy, ky, g.pad_top, x.height) else {
                    continue;
                };
                let row = x.data.as_ptr().add(iy * x.width * ch + c0);
                for kx in 0..k {
                    let taps = weight.as_ptr().add((ky * k + kx) * c.out_channels + c0);
                    for (b, acc) in acc.iter_mut().enumerate() {
                        let w = S::load(taps.add(b * LANES));
                        for (p, a) in acc.iter_mut().enumerate() {
                            if let Some(ix) = tap(ox + p, kx, g.pad_left, x.width) {
                                *a = S::mul_add(S::load(row.add(ix * ch + b * LANES)), w, *a);
                            }
                        }
                    }
                }
            }
            let at = (ch, c0, count);
            with_activation_code!(c.activation, |ACT| Self::store::<B, ACT>(acc, at, out));
        }
    }
}

/// Output rows `first_row..` of the depthwise convolution `c` (geometry `g`) on `x`, into `out`, with the
/// kernel table's kernels.
pub(crate) fn depthwise_rows(
    x: &MapView,
    c: &PreparedConv,
    g: Geometry,
    first_row: usize,
    out: &mut [f32],
) {
    (kernels().depthwise_rows)(x, c, g, first_row, out)
}

/// [`depthwise_rows`] with the blocks of [`SimdBlocks<S>`] and the row kernel `R` (the channel tail fuses
/// its multiply-adds where `S` does).
///
/// # Safety
/// The instruction set of `S` and `R` must be available.
#[inline(always)]
pub(crate) unsafe fn depthwise_rows_with<S: Simd, R: RowSpan>(
    x: &MapView,
    c: &PreparedConv,
    g: Geometry,
    first_row: usize,
    out: &mut [f32],
) {
    let (ch, k, s) = (x.channels.len(), c.kernel, c.stride);
    // Not capped at the output size, so a row's short last block is interior when the data has room for
    // a full block (padded copies are made that wide); only `count` of its pixels are stored.
    let (col_first, col_end) = taps_inside(g.pad_left, x.width, k, s);
    let (row_first, row_end) = taps_inside(g.pad_top, x.height, k, s);
    // The first pixels of the row's blocks all of whose taps are inside (along the row): those from
    // `col_first` on that end by `col_end`.
    let span = col_first.next_multiple_of(PIXELS)
        ..(col_end / PIXELS * PIXELS).min(g.out_w.next_multiple_of(PIXELS));
    for (r, row_out) in out.chunks_exact_mut(g.out_w * ch).enumerate() {
        let oy = first_row + r;
        let row_inside = oy >= row_first && oy < row_end;
        // SAFETY: the caller's instruction set; every tap of the span's blocks is inside `x`.
        let spanned = row_inside
            && !span.is_empty()
            && unsafe { R::span(x, c, g, (oy, span.clone()), row_out) };
        for ox in (0..g.out_w).step_by(PIXELS) {
            let at = (oy, ox, PIXELS.min(g.out_w - ox));
            let pixels = &mut row_out[ox * ch..];
            let interior = row_inside && span.contains(&ox);
            // The span did this block's whole 16-channel blocks.
            let mut c0 = if spanned && interior {
                ch / LANES * LANES
            } else {
                0
            };
            while c0 + LANES <= ch {
                let pair = S::WIDE && c0 + 2 * LANES <= ch;
                // SAFETY (each call): the caller's instruction set; `interior` means every tap of these
                // pixels is inside `x`, and `pair` keeps both channel blocks inside `ch`.
                unsafe {
                    match (interior, pair) {
                        (true, true) => SimdBlocks::<S>::block::<2, true>(x, c, g, at, c0, pixels),
                        (true, false) => SimdBlocks::<S>::block::<1, true>(x, c, g, at, c0, pixels),
                        (false, true) => {
                            SimdBlocks::<S>::block::<2, false>(x, c, g, at, c0, pixels)
                        }
                        (false, false) => {
                            SimdBlocks::<S>::block::<1, false>(x, c, g, at, c0, pixels)
                        }
                    }
                }
                c0 += if pair { 2 * LANES } else { LANES };
            }
            for c0 in c0..ch {
                depthwise_channel(x, c, g, at, c0, pixels, S::FMA);
            }
        }
    }
}

/// Maps narrower than this are treated as narrow: their depthwise runs on a zero-padded copy of the input,
/// so every block of pixels takes the check-free interior path (on wider maps the border is a small share
/// and the copy would cost more).
const PAD_COPY_BELOW: usize = 32;

/// `[rows, columns]` of a zero-padded copy of a `height x width` map: every row an output row reads, and
/// columns enough that every block of [`PIXELS`] output pixels, a row's short last block included, reads
/// inside it (so all take the interior kernel).
pub(crate) fn padded_size(
    g: Geometry,
    c: &PreparedConv,
    height: usize,
    width: usize,
) -> [usize; 2] {
    [
        ((g.out_h - 1) * c.stride + c.kernel).max(g.pad_top + height),
        ((g.out_w.next_multiple_of(PIXELS) - 1) * c.stride + c.kernel).max(g.pad_left + width),
    ]
}

/// `x` with the convolution's zero padding added around it (a pooled buffer; give it back when done).
fn zero_padded(x: &FeatureMap, c: &PreparedConv, g: Geometry) -> FeatureMap {
    let [height, width] = padded_size(g, c, x.height, x.width);
    let ch = x.channels;
    let (row, inner) = (width * ch, x.width * ch);
    let mut data = pool::take(height * row);
    // Zero only the border: the top and bottom padding rows and each row's left and right margins.
    let (top, bottom) = (g.pad_top * row, (g.pad_top + x.height) * row);
    data[..top].fill(0.0);
    data[bottom..].fill(0.0);
    for (dst, src) in data[top..bottom]
        .chunks_exact_mut(row)
        .zip(x.data.chunks_exact(inner))
    {
        let left = g.pad_left * ch;
        dst[..left].fill(0.0);
        dst[left..left + inner].copy_from_slice(src);
        dst[left + inner..].fill(0.0);
    }
    FeatureMap::from_buffer(data, height, width, ch)
}

/// A depthwise k x k convolution with bias and activation; weights `[ky][kx][channel]`.
pub fn depthwise(x: &FeatureMap, c: &PreparedConv, padding: Padding, exec: Exec) -> FeatureMap {
    depthwise_pooling(x, c, padding, exec, false).0
}

/// [`depthwise`], plus the per-channel mean of its output (the squeeze of squeeze-excite), summed per
/// task while its rows are still in cache instead of in a second pass over the map.
pub fn depthwise_and_mean(
    x: &FeatureMap,
    c: &PreparedConv,
    padding: Padding,
    exec: Exec,
) -> (FeatureMap, Vec<f32>) {
    let (out, sums) = depthwise_pooling(x, c, padding, exec, true);
    let mean = means(sums, out.height * out.width);
    (out, mean)
}

/// The depthwise convolution, and the per-channel sums of its output if `with_sums` (else empty).
pub(crate) fn depthwise_pooling(
    x: &FeatureMap,
    c: &PreparedConv,
    padding: Padding,
    exec: Exec,
    with_sums: bool,
) -> (FeatureMap, Vec<f64>) {
    let g = geometry(x, c, padding);
    let ch = c.out_channels;
    let mut out = pool::take(g.out_h * g.out_w * ch);
    let row_len = g.out_w * ch;
    let run = |src: &FeatureMap, g: Geometry, out: &mut [f32]| {
        for_rows(out, row_len, exec, |row, rows| {
            depthwise_rows(&src.view(), c, g, row, rows);
            with_sums.then(|| channel_sums(rows, ch))
        })
    };
    let partial = if g.out_w < PAD_COPY_BELOW {
        let padded = zero_padded(x, c, g);
        let inner = Geometry {
            pad_top: 0,
            pad_left: 0,
            ..g
        };
        let partial = run(&padded, inner, &mut out);
        pool::give(padded.data);
        partial
    } else {
        run(x, g, &mut out)
    };
    let sums = total_sums(
        partial.into_iter().flatten(),
        if with_sums { ch } else { 0 },
    );
    (FeatureMap::from_buffer(out, g.out_h, g.out_w, ch), sums)
}
