//! `effnet scale`: a compound-scaled network, and how its real cost compares with the formula's.

use crate::model_args::{base_config, ScalingArgs};
use crate::output::print_json;
use crate::summary::NetworkSummary;
use anyhow::{Context, Result};
use clap::Args;
use effnet_arch::scaling::compound;
use serde::Serialize;

/// Arguments of `effnet scale`.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// Base to scale: a model name or comma-separated TF block strings.
    #[arg(long, default_value = "b0")]
    base: String,
    #[command(flatten)]
    scaling: ScalingArgs,
    /// List every layer.
    #[arg(long)]
    layers: bool,
}

/// What `effnet scale --json` prints.
#[derive(Debug, Serialize)]
struct ScaleReport {
    phi: f64,
    alpha: f64,
    beta: f64,
    gamma: f64,
    /// `alpha * beta^2 * gamma^2`.
    flops_factor: f64,
    /// `flops_factor ^ phi`: the MACs ratio the formula predicts.
    predicted_macs_ratio: f64,
    /// Real MACs of the scaled network over the base's.
    real_macs_ratio: f64,
    base_macs: u64,
    #[serde(flatten)]
    network: NetworkSummary,
}

/// Runs `effnet scale`.
pub fn run(args: &ScaleArgs, json: bool) -> Result<()> {
    let phi = args.scaling.phi.context("effnet scale needs --phi")?;
    let coefficients = args.scaling.coefficients()?;
    let base = base_config(Some(&args.base))?;
    let base_summary = NetworkSummary::of(&base, false)?;
    let network = NetworkSummary::of(&compound(&base, phi, coefficients)?, args.layers)?;
    let report = ScaleReport {
        phi,
        alpha: coefficients.alpha,
        beta: coefficients.beta,
        gamma: coefficients.gamma,
        flops_factor: coefficients.flops_factor(),
        predicted_macs_ratio: coefficients.flops_factor().powf(phi),
        real_macs_ratio: network.macs as f64 / base_summary.macs as f64,
        base_macs: base_summary.macs,
        network,
    };
    if json {
        return print_json(&report);
    }
    report.network.print();
    println!(
        "alpha*beta^2*gamma^2 = {:.4}; MACs vs {}: formula predicts x{:.3}, the resolved network is x{:.3} ({:+.1}%)",
        report.flops_factor,
        base.name,
        report.predicted_macs_ratio,
        report.real_macs_ratio,
        (report.real_macs_ratio / report.predicted_macs_ratio - 1.0) * 100.0
    );
    Ok(())
}
