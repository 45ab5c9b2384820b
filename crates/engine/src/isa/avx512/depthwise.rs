//! The depthwise blocks on AVX-512: [`PIXELS`] pixels x one or two 16-channel registers of accumulators
//! with the input as the FMA's memory operand, activated in registers before their only store; and the
//! unrolled 5 x 5 rows of [`super::depthwise_span`].

use super::activation::with_avx512_activation;
use crate::depthwise::{BlockAt, DepthwiseBlocks, LANES, PIXELS};
use crate::feature_map::MapView;
use crate::geometry::{source, Geometry};
use crate::layers::PreparedConv;
use std::ops::Range;

/// The AVX-512 depthwise kernels.
pub(crate) struct Avx512Blocks;

impl DepthwiseBlocks for Avx512Blocks {
    // With 32 registers, eight independent accumulators (and, after them, eight independent activations)
    // keep both FMA units busy through the four-cycle latency, where four left half of them idle.
    const PAIRS: bool = true;

    #[inline(always)]
    unsafe fn span(
        x: &MapView,
        c: &PreparedConv,
        g: Geometry,
        row: (usize, Range<usize>),
        row_out: &mut [f32],
    ) -> bool {
        // SAFETY: forwarded.
        unsafe { super::depthwise_span::depthwise_span(x, c, g, row, row_out) }
    }

    #[inline(always)]
    unsafe fn interior<const B: usize>(
        x: &MapView,
        c: &PreparedConv,
        g: Geometry,
        at: BlockAt,
        c0: usize,
        out: &mut [f32],
    ) {
        // SAFETY: forwarded.
        unsafe { depthwise_interior_avx512::<B>(x, c, g, at, c0, out) }
    }

    #[inline(always)]
    unsafe fn edge<const B: usize>(
        x: &MapView,
        c: &PreparedConv,
        g: Geometry,
        at: BlockAt,
        c0: usize,
        out: &mut [f32],
    ) {
        // SAFETY: forwarded.
        unsafe { depthwise_edge_avx512::<B>(x, c, g, at, c0, out) }
    }
}

/// The accumulators of an AVX-512 depthwise kernel: [`PIXELS`] pixels of `$b` blocks of 16 channels from
/// `$c0`, each starting from its channels' bias. (Macros rather than functions: a function returning the
/// registers measured 2% slower over the whole network, its result going through memory.)
macro_rules! bias_accumulators {
    ($b:ident, $bias:expr, $c0:expr) => {{
        let acc: [[_; PIXELS]; $b] = std::array::from_fn(|b| {
            [std::arch::x86_64::_mm512_loadu_ps($bias.as_ptr().add($c0 + b * LANES)); PIXELS]
        });
        acc
    }};
}

/// Applies `$activation` to the accumulators of an AVX-512 depthwise kernel and stores the first `count`
/// pixels' channels, pixel `p`'s at `$out[p * ch + c0..]`: one store loop per activation, so no
/// register's activation branches on it (as in the GEMM's store).
macro_rules! store_accumulators {
    ($acc:expr, $activation:expr, $out:expr, ($ch:expr, $c0:expr, $count:expr)) => {
        let dst = $out.as_mut_ptr().add($c0);
        with_avx512_activation!($activation, |f| {
            for (b, acc) in $acc.iter().enumerate() {
                for (p, a) in acc.iter().enumerate().take($count) {
                    std::arch::x86_64::_mm512_storeu_ps(dst.add(p * $ch + b * LANES), f(*a));
                }
            }
        })
    };
}

/// The interior depthwise block with explicit AVX-512, over `B` adjacent 16-channel blocks: `4 * B`
/// accumulators in registers and fused multiply-adds with the input as memory operand. With `B = 2` eight
/// independent accumulators (and, after them, eight independent activations) keep both FMA units busy
/// through the four-cycle latency, where four left half of them idle. Written with intrinsics because the
/// compiler spilled the generic version's accumulators to the stack and left the multiply and add unfused.
/// (The interior of a 5 x 5 kernel's rows runs in [`super::depthwise_span`] instead.)
///
/// # Safety
/// The CPU must support AVX-512F and DQ, and the conditions of [`DepthwiseBlocks::interior`] must hold for every
/// one of the `B` channel blocks from `c0`.
#[target_feature(enable = "avx512f,avx512dq")]
#[allow(clippy::too_many_arguments)]
unsafe fn depthwise_interior_avx512<const B: usize>(
    x: &MapView,
    c: &PreparedConv,
    g: Geometry,
    (oy, ox, count): BlockAt,
    c0: usize,
    out: &mut [f32],
) {
    use std::arch::x86_64::{_mm512_fmadd_ps, _mm512_loadu_ps};
    let (ch, k, s) = (x.channels.len(), c.kernel, c.stride);
    let step = s * ch;
    let (weight, bias) = (&c.weight[x.channels.start..], &c.bias[x.channels.start..]);
    // SAFETY (all pointer arithmetic and loads below): the caller guarantees every tap is inside the image
    // and `c0 + 16 * B <= ch`; stores go to `out`, which holds `count` pixels of `ch` channels.
    unsafe {
        let mut acc = bias_accumulators!(B, bias, c0);
        for ky in 0..k {
            let row = x
                .data
                .as_ptr()
                .add((oy * s + ky - g.pad_top) * x.width * ch + c0);
            for kx in 0..k {
                let taps = weight.as_ptr().add((ky * k + kx) * c.out_channels + c0);
                let p = row.add((ox * s + kx - g.pad_left) * ch);
                for (b, acc) in acc.iter_mut().enumerate() {
                    let w = _mm512_loadu_ps(taps.add(b * LANES));
                    for (i, a) in acc.iter_mut().enumerate() {
                        *a = _mm512_fmadd_ps(_mm512_loadu_ps(p.add(i * step + b * LANES)), w, *a);
                    }
                }
            }
        }
        store_accumulators!(acc, c.activation, out, (ch, c0, count));
    }
}

/// [`depthwise_interior_avx512`] for pixels whose taps may fall in the padding: rows outside the image
/// are skipped, and taps outside it load zeros through a masked load (which touches no memory).
///
/// # Safety
/// The CPU must support AVX-512F and DQ, and `c0 + 16 * B` must not exceed the channel count.
#[target_feature(enable = "avx512f,avx512dq")]
#[allow(clippy::too_many_arguments)]
unsafe fn depthwise_edge_avx512<const B: usize>(
    x: &MapView,
    c: &PreparedConv,
    g: Geometry,
    (oy, ox, count): BlockAt,
    c0: usize,
    out: &mut [f32],
) {
    use std::arch::x86_64::{_mm512_fmadd_ps, _mm512_loadu_ps, _mm512_maskz_loadu_ps};
    let (ch, k, s) = (x.channels.len(), c.kernel, c.stride);
    let (weight, bias) = (&c.weight[x.channels.start..], &c.bias[x.channels.start..]);
    // SAFETY (all loads below): weights and bias are inside their slices (`c0 + 16 * B <= ch`); an input
    // load is unmasked only for a tap inside the image; stores go to `out`, which holds `count` pixels.
    unsafe {
        let mut acc = bias_accumulators!(B, bias, c0);
        for ky in 0..k {
            let Some(iy) = source(oy, s, ky, g.pad_top, x.height) else {
                continue;
            };
            let row = x.data.as_ptr().add(iy * x.width * ch + c0);
            for kx in 0..k {
                let taps = weight.as_ptr().add((ky * k + kx) * c.out_channels + c0);
                for (b, acc) in acc.iter_mut().enumerate() {
                    let w = _mm512_loadu_ps(taps.add(b * LANES));
                    for (p, a) in acc.iter_mut().enumerate() {
                        let ix = source(ox + p, s, kx, g.pad_left, x.width);
                        let mask = if ix.is_some() { u16::MAX } else { 0 };
                        let at = row.wrapping_add(ix.unwrap_or(0) * ch + b * LANES);
                        *a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, at), w, *a);
                    }
                }
            }
        }
        store_accumulators!(acc, c.activation, out, (ch, c0, count));
    }
}
