//! A resolved network summarised for people (tables) and programs (JSON): the paper's Table 1 view plus totals.

use crate::output::{bytes, decimal, giga, table, thousands};
use effnet_arch::{account, resolve, Accounting, LayerCost, NetworkConfig, Plan};
use serde::Serialize;

/// One row of the paper's Table 1.
#[derive(Debug, Clone, Serialize)]
pub struct StageRow {
    /// Stage number as in the paper (1 = stem, last = head).
    pub stage: usize,
    /// Operator (`Conv3x3`, `MBConv6, k5x5`, ...).
    pub operator: String,
    /// Input resolution of the stage.
    pub resolution: u32,
    /// Output channels.
    pub channels: u32,
    /// Number of layers (blocks).
    pub layers: u32,
    /// Stride of the first layer.
    pub stride: u32,
}

/// Everything `effnet info` reports about a network.
#[derive(Debug, Clone, Serialize)]
pub struct NetworkSummary {
    /// Network name.
    pub name: String,
    /// Width multiplier.
    pub width: f64,
    /// Depth multiplier.
    pub depth: f64,
    /// Input resolution.
    pub resolution: u32,
    /// Dropout before the classifier.
    pub dropout: f64,
    /// Padding convention.
    pub padding: &'static str,
    /// Activation.
    pub activation: &'static str,
    /// Number of MBConv blocks.
    pub blocks: usize,
    /// Trainable parameters.
    pub params: u64,
    /// Multiply-adds per image.
    pub macs: u64,
    /// Bytes of f32 weights incl. BN statistics.
    pub weight_bytes: u64,
    /// Peak activation bytes of one f32 inference.
    pub inference_activation_bytes: u64,
    /// Weights plus peak activations.
    pub inference_memory_bytes: u64,
    /// An inference process: weights, peak activations and the runtime's fixed bytes.
    pub process_memory_bytes: u64,
    /// Activation bytes kept for backward per training image.
    pub training_activation_bytes: u64,
    /// Conv and linear output elements.
    pub activation_count: u64,
    /// Evaluation preprocessing.
    pub preprocessing: effnet_arch::preprocess::Preprocessing,
    /// Paper Table 1 rows.
    pub stages: Vec<StageRow>,
    /// Every layer, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<Vec<LayerCost>>,
}

fn stage_rows(plan: &Plan) -> Vec<StageRow> {
    let mut rows = vec![StageRow {
        stage: 1,
        operator: "Conv3x3".into(),
        resolution: plan.stem.input_size,
        channels: plan.stem.out_channels,
        layers: 1,
        stride: plan.stem.stride,
    }];
    for s in &plan.stages {
        let se = if s.se { ", SE" } else { "" };
        rows.push(StageRow {
            stage: s.index + 2,
            operator: format!("MBConv{}, k{}x{}{se}", s.expand_ratio, s.kernel, s.kernel),
            resolution: s.input_size,
            channels: s.out_channels,
            layers: s.repeats,
            stride: s.stride,
        });
    }
    rows.push(StageRow {
        stage: plan.stages.len() + 2,
        operator: "Conv1x1 & Pooling & FC".into(),
        resolution: plan.head.input_size,
        channels: plan.head.out_channels,
        layers: 1,
        stride: 1,
    });
    rows
}

impl NetworkSummary {
    /// Resolves and summarises a configuration.
    pub fn of(config: &NetworkConfig, with_layers: bool) -> anyhow::Result<Self> {
        let plan = resolve(config)?;
        Ok(Self::from_plan(&plan, account(&plan), with_layers))
    }

    /// Summarises an already resolved plan.
    pub fn from_plan(plan: &Plan, a: Accounting, with_layers: bool) -> Self {
        let c = &plan.config;
        Self {
            name: c.name.clone(),
            width: c.width,
            depth: c.depth,
            resolution: c.resolution,
            dropout: c.dropout,
            padding: c.padding.name(),
            activation: c.base.activation.name(),
            blocks: plan.blocks.len(),
            params: a.params,
            macs: a.macs,
            weight_bytes: a.weight_bytes,
            inference_activation_bytes: a.inference_activation_bytes,
            inference_memory_bytes: a.inference_memory_bytes(),
            process_memory_bytes: a.process_memory_bytes(),
            training_activation_bytes: a.training_activation_bytes,
            activation_count: a.activation_count,
            preprocessing: c.preprocessing,
            stages: stage_rows(plan),
            layers: with_layers.then_some(a.layers),
        }
    }

    /// Prints the Table 1 view, the optional layer list and the totals.
    pub fn print(&self) {
        println!(
            "{}: width {}, depth {}, resolution {}, dropout {}, {} blocks, {}, {} padding",
            self.name,
            decimal(self.width),
            decimal(self.depth),
            self.resolution,
            self.dropout,
            self.blocks,
            self.activation,
            self.padding
        );
        let mut t = table(&["stage", "operator", "resolution", "channels", "layers"]);
        for r in &self.stages {
            t.add_row(vec![
                r.stage.to_string(),
                r.operator.clone(),
                format!("{0}x{0}", r.resolution),
                r.channels.to_string(),
                r.layers.to_string(),
            ]);
        }
        println!("{t}");
        if let Some(layers) = &self.layers {
            let mut t = table(&[
                "layer",
                "kind",
                "in -> out",
                "k/s",
                "size",
                "params",
                "MACs",
                "live",
                "saved",
            ]);
            for l in layers {
                t.add_row(vec![
                    l.name.clone(),
                    l.kind.to_string(),
                    format!("{} -> {}", l.in_channels, l.out_channels),
                    format!("{}/{}", l.kernel, l.stride),
                    format!("{} -> {}", l.input_size, l.output_size),
                    thousands(l.params),
                    thousands(l.macs),
                    bytes(l.inference_live_bytes),
                    bytes(l.training_saved_bytes),
                ]);
            }
            println!("{t}");
        }
        println!(
            "params {} | MACs {} | weights {} | inference activations {} (peak) | training activations {} per image",
            thousands(self.params),
            giga(self.macs),
            bytes(self.weight_bytes),
            bytes(self.inference_activation_bytes),
            bytes(self.training_activation_bytes)
        );
        println!(
            "inference memory {} = f32 weights (with BN statistics) + peak activations of one image; a running effnet adds its runtime: {} in all",
            bytes(self.inference_memory_bytes),
            bytes(self.process_memory_bytes)
        );
    }
}
