//! `effnet info`: the architecture of one network and its exact costs.

use crate::model_args::ModelArgs;
use crate::output::print_json;
use crate::summary::NetworkSummary;
use anyhow::Result;
use clap::Args;

/// Arguments of `effnet info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// List every layer with its shapes and costs.
    #[arg(long)]
    layers: bool,
}

/// Runs `effnet info`.
pub fn run(args: &InfoArgs, json: bool) -> Result<()> {
    let summary = NetworkSummary::of(&args.model.config()?, args.layers)?;
    if json {
        print_json(&summary)
    } else {
        summary.print();
        Ok(())
    }
}
