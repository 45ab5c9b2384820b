//! `effnet info`: the architecture of one network and its exact costs.

use crate::feature_args::FeatureArgs;
use crate::model_args::ModelArgs;
use crate::output::{print_json, table};
use crate::summary::NetworkSummary;
use anyhow::Result;
use clap::Args;
use effnet_engine::isa;
use serde::Serialize;

/// Arguments of `effnet info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// List every layer with its shapes and costs.
    #[arg(long)]
    layers: bool,
    /// Print the multi-scale feature levels (timm's `feature_info`) instead.
    #[arg(long)]
    features: bool,
    #[command(flatten)]
    levels: FeatureArgs,
}

/// What `effnet info --json` prints: the network's summary and the kernels inference runs here.
#[derive(Debug, Serialize)]
struct InfoReport {
    #[serde(flatten)]
    summary: NetworkSummary,
    /// The instruction set of the engine's kernels on this machine (`avx512`, `avx2`, `neon`,
    /// `portable`).
    isa: &'static str,
}

/// Prints the feature levels of the network: what a detector or segmenter needs to wire the backbone.
fn print_features(args: &InfoArgs, json: bool) -> Result<()> {
    let plan = effnet_arch::resolve(&args.model.config()?)?;
    let levels = args
        .levels
        .select(&plan.feature_levels(args.levels.location()?))?;
    if json {
        return print_json(&levels);
    }
    let mut table = table(&[
        "level",
        "stage",
        "reduction",
        "channels",
        "size",
        "timm module",
    ]);
    for l in &levels {
        table.add_row(vec![
            l.index.to_string(),
            l.stage.to_string(),
            l.reduction.to_string(),
            l.num_chs.to_string(),
            format!("{0} x {0}", l.size),
            l.module.clone(),
        ]);
    }
    println!("{table}");
    Ok(())
}

/// Runs `effnet info`.
pub fn run(args: &InfoArgs, json: bool) -> Result<()> {
    if args.features {
        return print_features(args, json);
    }
    let summary = NetworkSummary::of(&args.model.config()?, args.layers)?;
    let isa = isa::active()?.name();
    if json {
        print_json(&InfoReport { summary, isa })
    } else {
        summary.print();
        println!(
            "inference kernels on this machine: {isa} (set {} to force another)",
            isa::ISA_VARIABLE
        );
        Ok(())
    }
}
