//! Layer weights prepared for NHWC execution: batch norm folded into the convolution (in f64, rounded once),
//! kernels reordered so the channel loop is innermost.

use crate::buffer::{aligned, Buffer};
use crate::panels::Panels;
use effnet_arch::plan::Conv;
use effnet_arch::variant::Activation;
use effnet_weights::fold::{fold_conv, take_required};
use effnet_weights::TensorSource;
use std::borrow::Cow;

/// How a convolution's weights are kept: only in the form its kernels read, so the engine holds each weight
/// once.
#[derive(Debug, Clone)]
enum Stored {
    /// Row-major values (depthwise `[ky][kx][channel]`, vector `[in][out]`).
    Rows(Buffer),
    /// A dense convolution's `[patch][out]` matrix packed for [`crate::panels`].
    Panels(Panels),
}

/// A convolution with folded batch norm, ready to run. Build a dense convolution with [`PreparedConv::new`]
/// (its weights are packed for the GEMM kernel), a depthwise one with [`PreparedConv::depthwise`] and one
/// over a pooled vector (squeeze-excite's) with [`PreparedConv::vector`]; the fields are for reading.
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
    /// Per-output bias (the folded BN shift, or the conv's own bias).
    pub bias: Vec<f32>,
    /// Activation after the bias.
    pub activation: Option<Activation>,
    /// The weights, in their kernels' form.
    stored: Stored,
}

impl PreparedConv {
    /// A dense convolution over feature maps from its `[ky][kx][in][out]` weights, packed into GEMM panels.
    pub fn new(
        (in_channels, out_channels): (usize, usize),
        (kernel, stride): (usize, usize),
        weight: Vec<f32>,
        bias: Vec<f32>,
        activation: Option<Activation>,
    ) -> Self {
        let patch = kernel * kernel * in_channels;
        assert_eq!(
            weight.len(),
            patch * out_channels,
            "[ky][kx][in][out] weights"
        );
        let stored = Stored::Panels(Panels::pack(&weight, patch, out_channels));
        Self::with(
            (in_channels, out_channels),
            (kernel, stride),
            bias,
            activation,
            stored,
        )
    }

    /// A depthwise convolution over feature maps from its `[ky][kx][channel]` weights.
    pub fn depthwise(
        channels: usize,
        (kernel, stride): (usize, usize),
        weight: Vec<f32>,
        bias: Vec<f32>,
        activation: Option<Activation>,
    ) -> Self {
        assert_eq!(
            weight.len(),
            kernel * kernel * channels,
            "[ky][kx][channel]"
        );
        let stored = Stored::Rows(aligned(&weight));
        Self::with(
            (channels, channels),
            (kernel, stride),
            bias,
            activation,
            stored,
        )
    }

    /// A 1x1 convolution applied to a vector (squeeze-excite's reduce and expand), weights `[in][out]`.
    pub fn vector(
        channels: (usize, usize),
        weight: Vec<f32>,
        bias: Vec<f32>,
        activation: Option<Activation>,
    ) -> Self {
        assert_eq!(weight.len(), channels.0 * channels.1, "[in][out] weights");
        Self::with(
            channels,
            (1, 1),
            bias,
            activation,
            Stored::Rows(aligned(&weight)),
        )
    }

    /// The convolution of `stored` weights.
    fn with(
        (in_channels, out_channels): (usize, usize),
        (kernel, stride): (usize, usize),
        bias: Vec<f32>,
        activation: Option<Activation>,
        stored: Stored,
    ) -> Self {
        Self {
            in_channels,
            out_channels,
            kernel,
            stride,
            bias,
            activation,
            stored,
        }
    }

    /// The weights in row-major order (layouts as on the constructors): borrowed where they are kept
    /// so, unpacked into a copy for a dense convolution. The kernels read the stored form; this is for
    /// references and inspection.
    pub fn weight(&self) -> Cow<'_, [f32]> {
        match &self.stored {
            Stored::Rows(rows) => Cow::Borrowed(rows),
            Stored::Panels(panels) => Cow::Owned(panels.unpack()),
        }
    }

    /// Number of weights.
    pub fn weight_count(&self) -> usize {
        match &self.stored {
            Stored::Rows(rows) => rows.len(),
            Stored::Panels(panels) => panels.weight_count(),
        }
    }

    /// The row-major weights of a depthwise or vector convolution.
    pub(crate) fn rows(&self) -> &[f32] {
        match &self.stored {
            Stored::Rows(rows) => rows,
            Stored::Panels(_) => unreachable!("a dense convolution's weights are packed"),
        }
    }

    /// The packed weights of a dense convolution.
    pub(crate) fn panels(&self) -> &Panels {
        match &self.stored {
            Stored::Panels(panels) => panels,
            Stored::Rows(_) => unreachable!("the GEMM kernels run only dense convolutions"),
        }
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

/// The folded weights (`[ky][kx][in][out]`, or `[ky][kx][channel]` when depthwise) and bias of the
/// convolution named `name` (canonical layout), its tensors taken from `tensors`.
fn fold(
    conv: &Conv,
    name: &str,
    tensors: &mut impl TensorSource,
    bn_eps: f64,
) -> (Vec<f32>, Vec<f32>) {
    let (cout, cin_g, k) = (
        conv.out_channels as usize,
        (conv.in_channels / conv.groups) as usize,
        conv.kernel as usize,
    );
    let folded = fold_conv(conv, name, tensors, bn_eps); // [out][in/groups][ky][kx]
    let mut weight = vec![0f32; folded.weight.len()];
    for o in 0..cout {
        for i in 0..cin_g {
            for ky in 0..k {
                for kx in 0..k {
                    let at = if conv.is_depthwise() {
                        (ky * k + kx) * cout + o
                    } else {
                        ((ky * k + kx) * cin_g + i) * cout + o
                    };
                    weight[at] = folded.weight[((o * cin_g + i) * k + ky) * k + kx];
                }
            }
        }
    }
    (weight, folded.bias)
}

/// What a convolution is applied to, which decides the form its weights are kept in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppliedTo {
    /// Feature maps: dense weights are packed for the GEMM kernel, depthwise ones kept as rows.
    Maps,
    /// A pooled vector (squeeze-excite's reduce and expand): rows.
    Vector,
}

/// Prepares the convolution named `name` (canonical layout) for NHWC execution, taking its tensors from
/// `tensors`.
pub fn prepare_conv(
    conv: &Conv,
    name: &str,
    tensors: &mut impl TensorSource,
    bn_eps: f64,
    applied_to: AppliedTo,
) -> PreparedConv {
    let (weight, bias) = fold(conv, name, tensors, bn_eps);
    let geometry = (conv.kernel as usize, conv.stride as usize);
    let channels = (conv.in_channels as usize, conv.out_channels as usize);
    match applied_to {
        AppliedTo::Vector => PreparedConv::vector(channels, weight, bias, conv.activation),
        AppliedTo::Maps if conv.is_depthwise() => {
            PreparedConv::depthwise(channels.1, geometry, weight, bias, conv.activation)
        }
        AppliedTo::Maps => PreparedConv::new(channels, geometry, weight, bias, conv.activation),
    }
}

/// Prepares the classifier, taking its tensors from `tensors`.
pub fn prepare_linear(
    in_features: usize,
    out_features: usize,
    tensors: &mut impl TensorSource,
) -> PreparedLinear {
    let w = take_required(tensors, "classifier.weight").data; // [out][in]
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
        bias: take_required(tensors, "classifier.bias").data,
    }
}
