//! ONNX export of any network effnet runs: a plain graph of standard operators (opset 13 and up) with batch
//! norm folded into the convolutions, TF "SAME" padding as explicit pads at a fixed size (or `SAME_UPPER` at
//! a symbolic one), a symbolic batch, and the preprocessing the weights expect in the model's metadata.
//!
//! The protobuf is encoded by prost from the message structs in [`proto`]; weights above
//! [`ExportOptions::external_data_above`] bytes go to a `.data` file beside the model, as ONNX's external
//! data (a single protobuf message cannot exceed 2 GiB).

mod graph;
pub mod proto;

use effnet_arch::features::{select_levels, FeatureLevel, FeatureLocation};
use effnet_arch::Plan;
use effnet_weights::atomic::{write_atomically, write_atomically_with};
use effnet_weights::TensorSource;
use graph::{value_info, Builder};
use prost::Message;
use proto::{
    GraphProto, ModelProto, OperatorSetIdProto, StringStringEntryProto, DATA_LOCATION_EXTERNAL,
};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The opset written unless asked otherwise: what most deployed runtimes accept.
pub const DEFAULT_OPSET: i64 = 17;
/// The oldest opset written (the first with today's `Clip`, `Softmax` and `Gemm` semantics).
pub const MIN_OPSET: i64 = 13;
/// The newest opset written (the newest ONNX Runtime 1.32 runs every operator of).
pub const MAX_OPSET: i64 = 24;
/// The first opset with a `Swish` operator; below it swish is `Sigmoid` + `Mul`.
pub const SWISH_OPSET: i64 = 24;
/// Weights above this many bytes go to an external data file by default. A protobuf message cannot exceed
/// 2 GiB, and some readers fail well below that; 1 GiB keeps every B-series model in one file and puts L2's
/// 1.9 GB of weights beside it.
pub const EXTERNAL_DATA_ABOVE: usize = 1 << 30;

/// An error of the export.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// The options cannot be exported.
    #[error("{0}")]
    BadOptions(String),
    /// A file could not be written.
    #[error("{path}: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Result of the export.
pub type Result<T> = std::result::Result<T, OnnxError>;

/// The layout of the graph's input (and of feature outputs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InputLayout {
    /// `[batch, 3, height, width]`, the ONNX convention.
    #[default]
    Nchw,
    /// `[batch, height, width, 3]`; feature outputs are NHWC too.
    Nhwc,
}

/// What the graph outputs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Head {
    /// `logits`, `[batch, classes]`.
    #[default]
    Logits,
    /// `probabilities`: the softmax of the logits.
    Probabilities,
    /// One output per feature level, `feature_{index}` (the backbone without head and classifier).
    Features {
        /// Level indices, as in the plan's [`Plan::feature_levels`] (all of them when empty).
        indices: Vec<usize>,
        /// Where in each level's last block the map is taken.
        location: FeatureLocation,
    },
}

/// How to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// Opset version, [`MIN_OPSET`]..=[`MAX_OPSET`].
    pub opset: i64,
    /// Symbolic height and width (otherwise fixed to the plan's resolution).
    pub dynamic_size: bool,
    /// Input layout.
    pub layout: InputLayout,
    /// What the graph outputs.
    pub head: Head,
    /// Weights larger than this (in bytes, all together) are written to an external data file.
    pub external_data_above: usize,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            opset: DEFAULT_OPSET,
            dynamic_size: false,
            layout: InputLayout::Nchw,
            head: Head::Logits,
            external_data_above: EXTERNAL_DATA_ABOVE,
        }
    }
}

/// The ONNX IR version that goes with an opset (onnx's `VERSION_TABLE`).
fn ir_version(opset: i64) -> i64 {
    match opset {
        ..=14 => 7,
        15..=18 => 8,
        19..=20 => 9,
        21..=22 => 10,
        23 => 11,
        _ => 12,
    }
}

/// An exported model, ready to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct Exported {
    /// The model, weights inside.
    pub model: ModelProto,
    /// The feature levels of the outputs (empty for a classifier).
    pub feature_levels: Vec<FeatureLevel>,
    external_data_above: usize,
}

/// Exports `plan` with canonical-layout weights taken from `tensors` (batch norm folded with the plan's
/// epsilon). `metadata` goes into the model's `metadata_props` as it is, with the export's own keys
/// (`input_name`, `input_layout`, `input_size`, `output`, `feature_info`) added.
pub fn export(
    plan: &Plan,
    mut tensors: impl TensorSource,
    metadata: &[(String, String)],
    options: &ExportOptions,
) -> Result<Exported> {
    if !(MIN_OPSET..=MAX_OPSET).contains(&options.opset) {
        return Err(OnnxError::BadOptions(format!(
            "opset {} is not supported: choose {MIN_OPSET} to {MAX_OPSET}",
            options.opset
        )));
    }
    let feature_levels = match &options.head {
        Head::Features { indices, location } => {
            select_levels(&plan.feature_levels(*location), indices)
                .map_err(OnnxError::BadOptions)?
        }
        _ => Vec::new(),
    };
    let taps: Vec<_> = feature_levels.iter().map(|l| l.tap).collect();
    let mut builder = Builder::new(plan, &mut tensors, options);
    let input = builder.input_as_nchw("input");
    let values = builder.network(&input, &taps);
    let size = |axis: &str| {
        if options.dynamic_size {
            Err(axis.to_string())
        } else {
            Ok(i64::from(plan.resolution()))
        }
    };
    let batch = || Err("batch".to_string());
    let input_dims = match options.layout {
        InputLayout::Nchw => [batch(), Ok(3), size("height"), size("width")],
        InputLayout::Nhwc => [batch(), size("height"), size("width"), Ok(3)],
    };
    let outputs = if taps.is_empty() {
        let classes = Ok(i64::from(plan.classifier.out_features));
        vec![value_info(&values[0], &[batch(), classes])]
    } else {
        values
            .iter()
            .zip(&feature_levels)
            .map(|(value, level)| {
                let name = format!("feature_{}", level.index);
                builder.output_as(value, &name);
                let side = |axis: &str| {
                    if options.dynamic_size {
                        Err(format!("{name}_{axis}"))
                    } else {
                        Ok(i64::from(level.size))
                    }
                };
                let channels = Ok(i64::from(level.num_chs));
                let dims = match options.layout {
                    InputLayout::Nchw => [batch(), channels, side("height"), side("width")],
                    InputLayout::Nhwc => [batch(), side("height"), side("width"), channels],
                };
                value_info(&name, &dims)
            })
            .collect()
    };
    let (nodes, initializers) = (builder.nodes, builder.initializers);
    let graph = GraphProto {
        node: nodes,
        name: plan.config.name.clone(),
        initializer: initializers,
        input: vec![value_info("input", &input_dims)],
        output: outputs,
    };
    let mut props: Vec<(String, String)> = metadata.to_vec();
    props.sort();
    let layout = match options.layout {
        InputLayout::Nchw => "nchw",
        InputLayout::Nhwc => "nhwc",
    };
    let output = match options.head {
        Head::Logits => "logits",
        Head::Probabilities => "probabilities",
        Head::Features { .. } => "features",
    };
    let input_size = if options.dynamic_size {
        "dynamic".to_string()
    } else {
        plan.resolution().to_string()
    };
    props.extend(
        [
            ("input_name", "input".to_string()),
            ("input_layout", layout.to_string()),
            ("input_size", input_size),
            ("output", output.to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    if !feature_levels.is_empty() {
        let info = serde_json::to_string(&feature_levels).expect("levels serialise");
        props.push(("feature_info".into(), info));
    }
    let model = ModelProto {
        ir_version: ir_version(options.opset),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: options.opset,
        }],
        producer_name: "effnet".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: format!(
            "EfficientNet {}: input `input`, float32 {}, already normalised (see the metadata's mean, std, \
             crop_pct, interpolation and resolution)",
            plan.config.name,
            layout.to_uppercase()
        ),
        graph: Some(graph),
        metadata_props: props
            .into_iter()
            .map(|(key, value)| StringStringEntryProto { key, value })
            .collect(),
    };
    Ok(Exported {
        model,
        feature_levels,
        external_data_above: options.external_data_above,
    })
}

impl Exported {
    /// Total bytes of the weights.
    pub fn weight_bytes(&self) -> usize {
        self.graph()
            .initializer
            .iter()
            .map(|t| t.raw_data.len())
            .sum()
    }

    fn graph(&self) -> &GraphProto {
        self.model
            .graph
            .as_ref()
            .expect("an exported model has a graph")
    }

    /// The names of the graph's outputs.
    pub fn output_names(&self) -> Vec<String> {
        self.graph().output.iter().map(|o| o.name.clone()).collect()
    }

    /// Number of nodes of the graph, by operator.
    pub fn operator_counts(&self) -> std::collections::BTreeMap<String, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for node in &self.graph().node {
            *counts.entry(node.op_type.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// Writes the model to `path`, atomically; with the weights in `PATH.data` beside it when they exceed
    /// the export's external-data threshold. Returns the data file's path when one was written.
    pub fn write(mut self, path: &Path) -> Result<Option<PathBuf>> {
        let failed = |p: &Path, e: &dyn std::fmt::Display| OnnxError::Write {
            path: p.to_path_buf(),
            message: e.to_string(),
        };
        let external = self.weight_bytes() > self.external_data_above;
        let data_path = external.then(|| {
            let mut name = path.file_name().unwrap_or_default().to_os_string();
            name.push(".data");
            path.with_file_name(name)
        });
        if let Some(data_path) = &data_path {
            let location = data_path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let graph = self.model.graph.as_mut().expect("a graph");
            // Each tensor's bytes are streamed to the data file and freed, never gathered in one buffer.
            write_atomically_with(data_path, |tmp| -> std::io::Result<()> {
                let mut file = std::io::BufWriter::new(std::fs::File::create(tmp)?);
                let mut offset = 0usize;
                for tensor in &mut graph.initializer {
                    let bytes = std::mem::take(&mut tensor.raw_data);
                    let entry = |key: &str, value: String| StringStringEntryProto {
                        key: key.into(),
                        value,
                    };
                    tensor.external_data = vec![
                        entry("location", location.clone()),
                        entry("offset", offset.to_string()),
                        entry("length", bytes.len().to_string()),
                    ];
                    tensor.data_location = DATA_LOCATION_EXTERNAL;
                    file.write_all(&bytes)?;
                    offset += bytes.len();
                }
                file.into_inner().map_err(|e| e.into_error())?.sync_all()
            })
            .map_err(|e| failed(data_path, &e))?;
        }
        write_atomically(path, &self.model.encode_to_vec()).map_err(|e| failed(path, &e))?;
        Ok(data_path)
    }

    /// The model's protobuf bytes, weights inside.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.model.encode_to_vec()
    }
}
