//! Batch norm folded into the convolution before it: `w' = w * gamma / sqrt(var + eps)`,
//! `b' = beta - mean * gamma / sqrt(var + eps)` (or the convolution's own bias), computed in f64 and rounded
//! once. Every consumer of inference weights (the engine, the ONNX writer) folds through here.

use crate::tensor::{Tensor, TensorSource};
use effnet_arch::plan::Conv;

/// A convolution with its batch norm folded in.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldedConv {
    /// Weights in PyTorch order `[out][in / groups][ky][kx]`.
    pub weight: Vec<f32>,
    /// One bias per output channel.
    pub bias: Vec<f32>,
}

/// The canonical tensor `name` from `tensors`. A plan's loaded weights hold every tensor of the plan (the
/// loader checks it), so a missing one is a bug, not bad input.
pub fn take_required(tensors: &mut impl TensorSource, name: &str) -> Tensor {
    tensors.take(name).unwrap_or_else(|| {
        panic!("canonical tensor `{name}` missing: the loader guarantees every plan tensor")
    })
}

/// Folds the convolution named `name` (canonical layout) with its batch norm, if it has one, taking its
/// tensors from `tensors`.
pub fn fold_conv(
    conv: &Conv,
    name: &str,
    tensors: &mut impl TensorSource,
    bn_eps: f64,
) -> FoldedConv {
    let cout = conv.out_channels as usize;
    let mut weight = take_required(tensors, &format!("{name}.weight")).data;
    let (scale, shift): (Vec<f64>, Vec<f64>) = if conv.batch_norm {
        let mut field = |f: &str| take_required(tensors, &format!("{name}.bn.{f}")).data;
        let (gamma, beta, mean, var) = (
            field("weight"),
            field("bias"),
            field("running_mean"),
            field("running_var"),
        );
        (0..cout)
            .map(|o| {
                let s = f64::from(gamma[o]) / (f64::from(var[o]) + bn_eps).sqrt();
                (s, f64::from(beta[o]) - f64::from(mean[o]) * s)
            })
            .unzip()
    } else {
        let bias = conv
            .bias
            .then(|| take_required(tensors, &format!("{name}.bias")).data);
        (0..cout)
            .map(|o| (1.0, bias.as_ref().map_or(0.0, |b| f64::from(b[o]))))
            .unzip()
    };
    let per_output = weight.len() / cout.max(1);
    for (row, s) in weight.chunks_mut(per_output.max(1)).zip(&scale) {
        for w in row {
            *w = (f64::from(*w) * s) as f32;
        }
    }
    FoldedConv {
        weight,
        bias: shift.into_iter().map(|b| b as f32).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use effnet_arch::padding::AxisPad;
    use std::collections::BTreeMap;

    #[test]
    fn folding_scales_each_output_row_and_shifts_its_bias() {
        let conv = Conv {
            in_channels: 1,
            out_channels: 2,
            kernel: 1,
            stride: 1,
            groups: 1,
            input_size: 4,
            output_size: 4,
            pad: AxisPad {
                begin: 0,
                end: 0,
                output: 4,
            },
            bias: false,
            batch_norm: true,
            activation: None,
        };
        let t = |v: [f32; 2]| Tensor::new(vec![2], v.to_vec());
        let mut tensors: BTreeMap<String, Tensor> = [
            ("c.weight", Tensor::new(vec![2, 1, 1, 1], vec![2.0, 3.0])),
            ("c.bn.weight", t([1.0, 2.0])),
            ("c.bn.bias", t([0.5, -0.5])),
            ("c.bn.running_mean", t([1.0, 0.0])),
            ("c.bn.running_var", t([3.0, 0.0])),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let folded = fold_conv(&conv, "c", &mut tensors, 1.0);
        // Row 0: scale 1/2, shift 0.5 - 1/2; row 1: scale 2, shift -0.5.
        assert_eq!(folded.weight, vec![1.0, 6.0]);
        assert_eq!(folded.bias, vec![0.0, -0.5]);
        assert!(tensors.is_empty(), "every tensor taken");
    }
}
