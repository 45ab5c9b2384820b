//! The resolved network: every layer with its channels, kernel, stride, padding and spatial sizes.
//!
//! The [`Plan`] is the single source of truth of the architecture: accounting, the inference engine, the
//! weight loader and the training model all walk it instead of re-deriving channels or strides.

use crate::padding::AxisPad;
use crate::variant::{Activation, NetworkConfig};
use serde::Serialize;
use std::ops::Range;

/// A 2-D convolution, optionally followed by batch norm and an activation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conv {
    /// Input channels.
    pub in_channels: u32,
    /// Output channels.
    pub out_channels: u32,
    /// Square kernel size.
    pub kernel: u32,
    /// Stride on both axes.
    pub stride: u32,
    /// 1 for a dense convolution, `in_channels` for a depthwise one.
    pub groups: u32,
    /// Input height and width.
    pub input_size: u32,
    /// Output height and width.
    pub output_size: u32,
    /// Padding on each axis (top/left = `begin`, bottom/right = `end`).
    pub pad: AxisPad,
    /// Whether the convolution has a bias (only the SE convolutions do).
    pub bias: bool,
    /// Whether batch norm follows.
    pub batch_norm: bool,
    /// Activation after batch norm, if any.
    pub activation: Option<Activation>,
}

impl Conv {
    /// Whether this is a depthwise convolution.
    pub fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.in_channels
    }

    /// Shape of the weight in PyTorch order `[out, in / groups, k, k]`.
    pub fn weight_shape(&self) -> [usize; 4] {
        let k = self.kernel as usize;
        [
            self.out_channels as usize,
            (self.in_channels / self.groups) as usize,
            k,
            k,
        ]
    }
}

/// The fully connected classifier.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Linear {
    /// Input features (the head's channels).
    pub in_features: u32,
    /// Output features (the number of classes).
    pub out_features: u32,
}

/// Squeeze-excite: global mean, reduce 1x1 conv + activation, expand 1x1 conv + sigmoid, channel-wise scale.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SqueezeExcite {
    /// `mid -> reduced` with bias and the block's activation.
    pub reduce: Conv,
    /// `reduced -> mid` with bias and a sigmoid.
    pub expand: Conv,
}

/// One MBConv block.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Block {
    /// Global block index (0-based over all stages).
    pub index: usize,
    /// Stage index (0-based).
    pub stage: usize,
    /// Position inside the stage.
    pub index_in_stage: usize,
    /// Expand 1x1 convolution (absent when the expand ratio is 1).
    pub expand: Option<Conv>,
    /// Depthwise convolution.
    pub depthwise: Conv,
    /// Squeeze-excite, if the block has it.
    pub se: Option<SqueezeExcite>,
    /// Project 1x1 convolution (batch norm, no activation).
    pub project: Conv,
    /// Whether the block input is added to its output.
    pub residual: bool,
    /// Drop-path (stochastic depth) rate of this block during training.
    pub drop_path_rate: f64,
}

impl Block {
    /// Channels entering the block.
    pub fn in_channels(&self) -> u32 {
        self.expand.as_ref().unwrap_or(&self.depthwise).in_channels
    }

    /// Channels of the expanded (depthwise) tensor.
    pub fn mid_channels(&self) -> u32 {
        self.depthwise.out_channels
    }

    /// Channels leaving the block.
    pub fn out_channels(&self) -> u32 {
        self.project.out_channels
    }
}

/// One stage, as in the paper's Table 1.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stage {
    /// Stage index (0-based over the MBConv stages).
    pub index: usize,
    /// Depthwise kernel.
    pub kernel: u32,
    /// Stride of the first block.
    pub stride: u32,
    /// Expansion ratio.
    pub expand_ratio: u32,
    /// Input channels.
    pub in_channels: u32,
    /// Output channels.
    pub out_channels: u32,
    /// Number of blocks after depth scaling.
    pub repeats: u32,
    /// Input resolution.
    pub input_size: u32,
    /// Output resolution.
    pub output_size: u32,
    /// Whether the blocks have squeeze-excite.
    pub se: bool,
    /// Range of global block indices.
    pub blocks: Range<usize>,
}

/// A network resolved at one resolution.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The configuration it was resolved from.
    pub config: NetworkConfig,
    /// Stem 3x3 stride-2 convolution.
    pub stem: Conv,
    /// All MBConv blocks in order.
    pub blocks: Vec<Block>,
    /// Head 1x1 convolution.
    pub head: Conv,
    /// Classifier after global average pooling and dropout.
    pub classifier: Linear,
    /// Per-stage summary.
    pub stages: Vec<Stage>,
}

/// What a layer computes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LayerOp<'a> {
    /// A convolution (with its batch norm and activation).
    Conv(&'a Conv),
    /// The classifier.
    Linear(&'a Linear),
}

/// What part of the network a layer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The stem convolution.
    Stem,
    /// A block's expand 1x1 convolution.
    Expand,
    /// A block's depthwise convolution.
    Depthwise,
    /// A block's SE reduce convolution.
    SeReduce,
    /// A block's SE expand convolution.
    SeExpand,
    /// A block's project 1x1 convolution.
    Project,
    /// The head 1x1 convolution.
    Head,
    /// The classifier.
    Classifier,
}

/// A named layer of the plan, in execution order.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer<'a> {
    /// Canonical name: `stem`, `blocks.{i}.{expand,depthwise,se.reduce,se.expand,project}`, `head`, `classifier`.
    pub name: String,
    /// The part of the network.
    pub role: Role,
    /// The block it belongs to, for block layers.
    pub block: Option<&'a Block>,
    /// The computation.
    pub op: LayerOp<'a>,
}

impl Plan {
    /// Every layer with a weight, in execution order, under its canonical name.
    pub fn layers(&self) -> Vec<Layer<'_>> {
        let conv = |name: String, role, block, c| Layer {
            name,
            role,
            block,
            op: LayerOp::Conv(c),
        };
        let mut layers = vec![conv("stem".into(), Role::Stem, None, &self.stem)];
        for b in &self.blocks {
            let prefix = format!("blocks.{}", b.index);
            if let Some(e) = &b.expand {
                layers.push(conv(format!("{prefix}.expand"), Role::Expand, Some(b), e));
            }
            layers.push(conv(
                format!("{prefix}.depthwise"),
                Role::Depthwise,
                Some(b),
                &b.depthwise,
            ));
            if let Some(se) = &b.se {
                layers.push(conv(
                    format!("{prefix}.se.reduce"),
                    Role::SeReduce,
                    Some(b),
                    &se.reduce,
                ));
                layers.push(conv(
                    format!("{prefix}.se.expand"),
                    Role::SeExpand,
                    Some(b),
                    &se.expand,
                ));
            }
            layers.push(conv(
                format!("{prefix}.project"),
                Role::Project,
                Some(b),
                &b.project,
            ));
        }
        layers.push(conv("head".into(), Role::Head, None, &self.head));
        let classifier = LayerOp::Linear(&self.classifier);
        layers.push(Layer {
            name: "classifier".into(),
            role: Role::Classifier,
            block: None,
            op: classifier,
        });
        layers
    }

    /// Input resolution.
    pub fn resolution(&self) -> u32 {
        self.config.resolution
    }

    /// Side of the final feature map (before pooling).
    pub fn final_size(&self) -> u32 {
        self.head.output_size
    }
}
