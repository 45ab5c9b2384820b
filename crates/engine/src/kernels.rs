//! NHWC kernels: dense and depthwise convolutions with fused bias and activation, 1x1 convolutions as GEMM
//! with a fused bias + activation (+ residual) pass, squeeze-excite in place, pooling and the classifier.
//!
//! Every hot loop runs over contiguous channels so the compiler vectorises it, and is compiled for AVX-512,
//! AVX2+FMA and the baseline ISA with runtime dispatch (`multiversion`); dispatch happens once per block of
//! output rows, never per element. With [`Exec::parallel`], output rows are split across the rayon pool
//! (used when a batch has fewer images than threads). Padding is computed from the actual input size.

use crate::activation::apply;
#[cfg(target_arch = "x86_64")]
use crate::activation::with_avx512_activation;
use crate::buffer::{aligned, Buffer};
use crate::layers::{PreparedConv, PreparedLinear};
use crate::panels::{self, Epilogue, InputLayout, Panels};
use crate::pool;
use effnet_arch::variant::Activation;
use effnet_arch::Padding;
use multiversion::multiversion;
use rayon::prelude::*;
use std::ops::Range;

/// An NHWC feature map of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureMap {
    /// Elements in `[y][x][channel]` order.
    pub data: Buffer,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// Channels.
    pub channels: usize,
}

/// The rows of a map a depthwise kernel reads (all of a [`FeatureMap`], or a band of expanded rows), and
/// which of the convolution's channels they hold: a thread's range of them, or all.
#[derive(Debug, Clone)]
pub(crate) struct MapView<'a> {
    /// Elements in `[y][x][channel]` order, `channels.len()` per pixel.
    pub data: &'a [f32],
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// The convolution's channels (its weight and bias entries) that each pixel's values are.
    pub channels: Range<usize>,
}

impl FeatureMap {
    /// The whole map, borrowed.
    pub(crate) fn view(&self) -> MapView<'_> {
        MapView {
            data: &self.data,
            height: self.height,
            width: self.width,
            channels: 0..self.channels,
        }
    }

    /// A map holding an aligned copy of `data`; the size must match.
    pub fn new(data: &[f32], height: usize, width: usize, channels: usize) -> Self {
        Self::from_buffer(aligned(data), height, width, channels)
    }

    /// A map owning `data`; the size must match.
    pub fn from_buffer(data: Buffer, height: usize, width: usize, channels: usize) -> Self {
        assert_eq!(data.len(), height * width * channels, "feature map size");
        Self {
            data,
            height,
            width,
            channels,
        }
    }
}

/// How a kernel may use threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exec {
    /// Split the work of one image across the rayon pool.
    pub parallel: bool,
}

/// Output rows per parallel task.
const ROWS_PER_TASK: usize = 2;

/// Runs `f(index, chunk)` over consecutive `chunk_len`-element chunks of `out`, on the rayon pool if asked,
/// and returns the results in chunk order.
pub(crate) fn for_chunks<T: Send>(
    out: &mut [f32],
    chunk_len: usize,
    parallel: bool,
    f: impl Fn(usize, &mut [f32]) -> T + Sync,
) -> Vec<T> {
    if parallel {
        out.par_chunks_mut(chunk_len)
            .enumerate()
            .map(|(i, chunk)| f(i, chunk))
            .collect()
    } else {
        out.chunks_mut(chunk_len)
            .enumerate()
            .map(|(i, chunk)| f(i, chunk))
            .collect()
    }
}

/// Runs `f(first_row, rows)` over `out` (rows of `row_len` elements): in [`ROWS_PER_TASK`]-row tasks across
/// threads if asked, else in one call. Returns the results in row order.
fn for_rows<T: Send>(
    out: &mut [f32],
    row_len: usize,
    exec: Exec,
    f: impl Fn(usize, &mut [f32]) -> T + Sync,
) -> Vec<T> {
    let rows = out.len() / row_len.max(1);
    let per_task = if exec.parallel && rows > ROWS_PER_TASK {
        ROWS_PER_TASK
    } else {
        rows.max(1)
    };
    for_chunks(out, row_len * per_task, per_task < rows, |i, chunk| {
        f(i * per_task, chunk)
    })
}

/// Output size and leading padding of a convolution on an input.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub out_h: usize,
    pub out_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
}

fn geometry(x: &FeatureMap, c: &PreparedConv, padding: Padding) -> Geometry {
    geometry_of(x.height, x.width, c, padding)
}

/// Output size and leading padding of convolution `c` on a `height x width` input.
pub(crate) fn geometry_of(
    height: usize,
    width: usize,
    c: &PreparedConv,
    padding: Padding,
) -> Geometry {
    let (k, s) = (c.kernel as u32, c.stride as u32);
    let rows = padding.along(height as u32, k, s);
    let cols = padding.along(width as u32, k, s);
    Geometry {
        out_h: rows.output as usize,
        out_w: cols.output as usize,
        pad_top: rows.begin as usize,
        pad_left: cols.begin as usize,
    }
}

/// The input coordinate a kernel tap reads, if it falls inside the image.
#[inline(always)]
fn source(out: usize, stride: usize, tap: usize, pad: usize, size: usize) -> Option<usize> {
    (out * stride + tap).checked_sub(pad).filter(|&i| i < size)
}

/// The outputs along one axis (of an input `size` long, `pad` before it) all of whose `kernel` taps
/// fall inside the input: `first..end`, not capped at the output size.
fn taps_inside(pad: usize, size: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let first = pad.div_ceil(stride);
    let end = (size + pad)
        .checked_sub(kernel)
        .map_or(0, |v| v / stride + 1);
    (first, end.max(first))
}

/// Copies the k x k x cin input patch of every output pixel in `rows` into consecutive rows of `patches`
/// (zeros where the patch covers padding), so a dense convolution becomes one GEMM.
fn im2col(x: &FeatureMap, c: &PreparedConv, g: Geometry, first_pixel: usize, patches: &mut [f32]) {
    let (cin, k, s) = (c.in_channels, c.kernel, c.stride);
    for (i, patch) in patches.chunks_exact_mut(k * k * cin).enumerate() {
        let pixel = first_pixel + i;
        let (oy, ox) = (pixel / g.out_w, pixel % g.out_w);
        for ky in 0..k {
            let row = &mut patch[ky * k * cin..][..k * cin];
            // All k taps of this kernel row inside the image: one contiguous run of the input row.
            let first = (ox * s)
                .checked_sub(g.pad_left)
                .filter(|&ix| ix + k <= x.width);
            if let (Some(iy), Some(ix)) = (source(oy, s, ky, g.pad_top, x.height), first) {
                let src = &x.data[(iy * x.width + ix) * cin..][..k * cin];
                row.iter_mut().zip(src).for_each(|(d, v)| *d = *v);
                continue;
            }
            for kx in 0..k {
                let dst = &mut patch[(ky * k + kx) * cin..][..cin];
                match (
                    source(oy, s, ky, g.pad_top, x.height),
                    source(ox, s, kx, g.pad_left, x.width),
                ) {
                    (Some(iy), Some(ix)) => {
                        dst.copy_from_slice(&x.data[(iy * x.width + ix) * cin..][..cin])
                    }
                    _ => dst.fill(0.0),
                }
            }
        }
    }
}

/// A dense (groups = 1) k x k convolution with bias and activation as a GEMM; weights `[ky][kx][in][out]`,
/// which is exactly the `[patch][out]` matrix. Output pixels whose patches lie inside the input are
/// multiplied straight from it, a row at a time (on AVX-512): the stem's im2col copy and its many small
/// `memcpy` calls took a third of its time. The others (those reaching into the padding) are copied into
/// patches first.
pub fn conv_dense(x: &FeatureMap, c: &PreparedConv, padding: Padding, exec: Exec) -> FeatureMap {
    let g = geometry(x, c, padding);
    let n = c.out_channels;
    let mut out = pool::take(g.out_h * g.out_w * n);
    for_chunks(&mut out, g.out_w * n, exec.parallel, |oy, row| {
        dense_row(x, c, g, oy, row)
    });
    FeatureMap::from_buffer(out, g.out_h, g.out_w, n)
}

/// Output row `oy` of the dense convolution `c` (geometry `g`) on `x`, into `row`.
pub(crate) fn dense_row(x: &FeatureMap, c: &PreparedConv, g: Geometry, oy: usize, row: &mut [f32]) {
    let (cin, k, s, n) = (c.in_channels, c.kernel, c.stride, c.out_channels);
    let (col_first, col_end) = taps_inside(g.pad_left, x.width, k, s);
    let (row_first, row_end) = taps_inside(g.pad_top, x.height, k, s);
    let layout = InputLayout {
        pixel: s * cin,
        segment: (k * cin, x.width * cin),
    };
    let epilogue = Epilogue {
        bias: &c.bias,
        activation: c.activation,
        residual: None,
    };
    let first_pixel = oy * g.out_w;
    let inside = if (row_first..row_end).contains(&oy) {
        col_first.min(g.out_w)..col_end.min(g.out_w)
    } else {
        0..0
    };
    // The first interior pixel's patch starts at input row `oy * s - pad_top`, column
    // `inside.start * s - pad_left` (both in range when there is one, as its patch is inside).
    let origin = || ((oy * s - g.pad_top) * x.width + inside.start * s - g.pad_left) * cin;
    let (left, rest) = row.split_at_mut(inside.start * n);
    let (middle, right) = rest.split_at_mut(inside.len() * n);
    if !inside.is_empty()
        && panels::gemm_patches(&x.data, origin(), layout, c.panels(), epilogue, middle)
    {
        dense_by_im2col(x, c, g, first_pixel, left);
        dense_by_im2col(x, c, g, first_pixel + inside.end, right);
    } else {
        dense_by_im2col(x, c, g, first_pixel, row);
    }
}

/// The outputs of a dense convolution for consecutive pixels from `first_pixel` (as many as `out`
/// holds) through an im2col copy of their patches.
fn dense_by_im2col(
    x: &FeatureMap,
    c: &PreparedConv,
    g: Geometry,
    first_pixel: usize,
    out: &mut [f32],
) {
    let pixels = out.len() / c.out_channels;
    if pixels == 0 {
        return;
    }
    let patch = c.kernel * c.kernel * c.in_channels;
    let mut patches = pool::take(pixels * patch);
    im2col(x, c, g, first_pixel, &mut patches);
    gemm_block(&patches, patch, c, out, GemmInput::default());
    pool::give(patches);
}

/// `a * b + c`, as one fused instruction where the compiled-for target has FMA (`fused` is a compile-time
/// constant in each multiversioned clone; without FMA, `mul_add` would be a slow library call).
#[inline(always)]
fn multiply_add(a: f32, b: f32, c: f32, fused: bool) -> f32 {
    if fused {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Channels per register block of the depthwise kernel (one AVX-512 register).
pub(crate) const LANES: usize = 16;
/// Output pixels per register block of the depthwise kernel.
pub(crate) const PIXELS: usize = 4;

/// Up to [`PIXELS`] horizontally adjacent output pixels starting at `ox`, channels `c0..c0 + W`: the
/// accumulators stay in registers across all k*k taps; taps that fall in the padding are skipped.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn depthwise_block<const W: usize>(
    x: &MapView,
    c: &PreparedConv,
    g: Geometry,
    oy: usize,
    ox: usize,
    count: usize,
    c0: usize,
    out: &mut [f32],
    fused: bool,
) {
    let (ch, taps, k, s) = (x.channels.len(), c.out_channels, c.kernel, c.stride);
    let (weight, bias) = (&c.weight[x.channels.start..], &c.bias[x.channels.start..]);
    let mut acc = [[0f32; W]; PIXELS];
    for a in acc.iter_mut() {
        a.copy_from_slice(&bias[c0..c0 + W]);
    }
    for ky in 0..k {
        let Some(iy) = source(oy, s, ky, g.pad_top, x.height) else {
            continue;
        };
        let row = &x.data[iy * x.width * ch..(iy + 1) * x.width * ch];
        for kx in 0..k {
            let w: &[f32; W] = weight[(ky * k + kx) * taps + c0..][..W]
                .try_into()
                .expect("W lanes");
            // A fixed trip count lets the compiler unroll over pixels and keep `acc` in registers.
            #[allow(clippy::needless_range_loop)]
            for p in 0..PIXELS {
                if p >= count {
                    continue;
                }
                let Some(ix) = source(ox + p, s, kx, g.pad_left, x.width) else {
                    continue;
                };
                let v: &[f32; W] = row[ix * ch + c0..][..W].try_into().expect("W lanes");
                for l in 0..W {
                    acc[p][l] = multiply_add(v[l], w[l], acc[p][l], fused);
                }
            }
        }
    }
    for (p, a) in acc.iter_mut().enumerate().take(count) {
        apply(c.activation, a);
        out[p * ch + c0..][..W].copy_from_slice(a);
    }
}

/// [`PIXELS`] output pixels whose k x k taps all lie inside the image: no bounds checks in the tap loop.
/// The first `count` of them are stored (a row's last block may be short).
///
/// # Safety
/// Every tap of pixels `ox..ox + PIXELS` in output row `oy` must be inside `x` (all are read, even past
/// `count`), and `c0 + LANES` must not exceed the channel count.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn depthwise_interior(
    x: &MapView,
    c: &PreparedConv,
    g: Geometry,
    (oy, ox, count): (usize, usize, usize),
    c0: usize,
    out: &mut [f32],
    fused: bool,
) {
    let (ch, taps, k, s) = (x.channels.len(), c.out_channels, c.kernel, c.stride);
    let first = x.channels.start;
    let bias: [f32; LANES] = c.bias[first + c0..][..LANES].try_into().expect("LANES");
    let mut acc = [bias; PIXELS];
    let input = x.data.as_ptr();
    let weight = c.weight[first..].as_ptr();
    for ky in 0..k {
        let iy = oy * s + ky - g.pad_top;
        // SAFETY (all pointer arithmetic below): the caller guarantees every tap is inside the image.
        let row = unsafe { input.add(iy * x.width * ch + c0) };
        for kx in 0..k {
            let w = unsafe {
                weight
                    .add((ky * k + kx) * taps + c0)
                    .cast::<[f32; LANES]>()
                    .read_unaligned()
            };
            for (p, a) in acc.iter_mut().enumerate() {
                let ix = (ox + p) * s + kx - g.pad_left;
                let v = unsafe { row.add(ix * ch).cast::<[f32; LANES]>().read_unaligned() };
                for l in 0..LANES {
                    a[l] = multiply_add(v[l], w[l], a[l], fused);
                }
            }
        }
    }
    for (p, a) in acc.iter_mut().enumerate().take(count) {
        apply(c.activation, a);
        out[p * ch + c0..][..LANES].copy_from_slice(a);
    }
}

/// The accumulators of an AVX-512 depthwise kernel: [`PIXELS`] pixels of `$b` blocks of 16 channels from
/// `$c0`, each starting from its channels' bias. (Macros rather than functions: a function returning the
/// registers measured 2% slower over the whole network, its result going through memory.)
#[cfg(target_arch = "x86_64")]
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
#[cfg(target_arch = "x86_64")]
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
/// (The interior of a 5 x 5 kernel's rows runs in [`crate::depthwise_span`] instead.)
///
/// # Safety
/// The CPU must support AVX-512F and DQ, and the conditions of [`depthwise_interior`] must hold for every
/// one of the `B` channel blocks from `c0`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
#[allow(clippy::too_many_arguments)]
unsafe fn depthwise_interior_avx512<const B: usize>(
    x: &MapView,
    c: &PreparedConv,
    g: Geometry,
    (oy, ox, count): (usize, usize, usize),
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
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
#[allow(clippy::too_many_arguments)]
unsafe fn depthwise_edge_avx512<const B: usize>(
    x: &MapView,
    c: &PreparedConv,
    g: Geometry,
    (oy, ox, count): (usize, usize, usize),
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

#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma",
    "x86_64+avx2+fma"
))]
pub(crate) fn depthwise_rows(
    x: &MapView,
    c: &PreparedConv,
    g: Geometry,
    first_row: usize,
    out: &mut [f32],
) {
    let (ch, k, s) = (x.channels.len(), c.kernel, c.stride);
    let fused =
        multiversion::target::target_cfg_f!(any(target_feature = "fma", target_arch = "aarch64"));
    let avx512 = multiversion::target::target_cfg_f!(all(
        target_arch = "x86_64",
        target_feature = "avx512f",
        target_feature = "avx512dq"
    ));
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
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512F and DQ were detected; every tap of the span's blocks is inside `x`.
        let spanned = avx512
            && row_inside
            && !span.is_empty()
            && unsafe {
                crate::depthwise_span::depthwise_span(x, c, g, (oy, span.clone()), row_out)
            };
        #[cfg(not(target_arch = "x86_64"))]
        let spanned = false;
        for ox in (0..g.out_w).step_by(PIXELS) {
            let count = PIXELS.min(g.out_w - ox);
            let pixels = &mut row_out[ox * ch..];
            let interior = row_inside && span.contains(&ox);
            // The span did this block's whole 16-channel blocks.
            let mut c0 = if spanned && interior {
                ch / LANES * LANES
            } else {
                0
            };
            while c0 + LANES <= ch {
                if interior && avx512 && c0 + 2 * LANES <= ch {
                    // SAFETY: AVX-512F and DQ were detected; `interior` means every tap of these pixels is
                    // inside `x` and the condition keeps both channel blocks inside `ch`.
                    unsafe { depthwise_interior_avx512::<2>(x, c, g, (oy, ox, count), c0, pixels) };
                    c0 += LANES;
                } else if interior && avx512 {
                    // SAFETY: as above, for one channel block.
                    unsafe { depthwise_interior_avx512::<1>(x, c, g, (oy, ox, count), c0, pixels) };
                } else if interior {
                    // SAFETY: as above, without the ISA requirement.
                    unsafe { depthwise_interior(x, c, g, (oy, ox, count), c0, pixels, fused) };
                } else if avx512 && c0 + 2 * LANES <= ch {
                    // SAFETY: AVX-512F and DQ were detected; the condition keeps both channel blocks inside
                    // `ch`.
                    unsafe { depthwise_edge_avx512::<2>(x, c, g, (oy, ox, count), c0, pixels) };
                    c0 += LANES;
                } else if avx512 {
                    // SAFETY: as above, for one channel block.
                    unsafe { depthwise_edge_avx512::<1>(x, c, g, (oy, ox, count), c0, pixels) };
                } else {
                    depthwise_block::<LANES>(x, c, g, oy, ox, count, c0, pixels, fused);
                }
                c0 += LANES;
            }
            while c0 < ch {
                depthwise_block::<1>(x, c, g, oy, ox, count, c0, pixels, fused);
                c0 += 1;
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

/// Pixels per GEMM call: whole register tiles, few enough that a block's gated copy stays in cache.
const GEMM_ROWS: usize = 10 * panels::TILE;

/// `out = lhs * rhs` for row-major `lhs` (`m x k`), `rhs` (`k x n`) and `out` (`m x n`), `m` and `n`
/// taken from the slice lengths.
fn matmul(lhs: &[f32], rhs: &[f32], k: usize, out: &mut [f32], parallelism: gemm::Parallelism) {
    let m = lhs.len() / k.max(1);
    let n = rhs.len() / k.max(1);
    assert!(lhs.len() == m * k && rhs.len() == k * n && out.len() == m * n);
    // SAFETY: the assert above gives every operand exactly the size its strides address; `out` is
    // exclusively borrowed, so it cannot overlap the others.
    unsafe {
        matmul_strided(
            lhs,
            k,
            (rhs.as_ptr(), n),
            (out.as_mut_ptr(), n),
            n,
            parallelism,
        )
    }
}

/// `out = lhs * rhs` for row-major `lhs` (`m x k`, `m` from its length), `rhs` (`k x n`, rows `rhs.1`
/// apart) and `out` (`m x n`, rows `out.1` apart).
///
/// # Safety
/// The pointers must address those matrices, and nothing else may access `out`'s `m x n` elements during
/// the call.
pub(crate) unsafe fn matmul_strided(
    lhs: &[f32],
    k: usize,
    rhs: (*const f32, usize),
    out: (*mut f32, usize),
    n: usize,
    parallelism: gemm::Parallelism,
) {
    let m = lhs.len() / k.max(1);
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.0,
            1,
            out.1 as isize,
            false,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.0,
            1,
            rhs.1 as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `out = x * weight` for rows of `k` inputs, with the epilogue, one block of [`GEMM_ROWS`] pixels at a
/// time; `input` may scale the input channels first, replace the weights, or add a residual.
pub(crate) fn gemm_block(x: &[f32], k: usize, c: &PreparedConv, out: &mut [f32], input: GemmInput) {
    let n = c.out_channels;
    let weights = input.weight.unwrap_or(c.panels());
    for (i, block) in out.chunks_mut(GEMM_ROWS * n).enumerate() {
        let m = block.len() / n;
        let rows = &x[i * GEMM_ROWS * k..][..m * k];
        let epilogue = Epilogue {
            bias: &c.bias,
            activation: c.activation,
            residual: input.residual.map(|r| &r[i * GEMM_ROWS * n..][..m * n]),
        };
        match input.gate {
            // Squeeze-excite's channel scale on a copy of the block, still in cache for the GEMM.
            Some(gate) => {
                let scaled = scaled_copy(rows, gate);
                panels::gemm_rows(&scaled, weights.into(), epilogue, block);
                pool::give(scaled);
            }
            None => panels::gemm_rows(rows, weights.into(), epilogue, block),
        }
    }
}

/// `rows` with every pixel's channels multiplied by `gate`, in a pooled buffer.
fn scaled_copy(rows: &[f32], gate: &[f32]) -> Buffer {
    let mut scaled = pool::take(rows.len());
    scaled.copy_from_slice(rows);
    scale_rows(&mut scaled, gate);
    scaled
}

/// What a GEMM block adds to `x * weight`: a per-input-channel scale applied first, a residual added last.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GemmInput<'a> {
    /// Multiplies every input row channel by channel (squeeze-excite's gate).
    pub gate: Option<&'a [f32]>,
    /// Replaces the convolution's weights (the same weights with the gate folded in).
    pub weight: Option<&'a Panels>,
    /// Added to the output after the activation.
    pub residual: Option<&'a [f32]>,
}

/// An output buffer that parallel tasks write in disjoint parts through its raw pointer.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);

// SAFETY: the pointer is only written through in parts that the tasks' owners keep disjoint.
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The pointer (a method, so closures capture the `Sync` wrapper rather than the bare field).
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// [`gemm_block`] for maps with too few pixels to split by rows (the late 7 x 7 stages at batch 1): each
/// task computes an equal range of the output channels (whole panels) for every pixel.
fn gemm_columns(x: &[f32], k: usize, c: &PreparedConv, out: &mut [f32], input: GemmInput) {
    let n = c.out_channels;
    let m = out.len() / n;
    let weights = input.weight.unwrap_or(c.panels());
    let scaled = input.gate.map(|gate| scaled_copy(x, gate));
    let x = scaled.as_deref().unwrap_or(x);
    assert!(x.len() == m * k && input.residual.is_none_or(|r| r.len() == out.len()));
    let epilogue = Epilogue {
        bias: &c.bias,
        activation: c.activation,
        residual: input.residual,
    };
    let dst = SharedOut(out.as_mut_ptr());
    weights.per_thread().into_par_iter().for_each(|panels| {
        let dest = panels::Dest::rows(dst.ptr(), n, 0);
        // SAFETY: `out` holds the `m x n` outputs (asserted sizes), and each task writes only the columns
        // of its own panels.
        unsafe { panels::gemm(x, weights.into(), epilogue, dest, panels) };
    });
    if let Some(scaled) = scaled {
        pool::give(scaled);
    }
}

/// A 1x1 convolution as GEMM (`[pixels x in] * [in x out]`) with bias, activation and an optional residual
/// fused into one pass per block of pixels.
pub fn pointwise(
    x: &FeatureMap,
    c: &PreparedConv,
    residual: Option<&FeatureMap>,
    exec: Exec,
) -> FeatureMap {
    pointwise_gated(x, None, c, residual, exec)
}

/// [`pointwise`] of `x` with every input channel first multiplied by `gate` (squeeze-excite's scale):
/// folded into the weights when they are smaller than the map, else applied block by block inside the
/// GEMM's tasks; never in a pass of its own.
pub fn pointwise_gated(
    x: &FeatureMap,
    gate: Option<&[f32]>,
    c: &PreparedConv,
    residual: Option<&FeatureMap>,
    exec: Exec,
) -> FeatureMap {
    let (m, k, n) = (x.height * x.width, c.in_channels, c.out_channels);
    let mut out = pool::take(m * n);
    let residual = residual.map(|r| r.data.as_slice());
    // Scaling input channel j by g[j] equals scaling weight row j by g[j]: where the map has more pixels
    // than the layer has outputs, the weights are the smaller thing to scale.
    let folded = gate
        .filter(|_| m > n)
        .map(|gate| c.panels().scaled_rows(gate));
    let gate = gate.filter(|_| folded.is_none());
    if exec.parallel && m > GEMM_ROWS {
        // Equal blocks of at most GEMM_ROWS pixels, a multiple of the thread count of them, so no
        // thread is left with a short last block while the other waits (14 x 14 = 196 pixels would
        // otherwise be 128 + 68).
        let threads = rayon::current_num_threads();
        let blocks = threads * m.div_ceil(threads * GEMM_ROWS);
        let per_block = m.div_ceil(blocks);
        for_chunks(&mut out, per_block * n, true, |i, block| {
            let rows = block.len() / n;
            let input = GemmInput {
                gate,
                weight: folded.as_ref(),
                residual: residual.map(|r| &r[i * per_block * n..][..rows * n]),
            };
            let x = &x.data[i * per_block * k..][..rows * k];
            gemm_block(x, k, c, block, input);
        });
    } else {
        let input = GemmInput {
            gate,
            weight: folded.as_ref(),
            residual,
        };
        if exec.parallel {
            gemm_columns(&x.data, k, c, &mut out, input);
        } else {
            gemm_block(&x.data, k, c, &mut out, input);
        }
    }
    if let Some(weight) = folded {
        weight.recycle();
    }
    FeatureMap::from_buffer(out, x.height, x.width, n)
}

/// Per-channel sums over NHWC pixels of `channels` values: f32 over runs of [`SUM_RUN`] pixels (which
/// vectorises), each run's total added in f64.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma",
    "x86_64+avx2+fma"
))]
pub(crate) fn channel_sums(pixels: &[f32], channels: usize) -> Vec<f64> {
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

/// `bias + input * weight`, then the activation, where input `i`'s `bias.len()` weights start at
/// `weight[i * stride]`: a row-major `[in][out]` matrix (`stride` = out) or, from its first column on,
/// a range of its columns (`stride` the whole row).
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma",
    "x86_64+avx2+fma"
))]
pub(crate) fn dense_vector(
    input: &[f32],
    (weight, stride): (&[f32], usize),
    bias: &[f32],
    activation: Option<Activation>,
) -> Vec<f32> {
    let mut out = bias.to_vec();
    let n = out.len();
    let row = |i: usize| &weight[i * stride..][..n];
    // Four input rows per pass over `out`: with few outputs (an SE reduction has 4 to 48) one row per
    // pass would make every pass wait on the previous one's stores.
    let quads = input.len() / 4;
    for (q, v) in input.chunks_exact(4).enumerate() {
        let rows = (row(4 * q), row(4 * q + 1), row(4 * q + 2), row(4 * q + 3));
        out.iter_mut()
            .zip(rows.0)
            .zip(rows.1)
            .zip(rows.2)
            .zip(rows.3)
            .for_each(|((((o, w0), w1), w2), w3)| {
                *o += v[0] * w0 + v[1] * w1 + v[2] * w2 + v[3] * w3;
            });
    }
    for (i, &v) in input.iter().enumerate().skip(quads * 4) {
        out.iter_mut().zip(row(i)).for_each(|(o, &w)| *o += v * w);
    }
    apply(activation, &mut out);
    out
}

#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma",
    "x86_64+avx2+fma"
))]
pub(crate) fn scale_rows(rows: &mut [f32], gate: &[f32]) {
    for px in rows.chunks_exact_mut(gate.len()) {
        px.iter_mut().zip(gate).for_each(|(v, g)| *v *= g);
    }
}

/// Squeeze-excite in place: mean, reduce + activation, expand + sigmoid, scale every channel. (The
/// engine itself applies the gate inside the project convolution instead, see [`pointwise_gated`].)
pub fn squeeze_excite(
    x: &mut FeatureMap,
    reduce: &PreparedConv,
    expand: &PreparedConv,
    exec: Exec,
) {
    let gate = se_gate(&global_average(x), reduce, expand);
    let row_len = x.width * x.channels;
    for_rows(&mut x.data, row_len, exec, |_, rows| {
        scale_rows(rows, &gate)
    });
}

/// Squeeze-excite's per-channel gate from the channel means: reduce + activation, expand + sigmoid.
pub fn se_gate(mean: &[f32], reduce: &PreparedConv, expand: &PreparedConv) -> Vec<f32> {
    let reduced = dense_vector(
        mean,
        (&reduce.weight, reduce.out_channels),
        &reduce.bias,
        reduce.activation,
    );
    se_excite(&reduced, expand, 0..expand.out_channels)
}

/// The gates of squeeze-excite's channels `channels` from its reduced vector: those columns of the
/// expand layer, then sigmoid.
pub(crate) fn se_excite(
    reduced: &[f32],
    expand: &PreparedConv,
    channels: Range<usize>,
) -> Vec<f32> {
    let columns = (&expand.weight[channels.start..], expand.out_channels);
    dense_vector(
        reduced,
        columns,
        &expand.bias[channels],
        Some(Activation::Sigmoid),
    )
}

/// The classifier on pooled features. Its weights (5 MB for 1000 classes) are read from memory at about
/// one multiply-add per float, so the input features are split across the rayon pool's threads, each
/// reading its rows of the weights; the partial sums are added in a fixed order.
pub fn linear(features: &[f32], l: &PreparedLinear) -> Vec<f32> {
    let threads = rayon::current_num_threads().min(l.in_features.div_ceil(LINEAR_ROWS_PER_TASK));
    if threads < 2 {
        return dense_vector(features, (&l.weight, l.out_features), &l.bias, None);
    }
    let per_task = l.in_features.div_ceil(threads);
    let zero = vec![0f32; l.out_features];
    let parts: Vec<Vec<f32>> = features
        .par_chunks(per_task)
        .zip(l.weight.par_chunks(per_task * l.out_features))
        .map(|(input, weight)| dense_vector(input, (weight, l.out_features), &zero, None))
        .collect();
    let mut out = l.bias.clone();
    add_in_order(&mut out, parts);
    out
}

/// Fewest classifier inputs worth a thread of their own.
const LINEAR_ROWS_PER_TASK: usize = 256;

/// The classifier on the pooled features of several images as one GEMM, so its weights (5 MB for
/// 1000 classes) are read once per batch instead of once per image.
pub fn linear_batch(features: &[&[f32]], l: &PreparedLinear) -> Vec<Vec<f32>> {
    if features.len() < 2 {
        return features.iter().map(|f| linear(f, l)).collect();
    }
    let lhs: Vec<f32> = features.concat();
    let mut out = vec![0f32; features.len() * l.out_features];
    matmul(
        &lhs,
        &l.weight,
        l.in_features,
        &mut out,
        gemm::Parallelism::Rayon(0),
    );
    out.chunks_exact(l.out_features)
        .map(|row| row.iter().zip(&l.bias).map(|(v, b)| v + b).collect())
        .collect()
}
