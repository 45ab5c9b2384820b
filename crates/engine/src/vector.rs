//! Layers on vectors: squeeze-excite's reduce and expand, its channel scale, and the classifier.

use crate::activation::apply;
use crate::feature_map::{for_rows, Exec, FeatureMap};
use crate::isa::kernels;
use crate::layers::{PreparedConv, PreparedLinear};
use crate::reduce::{add_in_order, global_average};
use effnet_arch::variant::Activation;
use rayon::prelude::*;
use std::ops::Range;

/// `bias + input * weight`, then the activation, where input `i`'s `bias.len()` weights start at
/// `weight[i * stride]`: a row-major `[in][out]` matrix (`stride` = out) or, from its first column on,
/// a range of its columns (`stride` the whole row).
pub(crate) fn dense_vector(
    input: &[f32],
    weight: (&[f32], usize),
    bias: &[f32],
    activation: Option<Activation>,
) -> Vec<f32> {
    (kernels().dense_vector)(input, weight, bias, activation)
}

/// [`dense_vector`], inlined into each instruction set's table entry.
#[inline(always)]
pub(crate) fn dense_vector_body(
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

/// Multiplies every pixel's channels (rows of `gate.len()` values) by `gate`.
pub(crate) fn scale_rows(rows: &mut [f32], gate: &[f32]) {
    (kernels().scale_rows)(rows, gate)
}

/// [`scale_rows`], inlined into each instruction set's table entry.
#[inline(always)]
pub(crate) fn scale_rows_body(rows: &mut [f32], gate: &[f32]) {
    for px in rows.chunks_exact_mut(gate.len()) {
        px.iter_mut().zip(gate).for_each(|(v, g)| *v *= g);
    }
}

/// Squeeze-excite in place: mean, reduce + activation, expand + sigmoid, scale every channel. (The
/// engine itself applies the gate inside the project convolution instead, see [`crate::pointwise::pointwise_gated`].)
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
        (reduce.rows(), reduce.out_channels),
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
    let columns = (&expand.rows()[channels.start..], expand.out_channels);
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

/// `out = lhs * rhs` for row-major `lhs` (`m x k`), `rhs` (`k x n`) and `out` (`m x n`), `m` and `n`
/// taken from the slice lengths, by the `gemm` crate (which packs both operands: worth it for the
/// classifier of a batch, where the 5 MB of weights are read once for every image).
fn matmul(lhs: &[f32], rhs: &[f32], k: usize, out: &mut [f32], parallelism: gemm::Parallelism) {
    let m = lhs.len() / k.max(1);
    let n = rhs.len() / k.max(1);
    assert!(lhs.len() == m * k && rhs.len() == k * n && out.len() == m * n);
    // SAFETY: the assert above gives every operand exactly the size its strides address; `out` is
    // exclusively borrowed, so it cannot overlap the others.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}
