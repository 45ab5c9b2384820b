//! NHWC kernels: dense and depthwise convolutions with fused bias and activation, 1x1 convolutions as GEMM,
//! squeeze-excite in place, global average pooling and the classifier.
//!
//! Padding is computed from the actual input size at run time (TF "SAME" or symmetric), so any input
//! resolution runs with the padding its weights were trained with.

use crate::activation::{apply, sigmoid};
use crate::layers::{PreparedConv, PreparedLinear};
use effnet_arch::variant::Activation;
use effnet_arch::Padding;

/// An NHWC feature map of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureMap {
    /// Elements in `[y][x][channel]` order.
    pub data: Vec<f32>,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// Channels.
    pub channels: usize,
}

impl FeatureMap {
    /// A map from its data; the size must match.
    pub fn new(data: Vec<f32>, height: usize, width: usize, channels: usize) -> Self {
        assert_eq!(data.len(), height * width * channels, "feature map size");
        Self {
            data,
            height,
            width,
            channels,
        }
    }
}

struct Geometry {
    out_h: usize,
    out_w: usize,
    pad_top: usize,
    pad_left: usize,
}

fn geometry(x: &FeatureMap, c: &PreparedConv, padding: Padding) -> Geometry {
    let (k, s) = (c.kernel as u32, c.stride as u32);
    let rows = padding.along(x.height as u32, k, s);
    let cols = padding.along(x.width as u32, k, s);
    Geometry {
        out_h: rows.output as usize,
        out_w: cols.output as usize,
        pad_top: rows.begin as usize,
        pad_left: cols.begin as usize,
    }
}

/// The input coordinate a kernel tap reads, if it falls inside the image.
#[inline]
fn source(out: usize, stride: usize, tap: usize, pad: usize, size: usize) -> Option<usize> {
    (out * stride + tap).checked_sub(pad).filter(|&i| i < size)
}

/// A dense (groups = 1) k x k convolution with bias and activation; weights `[ky][kx][in][out]`.
pub fn conv_dense(x: &FeatureMap, c: &PreparedConv, padding: Padding) -> FeatureMap {
    let g = geometry(x, c, padding);
    let (cin, cout, k, s) = (c.in_channels, c.out_channels, c.kernel, c.stride);
    let mut out = vec![0f32; g.out_h * g.out_w * cout];
    for (pixel, acc) in out.chunks_exact_mut(cout).enumerate() {
        let (oy, ox) = (pixel / g.out_w, pixel % g.out_w);
        acc.copy_from_slice(&c.bias);
        for ky in 0..k {
            let Some(iy) = source(oy, s, ky, g.pad_top, x.height) else {
                continue;
            };
            for kx in 0..k {
                let Some(ix) = source(ox, s, kx, g.pad_left, x.width) else {
                    continue;
                };
                let px = &x.data[(iy * x.width + ix) * cin..][..cin];
                for (ci, &v) in px.iter().enumerate() {
                    let w = &c.weight[((ky * k + kx) * cin + ci) * cout..][..cout];
                    acc.iter_mut().zip(w).for_each(|(a, &w)| *a += v * w);
                }
            }
        }
        apply(c.activation, acc);
    }
    FeatureMap::new(out, g.out_h, g.out_w, cout)
}

/// A 1x1 convolution as one GEMM (`[pixels x in] * [in x out]`), then bias and activation.
pub fn pointwise(x: &FeatureMap, c: &PreparedConv) -> FeatureMap {
    let (m, k, n) = (x.height * x.width, c.in_channels, c.out_channels);
    let mut out = vec![0f32; m * n];
    // SAFETY: dst is m x n row-major (row stride n), lhs m x k (row stride k), rhs k x n (row stride n);
    // all three buffers have exactly those sizes and do not overlap.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.data.as_ptr(),
            1,
            k as isize,
            c.weight.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
    for row in out.chunks_exact_mut(n) {
        row.iter_mut().zip(&c.bias).for_each(|(v, b)| *v += b);
        apply(c.activation, row);
    }
    FeatureMap::new(out, x.height, x.width, n)
}

/// A depthwise k x k convolution with bias and activation; weights `[ky][kx][channel]`.
pub fn depthwise(x: &FeatureMap, c: &PreparedConv, padding: Padding) -> FeatureMap {
    let g = geometry(x, c, padding);
    let (ch, k, s) = (c.out_channels, c.kernel, c.stride);
    let mut out = vec![0f32; g.out_h * g.out_w * ch];
    for (pixel, acc) in out.chunks_exact_mut(ch).enumerate() {
        let (oy, ox) = (pixel / g.out_w, pixel % g.out_w);
        acc.copy_from_slice(&c.bias);
        for ky in 0..k {
            let Some(iy) = source(oy, s, ky, g.pad_top, x.height) else {
                continue;
            };
            for kx in 0..k {
                let Some(ix) = source(ox, s, kx, g.pad_left, x.width) else {
                    continue;
                };
                let px = &x.data[(iy * x.width + ix) * ch..][..ch];
                let w = &c.weight[(ky * k + kx) * ch..][..ch];
                acc.iter_mut()
                    .zip(px.iter().zip(w))
                    .for_each(|(a, (&v, &w))| *a += v * w);
            }
        }
        apply(c.activation, acc);
    }
    FeatureMap::new(out, g.out_h, g.out_w, ch)
}

/// Per-channel mean over all pixels (accumulated in f64).
pub fn global_average(x: &FeatureMap) -> Vec<f32> {
    let mut sums = vec![0f64; x.channels];
    for px in x.data.chunks_exact(x.channels) {
        sums.iter_mut()
            .zip(px)
            .for_each(|(s, &v)| *s += f64::from(v));
    }
    let n = (x.height * x.width) as f64;
    sums.into_iter().map(|s| (s / n) as f32).collect()
}

/// `bias + input * weight` for a `[in][out]` weight, then the activation.
fn dense_vector(
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    activation: Option<Activation>,
) -> Vec<f32> {
    let mut out = bias.to_vec();
    let n = out.len();
    for (i, &v) in input.iter().enumerate() {
        out.iter_mut()
            .zip(&weight[i * n..(i + 1) * n])
            .for_each(|(o, &w)| *o += v * w);
    }
    apply(activation, &mut out);
    out
}

/// Squeeze-excite in place: mean, reduce + activation, expand + sigmoid, scale every channel.
pub fn squeeze_excite(x: &mut FeatureMap, reduce: &PreparedConv, expand: &PreparedConv) {
    let pooled = global_average(x);
    let reduced = dense_vector(&pooled, &reduce.weight, &reduce.bias, reduce.activation);
    let gate = dense_vector(&reduced, &expand.weight, &expand.bias, None);
    let gate: Vec<f32> = gate.into_iter().map(sigmoid).collect();
    for px in x.data.chunks_exact_mut(x.channels) {
        px.iter_mut().zip(&gate).for_each(|(v, g)| *v *= g);
    }
}

/// The classifier on pooled features.
pub fn linear(features: &[f32], l: &PreparedLinear) -> Vec<f32> {
    dense_vector(features, &l.weight, &l.bias, None)
}
