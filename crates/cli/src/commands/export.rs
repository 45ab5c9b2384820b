//! `effnet export`: weights as a plain ONNX model (standard operators only, batch norm folded, TF "SAME"
//! padding as explicit pads), with the preprocessing and labels in its metadata.

use crate::feature_args::FeatureArgs;
use crate::model_args::{base_config, check_resolution};
use crate::output::{check_output_file, print_json};
use crate::weights_args::{fetch_weights, WeightsOptions};
use anyhow::{bail, Result};
use clap::Args;
use effnet_data::ranking::class_labels;
use effnet_onnx::{export, ExportOptions, Head, InputLayout, DEFAULT_OPSET};
use effnet_weights::random::RandomWeights;
use effnet_weights::{Layout, Provenance, TensorSource, WeightMetadata};
use serde::Serialize;
use std::path::PathBuf;

/// Arguments of `effnet export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// effnet weights (safetensors written by `convert` or `train`), or a name (hf:, torchvision:, a timm
    /// folder).
    #[arg(long, required_unless_present = "random_seed")]
    weights: Option<PathBuf>,
    /// Export seeded random weights of `--model` instead of a weights file (for benchmarks and tests).
    #[arg(long, conflicts_with = "weights")]
    random_seed: Option<u64>,
    #[command(flatten)]
    options: WeightsOptions,
    /// The ONNX file to write.
    #[arg(long)]
    out: PathBuf,
    /// Fixed input size of the graph (default: the weights' resolution).
    #[arg(long, conflicts_with = "dynamic_size")]
    resolution: Option<u32>,
    /// Symbolic height and width: any input size runs (TF "SAME" as `auto_pad=SAME_UPPER`).
    #[arg(long)]
    dynamic_size: bool,
    /// Take NHWC input (and give NHWC feature maps) instead of NCHW.
    #[arg(long)]
    nhwc: bool,
    /// ONNX opset, 13 to 24 (24 writes swish as the `Swish` operator).
    #[arg(long, default_value_t = DEFAULT_OPSET)]
    opset: i64,
    /// Output the softmax probabilities instead of the logits.
    #[arg(long, conflicts_with_all = ["logits", "features"])]
    probabilities: bool,
    /// Output the logits (the default).
    #[arg(long)]
    logits: bool,
    /// Export the multi-scale backbone: one output per feature level, `feature_{index}`.
    #[arg(long)]
    features: bool,
    #[command(flatten)]
    levels: FeatureArgs,
}

/// What `effnet export --json` prints.
#[derive(Debug, Serialize)]
struct ExportReport {
    out: PathBuf,
    external_data: Option<PathBuf>,
    model: String,
    opset: i64,
    input_size: Option<u32>,
    outputs: Vec<String>,
    operators: std::collections::BTreeMap<String, usize>,
    weight_bytes: usize,
}

/// Runs `effnet export`.
pub fn run(args: &ExportArgs, json: bool) -> Result<()> {
    check_output_file(&args.out)?;
    let head = if args.features {
        Head::Features {
            indices: args.levels.indices.clone(),
            location: args.levels.location()?,
        }
    } else if args.probabilities {
        Head::Probabilities
    } else {
        Head::Logits
    };
    let options = ExportOptions {
        opset: args.opset,
        dynamic_size: args.dynamic_size,
        layout: if args.nhwc {
            InputLayout::Nhwc
        } else {
            InputLayout::Nchw
        },
        head,
        ..ExportOptions::default()
    };
    let (exported, model, input_size) = match (&args.weights, args.random_seed) {
        (Some(path), _) => {
            let fetched = fetch_weights(path)?;
            let weights = args.options.load_named(&fetched)?;
            // A bare foreign file says nothing of its preprocessing or labels; a name does.
            if weights.layout != Layout::Effnet && fetched.model.is_none() {
                bail!(
                    "{}: not effnet weights (layout {}); convert them first: effnet convert {} weights.safetensors",
                    path.display(),
                    weights.layout.name(),
                    path.display()
                );
            }
            let metadata = WeightMetadata {
                labels: weights.labels,
                config: weights.config,
                provenance: weights.provenance,
            };
            export_network(args, metadata, &options, |_| weights.tensors)?
        }
        (None, seed) => {
            let mut config = base_config(args.options.model.as_deref())?;
            let (padding, bn_eps) = args.options.conventions()?;
            config.padding = padding.unwrap_or(config.padding);
            config.bn_eps = bn_eps.unwrap_or(config.bn_eps);
            let seed = seed.expect("clap requires --weights or --random-seed");
            let metadata = WeightMetadata {
                labels: Vec::new(),
                config,
                provenance: Provenance {
                    source: format!("random weights, seed {seed}"),
                    license: "none (random)".into(),
                    source_sha256: String::new(),
                },
            };
            export_network(args, metadata, &options, |plan| {
                RandomWeights::new(plan, seed)
            })?
        }
    };
    let report = ExportReport {
        out: args.out.clone(),
        external_data: None,
        model,
        opset: args.opset,
        input_size,
        outputs: exported.output_names(),
        operators: exported.operator_counts(),
        weight_bytes: exported.weight_bytes(),
    };
    let external_data = exported.write(&args.out)?;
    let report = ExportReport {
        external_data,
        ..report
    };
    if json {
        print_json(&report)
    } else {
        let size = report
            .input_size
            .map_or("dynamic size".to_string(), |s| format!("{s} x {s}"));
        println!(
            "wrote {} ({}, opset {}, {size}, outputs {})",
            report.out.display(),
            report.model,
            report.opset,
            report.outputs.join(", ")
        );
        if let Some(data) = &report.external_data {
            println!("weights in {}", data.display());
        }
        Ok(())
    }
}

/// Exports the network `metadata` describes (at `--resolution` when given), its tensors from `tensors` of
/// the resolved plan, the class labels completed; returns the export, the network's name and the fixed
/// input size (`None` when symbolic).
fn export_network<S: TensorSource>(
    args: &ExportArgs,
    mut metadata: WeightMetadata,
    options: &ExportOptions,
    tensors: impl FnOnce(&effnet_arch::Plan) -> S,
) -> Result<(effnet_onnx::Exported, String, Option<u32>)> {
    if let Some(r) = args.resolution {
        let config = &mut metadata.config;
        config.resolution = check_resolution(r)?;
        config.preprocessing = config.preprocessing.at_resolution(r);
    }
    let plan = effnet_arch::resolve(&metadata.config)?;
    metadata.labels = class_labels(&metadata.labels, metadata.config.num_classes as usize);
    let pairs = sorted(metadata.to_map());
    let exported = export(&plan, tensors(&plan), &pairs, options)?;
    let input_size = (!options.dynamic_size).then_some(plan.resolution());
    Ok((exported, plan.config.name.clone(), input_size))
}

/// A metadata map as sorted pairs, so the same export writes the same bytes.
fn sorted(map: std::collections::HashMap<String, String>) -> Vec<(String, String)> {
    let mut pairs: Vec<_> = map.into_iter().collect();
    pairs.sort();
    pairs
}
