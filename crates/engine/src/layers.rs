//! Layer weights prepared for NHWC execution: batch norm folded into the convolution (in f64, rounded once),
//! kernels reordered so the channel loop is innermost.

use crate::buffer::{aligned, Buffer};
use crate::panels::Panels;
use effnet_arch::plan::Conv;
use effnet_arch::variant::Activation;
use effnet_weights::Tensor;
use std::collections::BTreeMap;

/// A convolution with folded batch norm, ready to run. Build it with [`PreparedConv::new`], which also packs
/// a dense convolution's weights for the GEMM kernel; the fields are for reading.
#[derive(Debug, Clone)]
pub struct PreparedConv {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Square kernel size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Weights: dense `[ky][kx][in][out]`, depthwise `[ky][kx][channel]`, 1x1 `[in][out]`.
    pub weight: Buffer,
    /// Per-output bias (the folded BN shift, or the conv's own bias).
    pub bias: Vec<f32>,
    /// Activation after the bias.
    pub activation: Option<Activation>,
    /// A dense convolution's `[patch][out]` weights packed for [`crate::panels`]; `None` for depthwise.
    panels: Option<Panels>,
}

impl PreparedConv {
    /// A convolution from its prepared weights (layouts as on [`PreparedConv::weight`]); dense when
    /// `weight` holds `kernel * kernel * in_channels * out_channels` values, else depthwise.
    pub fn new(
        (in_channels, out_channels): (usize, usize),
        (kernel, stride): (usize, usize),
        weight: Vec<f32>,
        bias: Vec<f32>,
        activation: Option<Activation>,
    ) -> Self {
        let patch = kernel * kernel * in_channels;
        let panels = (weight.len() == patch * out_channels)
            .then(|| Panels::pack(&weight, patch, out_channels));
        Self {
            in_channels,
            out_channels,
            kernel,
            stride,
            weight: aligned(&weight),
            bias,
            activation,
            panels,
        }
    }

    /// The packed weights of a dense convolution.
    pub(crate) fn panels(&self) -> &Panels {
        self.panels
            .as_ref()
            .expect("the GEMM kernels run only dense convolutions")
    }
}

/// An MBConv block's prepared convolutions.
#[derive(Debug, Clone)]
pub struct PreparedBlock {
    /// The 1x1 expansion (absent at expansion ratio 1).
    pub expand: Option<PreparedConv>,
    /// The depthwise convolution.
    pub depthwise: PreparedConv,
    /// Squeeze-excite's reduce and expand layers (1x1 convolutions on the pooled vector).
    pub se: Option<(PreparedConv, PreparedConv)>,
    /// The 1x1 projection, without activation.
    pub project: PreparedConv,
    /// Whether the block's input is added to its output.
    pub residual: bool,
}

/// A fully connected layer `[in][out]` with bias.
#[derive(Debug, Clone)]
pub struct PreparedLinear {
    /// Input features.
    pub in_features: usize,
    /// Output features.
    pub out_features: usize,
    /// Weights `[in][out]`.
    pub weight: Vec<f32>,
    /// Bias.
    pub bias: Vec<f32>,
}

fn get<'t>(tensors: &'t BTreeMap<String, Tensor>, name: &str) -> &'t Tensor {
    tensors.get(name).unwrap_or_else(|| {
        panic!("canonical tensor `{name}` missing: the loader guarantees every plan tensor")
    })
}

/// Prepares the convolution named `name` (canonical layout) for NHWC execution.
pub fn prepare_conv(
    conv: &Conv,
    name: &str,
    tensors: &BTreeMap<String, Tensor>,
    bn_eps: f64,
) -> PreparedConv {
    let (cout, cin_g, k) = (
        conv.out_channels as usize,
        (conv.in_channels / conv.groups) as usize,
        conv.kernel as usize,
    );
    let w = &get(tensors, &format!("{name}.weight")).data; // [out][in/groups][ky][kx]
    let (scale, shift): (Vec<f64>, Vec<f64>) = if conv.batch_norm {
        let field = |f: &str| &get(tensors, &format!("{name}.bn.{f}")).data;
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
            .then(|| &get(tensors, &format!("{name}.bias")).data);
        (0..cout)
            .map(|o| (1.0, bias.map_or(0.0, |b| f64::from(b[o]))))
            .unzip()
    };
    let mut weight = vec![0f32; w.len()];
    for o in 0..cout {
        for i in 0..cin_g {
            for ky in 0..k {
                for kx in 0..k {
                    let value =
                        (f64::from(w[((o * cin_g + i) * k + ky) * k + kx]) * scale[o]) as f32;
                    let at = if conv.is_depthwise() {
                        (ky * k + kx) * cout + o
                    } else {
                        ((ky * k + kx) * cin_g + i) * cout + o
                    };
                    weight[at] = value;
                }
            }
        }
    }
    PreparedConv::new(
        (conv.in_channels as usize, cout),
        (k, conv.stride as usize),
        weight,
        shift.into_iter().map(|b| b as f32).collect(),
        conv.activation,
    )
}

/// Prepares the classifier.
pub fn prepare_linear(
    in_features: usize,
    out_features: usize,
    tensors: &BTreeMap<String, Tensor>,
) -> PreparedLinear {
    let w = &get(tensors, "classifier.weight").data; // [out][in]
    let mut weight = vec![0f32; w.len()];
    for o in 0..out_features {
        for i in 0..in_features {
            weight[i * out_features + o] = w[o * in_features + i];
        }
    }
    PreparedLinear {
        in_features,
        out_features,
        weight,
        bias: get(tensors, "classifier.bias").data.clone(),
    }
}
