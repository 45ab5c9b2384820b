//! `effnet fit`: the largest compound-scaled network that meets FLOPS / memory / parameter budgets.

use crate::model_args::{base_config, parse_count, ScalingArgs};
use crate::output::{bytes, giga, print_json, table, thousands};
use crate::summary::NetworkSummary;
use anyhow::Result;
use clap::Args;
use effnet_arch::accuracy::predict_top1;
use effnet_arch::solver::{fit, Budget, TrainingBudget, PHI_STEP};
use serde::Serialize;

/// Arguments of `effnet fit`.
#[derive(Debug, Args)]
pub struct FitArgs {
    /// Most multiply-adds per image (the paper's FLOPS), e.g. 1.8e9 or 400M.
    #[arg(long, value_parser = parse_count)]
    max_macs: Option<u64>,
    /// Most memory of an inference process in bytes (f32 weights + peak activations of one image + the
    /// runtime's 16 MiB), e.g. 64MiB.
    #[arg(long, value_parser = parse_count)]
    max_memory: Option<u64>,
    /// Most memory of training with the official recipe in bytes (activations kept per image x --batch +
    /// weights, gradients, RMSProp state and EMA + the runtime), e.g. 2GiB.
    #[arg(long, value_parser = parse_count)]
    max_train_memory: Option<u64>,
    /// Images per training step, for --max-train-memory.
    #[arg(long, default_value_t = 32)]
    batch: u64,
    /// Most trainable parameters, e.g. 10M.
    #[arg(long, value_parser = parse_count)]
    max_params: Option<u64>,
    /// Base to scale: a model name or comma-separated TF block strings.
    #[arg(long, default_value = "b0")]
    base: String,
    #[command(flatten)]
    scaling: ScalingArgs,
}

#[derive(Debug, Serialize)]
struct FittingVariant {
    name: &'static str,
    params: u64,
    macs: u64,
    inference_memory_bytes: u64,
    process_memory_bytes: u64,
    published_top1: Option<f64>,
}

#[derive(Debug, Serialize)]
struct FitReport {
    phi: f64,
    phi_step: f64,
    budget: Budget,
    /// Estimated ImageNet top-1 from the published B0..B7 curve (an estimate, not a measurement).
    predicted_top1: f64,
    predicted_top1_extrapolated: bool,
    /// The next grid step and its MACs, which break the budget.
    next_phi: Option<f64>,
    next_macs: Option<u64>,
    next_params: Option<u64>,
    next_inference_memory_bytes: Option<u64>,
    next_process_memory_bytes: Option<u64>,
    /// Training memory of the answer at the budget's batch (with --max-train-memory).
    training_memory_bytes: Option<u64>,
    next_training_memory_bytes: Option<u64>,
    fitting_variants: Vec<FittingVariant>,
    #[serde(flatten)]
    network: NetworkSummary,
}

/// Runs `effnet fit`.
pub fn run(args: &FitArgs, json: bool) -> Result<()> {
    anyhow::ensure!(args.batch >= 1, "--batch must be at least 1");
    let budget = Budget {
        max_macs: args.max_macs,
        max_memory: args.max_memory,
        max_params: args.max_params,
        max_train_memory: args.max_train_memory.map(|max_bytes| TrainingBudget {
            max_bytes,
            batch: args.batch,
        }),
    };
    let training = |a: &effnet_arch::Accounting| budget.max_train_memory.map(|t| t.needed(a));
    let base = base_config(Some(&args.base))?;
    let solution = fit(&base, args.scaling.coefficients()?, &budget)?;
    let best = &solution.best;
    let estimate = predict_top1(best.accounting.macs);
    let next = solution.next.as_ref();
    let report = FitReport {
        phi: best.phi,
        phi_step: PHI_STEP,
        budget,
        predicted_top1: estimate.top1,
        predicted_top1_extrapolated: estimate.extrapolated,
        next_phi: next.map(|n| n.phi),
        next_macs: next.map(|n| n.accounting.macs),
        next_params: next.map(|n| n.accounting.params),
        next_inference_memory_bytes: next.map(|n| n.accounting.inference_memory_bytes()),
        next_process_memory_bytes: next.map(|n| n.accounting.process_memory_bytes()),
        training_memory_bytes: training(&best.accounting),
        next_training_memory_bytes: next.and_then(|n| training(&n.accounting)),
        fitting_variants: solution
            .fitting_variants
            .iter()
            .map(|(v, a)| FittingVariant {
                name: v.name,
                params: a.params,
                macs: a.macs,
                inference_memory_bytes: a.inference_memory_bytes(),
                process_memory_bytes: a.process_memory_bytes(),
                published_top1: v.published_top1.map(|t| t.0),
            })
            .collect(),
        network: NetworkSummary::from_plan(&best.plan, best.accounting.clone(), false),
    };
    if json {
        return print_json(&report);
    }
    report.network.print();
    println!(
        "largest admissible phi = {:.3} (grid step {PHI_STEP}); estimated ImageNet top-1 {:.1}%{} (from the published B0..B7 curve, not measured)",
        report.phi,
        report.predicted_top1,
        if report.predicted_top1_extrapolated { ", extrapolated" } else { "" }
    );
    if let Some(n) = next {
        println!(
            "next step phi = {:.3} breaks the budget: {} MACs, {} params, {} of inference process memory{} (this one: {} MACs, {}{})",
            n.phi,
            thousands(n.accounting.macs),
            thousands(n.accounting.params),
            bytes(n.accounting.process_memory_bytes()),
            report.next_training_memory_bytes.map_or(String::new(), |t| format!(", {} to train", bytes(t))),
            thousands(best.accounting.macs),
            bytes(best.accounting.process_memory_bytes()),
            report.training_memory_bytes.map_or(String::new(), |t| format!(", {} to train", bytes(t))),
        );
    }
    let mut t = table(&[
        "official variant that also fits",
        "params",
        "MACs",
        "inference process memory",
        "published top-1",
    ]);
    for v in &report.fitting_variants {
        let top1 = v.published_top1.map_or("-".into(), |t| format!("{t:.1}%"));
        t.add_row(vec![
            v.name.to_string(),
            thousands(v.params),
            giga(v.macs),
            bytes(v.process_memory_bytes),
            top1,
        ]);
    }
    println!("{t}");
    Ok(())
}
