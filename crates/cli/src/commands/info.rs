//! `effnet info`: the architecture of one network and its exact costs.

use crate::model_args::ModelArgs;
use crate::output::print_json;
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

/// Runs `effnet info`.
pub fn run(args: &InfoArgs, json: bool) -> Result<()> {
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
