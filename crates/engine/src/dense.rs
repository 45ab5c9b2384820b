//! Dense (groups = 1) k x k convolutions as GEMMs: the stem, and the first block of a network that does
//! not expand.

use crate::feature_map::{for_chunks, Exec, FeatureMap};
use crate::geometry::{geometry, source, taps_inside, Geometry};
use crate::layers::PreparedConv;
use crate::panels::{self, Epilogue, InputLayout};
use crate::pointwise::{gemm_block, GemmInput};
use crate::pool;
use effnet_arch::Padding;

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
/// multiplied straight from it, a row at a time: the stem's im2col copy and its many small
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
    let (left, rest) = row.split_at_mut(inside.start * n);
    let (middle, right) = rest.split_at_mut(inside.len() * n);
    if !inside.is_empty() {
        let origin = ((oy * s - g.pad_top) * x.width + inside.start * s - g.pad_left) * cin;
        panels::gemm_patches(&x.data, origin, layout, c.panels(), epilogue, middle);
    }
    dense_by_im2col(x, c, g, first_pixel, left);
    dense_by_im2col(x, c, g, first_pixel + inside.end, right);
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
