//! `effnet convert`: any supported weights file into effnet's canonical safetensors, with metadata.

use crate::output::print_json;
use crate::weights_args::{fetch_weights, WeightsOptions};
use anyhow::{Context, Result};
use clap::Args;
use effnet_weights::load::sha256_of_weights;
use effnet_weights::safetensors_io::write_safetensors;
use effnet_weights::{Provenance, WeightMetadata};
use std::path::PathBuf;

/// Arguments of `effnet convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The weights to convert: a file, a timm folder, `hf:ORG/NAME[@REVISION]` or `torchvision:NAME`.
    input: PathBuf,
    /// The safetensors file to write.
    output: PathBuf,
    #[command(flatten)]
    options: WeightsOptions,
    /// Class labels, one per line (default: keep the file's, or ImageNet's for 1000 classes).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Normalisation the weights expect, stored in the metadata: imagenet, lite or inception/advprop.
    #[arg(long)]
    normalization: Option<String>,
    /// Where the weights come from (stored in the metadata).
    #[arg(long)]
    source: Option<String>,
    /// The weights' licence (stored in the metadata).
    #[arg(long)]
    license: Option<String>,
}

/// Runs `effnet convert`.
pub fn run(args: &ConvertArgs, json: bool) -> Result<()> {
    let fetched = fetch_weights(&args.input)?;
    let weights = args.options.load_named(&fetched)?;
    let classes = weights.config.num_classes as usize;
    let labels = match &args.labels {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("{}: cannot read labels", path.display()))?;
            let labels: Vec<String> = text.lines().map(str::to_owned).collect();
            anyhow::ensure!(
                labels.len() == classes,
                "{}: {} labels for {classes} classes",
                path.display(),
                labels.len()
            );
            labels
        }
        None => effnet_data::ranking::class_labels(&weights.labels, classes),
    };
    let provenance = Provenance {
        source: args.source.clone().unwrap_or_else(|| {
            let previous = &weights.provenance.source;
            if previous.is_empty() {
                args.input.display().to_string()
            } else {
                previous.clone()
            }
        }),
        license: args
            .license
            .clone()
            .unwrap_or_else(|| weights.provenance.license.clone()),
        source_sha256: sha256_of_weights(&fetched.file)?,
    };
    let metadata = WeightMetadata {
        config: weights.config.clone(),
        labels,
        provenance,
    };
    write_safetensors(&args.output, &weights.tensors, metadata.to_map())?;
    let report = serde_json::json!({
        "output": args.output,
        "model": weights.config.name,
        "layout": weights.layout.name(),
        "tensors": weights.tensors.len(),
        "padding": weights.config.padding.name(),
        "bn_eps": weights.config.bn_eps,
        "num_classes": classes,
        "source_sha256": metadata.provenance.source_sha256,
    });
    if json {
        return print_json(&report);
    }
    println!(
        "wrote {}: {} ({} layout, {} tensors, {} padding, BN eps {}), source sha256 {}",
        args.output.display(),
        weights.config.name,
        weights.layout.name(),
        weights.tensors.len(),
        weights.config.padding.name(),
        weights.config.bn_eps,
        metadata.provenance.source_sha256
    );
    Ok(())
}
