//! `effnet search`: the paper's grid search for `alpha, beta, gamma`, training every candidate on the user's
//! data, with the unscaled base and single-dimension scalings as controls; `results.json`, `results.png` and a
//! printed ranking. `--resume` skips finished candidates.

use crate::output::{decimal, print_json, table, thousands};
use crate::plot::plot_search;
use crate::run_args::RunArgs;
use anyhow::Result;
use clap::Args;
use effnet_train::search::{
    search, Candidate, CandidateResult, SearchConfig, SearchObserver, SearchResults,
};
use std::path::PathBuf;

/// Arguments of `effnet search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    #[command(flatten)]
    run: RunArgs,
    /// The base network: a model name or comma-separated TF block strings.
    #[arg(long, default_value = "b0")]
    base: String,
    /// Compound coefficient of the search.
    #[arg(long, default_value_t = 1.0)]
    phi: f64,
    /// Target of alpha * beta^2 * gamma^2.
    #[arg(long, default_value_t = 2.0)]
    target: f64,
    /// Allowed distance of a candidate's alpha * beta^2 * gamma^2 from the target.
    #[arg(long, default_value_t = 0.1)]
    tolerance: f64,
    /// Grid step of each coefficient.
    #[arg(long, default_value_t = 0.1)]
    grid: f64,
    /// Epochs per candidate.
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    /// Resolution of the unscaled base.
    #[arg(long, default_value_t = 64)]
    img_size: u32,
    /// Images per step.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Learning rate (default: the official recipe's for the batch).
    #[arg(long)]
    lr: Option<f64>,
    /// Batch-norm momentum, TF convention.
    #[arg(long, default_value_t = 0.9)]
    bn_momentum: f64,
    /// Seed shared by every candidate.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Candidates trained at the same time.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
}

struct Progress {
    json: bool,
}

impl SearchObserver for Progress {
    fn started(&self, c: &Candidate, index: usize, total: usize) {
        if !self.json {
            eprintln!(
                "training {}/{}: {:?} alpha {} beta {} gamma {}",
                index + 1,
                total,
                c.kind,
                decimal(c.alpha),
                decimal(c.beta),
                decimal(c.gamma)
            );
        }
    }

    fn finished(&self, r: &CandidateResult, done: usize, total: usize) {
        if !self.json {
            eprintln!(
                "finished {done}/{total}: {} val accuracy {:.1}% ({:.1} s)",
                r.id,
                100.0 * r.val_accuracy,
                r.train_seconds
            );
        }
    }
}

fn print_ranking(results: &SearchResults) {
    let mut t = table(&[
        "rank",
        "kind",
        "alpha",
        "beta",
        "gamma",
        "d",
        "w",
        "r",
        "params",
        "MACs",
        "MACs ratio",
        "formula",
        "val acc",
        "seconds",
    ]);
    for (i, r) in results.candidates.iter().enumerate() {
        let c = &r.candidate;
        t.add_row(vec![
            (i + 1).to_string(),
            format!("{:?}", c.kind).to_lowercase(),
            decimal(c.alpha),
            decimal(c.beta),
            decimal(c.gamma),
            decimal(r.d),
            decimal(r.w),
            r.r.to_string(),
            thousands(r.params),
            format!("{:.2} M", r.macs as f64 / 1e6),
            format!("{:.3}", r.macs_ratio),
            format!("{:.3}", r.formula_ratio),
            format!("{:.1}%", 100.0 * r.val_accuracy),
            format!("{:.1}", r.train_seconds),
        ]);
    }
    println!("{t}");
    match &results.winner {
        Some(w) => println!(
            "winner: alpha {} beta {} gamma {} (validation accuracy {:.1}%)",
            decimal(w.alpha),
            decimal(w.beta),
            decimal(w.gamma),
            100.0 * w.val_accuracy
        ),
        None => println!("no compound candidate finished"),
    }
}

/// Runs `effnet search`.
pub fn run(args: &SearchArgs, json: bool) -> Result<()> {
    let (root, resume) = args.run.folder()?;
    // A resumed search reads its data and settings from its folder.
    let data = if resume {
        PathBuf::new()
    } else {
        args.run.data()?
    };
    let config = SearchConfig {
        data,
        val: args.run.val.clone(),
        val_fraction: args.run.val_fraction,
        base: args.base.clone(),
        img_size: args.img_size,
        phi: args.phi,
        target: args.target,
        tolerance: args.tolerance,
        grid: args.grid,
        epochs: args.epochs,
        batch: args.batch,
        seed: args.seed,
        lr: args.lr,
        bn_momentum: args.bn_momentum,
        jobs: args.jobs,
    };
    let results = search(&root, config, resume, &Progress { json })?;
    plot_search(&root.join("results.png"), &results)?;
    if json {
        return print_json(&results);
    }
    print_ranking(&results);
    Ok(())
}
