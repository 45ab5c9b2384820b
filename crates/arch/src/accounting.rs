//! Exact accounting from the resolved [`Plan`]: parameters, multiply-adds (the paper's "FLOPS"), weight bytes
//! and activation memory, per layer and in total. Nothing here uses the `d * w^2 * r^2` formula.

use crate::memory::{activation_memory, F32_BYTES, RUNTIME_BYTES};
use crate::plan::{Conv, LayerOp, Plan};
use serde::Serialize;

/// The cost of one layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerCost {
    /// Canonical layer name.
    pub name: String,
    /// `conv`, `depthwise`, `se` or `linear`.
    pub kind: &'static str,
    /// Input channels or features.
    pub in_channels: u32,
    /// Output channels or features.
    pub out_channels: u32,
    /// Kernel size (1 for the classifier).
    pub kernel: u32,
    /// Stride (1 for the classifier).
    pub stride: u32,
    /// Input side.
    pub input_size: u32,
    /// Output side.
    pub output_size: u32,
    /// Trainable parameters (weights, biases, BN scale and shift).
    pub params: u64,
    /// Multiply-accumulates of one image.
    pub macs: u64,
    /// Elements of the output (the activation count fvcore and timm report).
    pub output_elements: u64,
    /// Bytes live while this layer runs in an f32 inference of one image.
    pub inference_live_bytes: u64,
    /// Bytes this layer keeps for the backward pass, per image.
    pub training_saved_bytes: u64,
}

/// Totals of a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Accounting {
    /// Trainable parameters.
    pub params: u64,
    /// Multiply-accumulates of one image (conv + FC).
    pub macs: u64,
    /// Bytes of the f32 weights as stored, including BN running statistics.
    pub weight_bytes: u64,
    /// Peak activation bytes of one f32 inference.
    pub inference_activation_bytes: u64,
    /// Activation bytes kept for backward by one training image (f32).
    pub training_activation_bytes: u64,
    /// Sum of conv and linear output elements (timm's `infer_macts`).
    pub activation_count: u64,
    /// Per-layer costs in execution order.
    pub layers: Vec<LayerCost>,
}

impl Accounting {
    /// Bytes needed to run one f32 inference: the weights plus the peak activations.
    pub fn inference_memory_bytes(&self) -> u64 {
        self.inference_batch_memory_bytes(1)
    }

    /// Bytes needed to run an f32 inference of `batch` images: the weights plus the peak activations of
    /// each image.
    pub fn inference_batch_memory_bytes(&self, batch: u64) -> u64 {
        self.weight_bytes + batch * self.inference_activation_bytes
    }

    /// Bytes of an inference process: [`Accounting::inference_memory_bytes`] plus the runtime's fixed
    /// [`RUNTIME_BYTES`]. This is what `--max-memory` bounds.
    pub fn process_memory_bytes(&self) -> u64 {
        self.inference_memory_bytes() + RUNTIME_BYTES
    }

    /// Bytes a training step of `batch` images needs: the activations each image keeps for backward,
    /// `parameter_copies` f32 copies of the parameters (see [`crate::memory::RECIPE_PARAMETER_COPIES`]), the batch-norm
    /// statistics and the runtime's fixed [`RUNTIME_BYTES`].
    pub fn training_memory_bytes(&self, batch: u64, parameter_copies: u64) -> u64 {
        let statistics = self.weight_bytes - self.params * F32_BYTES;
        batch * self.training_activation_bytes
            + parameter_copies * self.params * F32_BYTES
            + statistics
            + RUNTIME_BYTES
    }
}

fn conv_cost(c: &Conv) -> (u64, u64, u64) {
    let (cin, cout, k) = (
        u64::from(c.in_channels),
        u64::from(c.out_channels),
        u64::from(c.kernel),
    );
    let per_output = cin / u64::from(c.groups) * k * k;
    let out_pixels = u64::from(c.output_size) * u64::from(c.output_size);
    let params = cout * per_output + u64::from(c.bias) * cout + u64::from(c.batch_norm) * 2 * cout;
    let buffers = u64::from(c.batch_norm) * 2 * cout;
    (params, out_pixels * cout * per_output, buffers)
}

/// Accounts every layer of a plan.
pub fn account(plan: &Plan) -> Accounting {
    let memory = activation_memory(plan);
    let mut layers = Vec::new();
    let mut buffers = 0;
    for (i, layer) in plan.layers().into_iter().enumerate() {
        let (kind, cin, cout, kernel, stride, input_size, output_size, params, macs) =
            match layer.op {
                LayerOp::Conv(c) => {
                    let (params, macs, bn_buffers) = conv_cost(c);
                    buffers += bn_buffers;
                    let kind = if c.is_depthwise() {
                        "depthwise"
                    } else if c.bias {
                        "se"
                    } else {
                        "conv"
                    };
                    (
                        kind,
                        c.in_channels,
                        c.out_channels,
                        c.kernel,
                        c.stride,
                        c.input_size,
                        c.output_size,
                        params,
                        macs,
                    )
                }
                LayerOp::Linear(l) => {
                    let (i, o) = (u64::from(l.in_features), u64::from(l.out_features));
                    (
                        "linear",
                        l.in_features,
                        l.out_features,
                        1,
                        1,
                        1,
                        1,
                        i * o + o,
                        i * o,
                    )
                }
            };
        layers.push(LayerCost {
            name: layer.name,
            kind,
            in_channels: cin,
            out_channels: cout,
            kernel,
            stride,
            input_size,
            output_size,
            params,
            macs,
            output_elements: u64::from(cout) * u64::from(output_size) * u64::from(output_size),
            inference_live_bytes: memory.live_bytes[i],
            training_saved_bytes: memory.saved_bytes[i],
        });
    }
    let params: u64 = layers.iter().map(|l| l.params).sum();
    Accounting {
        params,
        macs: layers.iter().map(|l| l.macs).sum(),
        weight_bytes: (params + buffers) * F32_BYTES,
        inference_activation_bytes: memory.inference_peak(),
        training_activation_bytes: memory.training_total(),
        activation_count: layers.iter().map(|l| l.output_elements).sum(),
        layers,
    }
}
