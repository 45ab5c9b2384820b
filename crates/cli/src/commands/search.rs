//! `effnet search`: the paper's grid search for `alpha, beta, gamma`, training every candidate on the user's
//! data, with the unscaled base and single-dimension scalings as controls; `results.json`, `results.png` and a
//! printed ranking. `--resume` skips finished candidates. The same run folder can instead be handed to a
//! cluster (`--slurm`, `--kubernetes`), whose jobs each train one candidate (`--candidate I`, or the index
//! the scheduler sets) and rank what has finished (`--collect`).

use super::search_cluster::{submit, ClusterArgs};
use crate::output::{bytes, decimal, print_json, table, thousands};
use crate::plot::plot_search;
use crate::run_args::RunArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use effnet_train::search::{
    collect, create, index_from_env, plan, run_candidate, search, wait_and_collect, Candidate,
    CandidatePlan, CandidateResult, Regularisation, SearchConfig, SearchDir, SearchObserver,
    SearchResults,
};
use effnet_train::trainer::Accelerator;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// Batch-norm momentum, TF convention, for every candidate (default: chosen per candidate by the
    /// scaled recipe; 0.9 with the fixed one).
    #[arg(long)]
    bn_momentum: Option<f64>,
    /// scaled: each candidate gets `train --recipe auto`'s crop, batch-norm momentum, weight average,
    /// RandAugment, dropout and mixup for its own resolution and run; fixed: the same official recipe
    /// for all, as in the paper.
    #[arg(long, default_value = "scaled")]
    regularisation: String,
    /// Seed shared by every candidate.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Candidates trained at the same time on this machine.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Where candidates train: cpu, or wgpu in builds with the `wgpu` feature.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Create the run folder and list its candidates without training any.
    #[arg(long, conflicts_with_all = ["collect", "candidate", "slurm", "kubernetes"])]
    plan_only: bool,
    /// Train only candidate I of the search in --out RUN (a cluster job's work). Without it, and without
    /// --data, the index comes from SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX when one is set.
    #[arg(long, value_name = "I", conflicts_with_all = ["collect", "data", "slurm", "kubernetes"])]
    candidate: Option<usize>,
    /// Rank what the search in --out RUN has finished so far into results.json and results.png, and say
    /// what is missing or failed. Safe to run at any time.
    #[arg(long, conflicts_with_all = ["data", "slurm", "kubernetes"])]
    collect: bool,
    /// With --collect: first wait until every candidate has finished or failed.
    #[arg(long, requires = "collect")]
    wait: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
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

    fn finished(&self, r: &CandidateResult, index: usize, total: usize) {
        if !self.json {
            eprintln!(
                "finished {}/{total}: {} val accuracy {:.1}% ({:.1} s)",
                index + 1,
                r.plan.id,
                100.0 * r.val_accuracy,
                r.train_seconds
            );
        }
    }
}

/// The columns describing a candidate's network, shared by the ranking and the plan.
const PLAN_COLUMNS: [&str; 9] = [
    "kind", "alpha", "beta", "gamma", "d", "w", "r", "params", "MACs",
];

fn plan_cells(p: &CandidatePlan) -> Vec<String> {
    let c = &p.candidate;
    vec![
        format!("{:?}", c.kind).to_lowercase(),
        decimal(c.alpha),
        decimal(c.beta),
        decimal(c.gamma),
        decimal(p.d),
        decimal(p.w),
        p.r.to_string(),
        thousands(p.params),
        format!("{:.2} M", p.macs as f64 / 1e6),
    ]
}

fn print_ranking(results: &SearchResults) {
    let header: Vec<&str> = std::iter::once("rank")
        .chain(PLAN_COLUMNS)
        .chain(["MACs ratio", "formula", "val acc", "seconds"])
        .collect();
    let mut t = table(&header);
    for (i, r) in results.candidates.iter().enumerate() {
        let mut row = vec![(i + 1).to_string()];
        row.extend(plan_cells(&r.plan));
        row.extend([
            format!("{:.3}", r.macs_ratio),
            format!("{:.3}", r.formula_ratio),
            format!("{:.1}%", 100.0 * r.val_accuracy),
            format!("{:.1}", r.train_seconds),
        ]);
        t.add_row(row);
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

fn print_unfinished(root: &Path, results: &SearchResults) {
    for u in &results.unfinished {
        println!(
            "missing: candidate {} ({}), {} epochs done",
            u.index, u.id, u.epochs_done
        );
    }
    for f in &results.failed {
        println!(
            "failed: candidate {} ({}) on {}: {}",
            f.index, f.id, f.host, f.error
        );
    }
    if let Some(first) = results
        .unfinished
        .first()
        .map(|u| u.index)
        .or(results.failed.first().map(|f| f.index))
    {
        println!(
            "train a missing or failed candidate (it resumes where it stopped) with: effnet search --out {} --candidate {first}",
            root.display()
        );
    }
}

fn report(root: &Path, results: &SearchResults, json: bool) -> Result<()> {
    plot_search(&root.join("results.png"), results)?;
    if json {
        return print_json(results);
    }
    print_ranking(results);
    print_unfinished(root, results);
    Ok(())
}

fn print_plan(plans: &[CandidatePlan]) {
    let header: Vec<&str> = std::iter::once("index")
        .chain(PLAN_COLUMNS)
        .chain(["training memory"])
        .collect();
    let mut t = table(&header);
    for p in plans {
        let mut row = vec![p.index.to_string()];
        row.extend(plan_cells(p));
        row.push(bytes(p.training_memory_bytes));
        t.add_row(row);
    }
    println!("{t}");
}

/// Trains one candidate; the worker that finishes the last one ranks them all.
fn work(root: &Path, index: usize, json: bool) -> Result<()> {
    let run = run_candidate(root, index, &Progress { json })?;
    if !json {
        let how = match run.resumed_after {
            _ if run.already_finished => "had already finished".to_string(),
            0 => "trained from the start".to_string(),
            n => format!("resumed after {n} epochs"),
        };
        println!(
            "candidate {index} ({}): {how}, validation accuracy {:.1}%",
            run.result.plan.id,
            100.0 * run.result.val_accuracy
        );
    }
    if run.all_finished {
        let results = collect(root)?;
        plot_search(&root.join("results.png"), &results)?;
        if !json {
            println!(
                "every candidate has finished: {} ranks them",
                root.join("results.json").display()
            );
        }
    }
    if json {
        print_json(&run.result)?;
    }
    Ok(())
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path)
        .with_context(|| format!("{}: cannot make the path absolute", path.display()))
}

/// Runs `effnet search`.
pub fn run(args: &SearchArgs, json: bool) -> Result<()> {
    let (root, resume) = args.run.folder()?;
    let root = absolute(&root)?;
    if args.collect {
        let results = if args.wait {
            wait_and_collect(&root, Duration::from_secs(15))?
        } else {
            collect(&root)?
        };
        return report(&root, &results, json);
    }
    if let Some(index) = args.candidate {
        return work(&root, index, json);
    }
    if !resume && args.run.data.is_none() && SearchDir::new(&root).exists() {
        return match index_from_env() {
            Some(index) => work(&root, index?, json),
            None => bail!(
                "{0} already holds a search: continue it with --resume {0}, train one candidate with --candidate I, or rank what has finished with --collect",
                root.display()
            ),
        };
    }
    // A resumed search reads its data and settings from its folder.
    let (data, val) = if resume {
        (PathBuf::new(), None)
    } else {
        (
            absolute(&args.run.data()?)?,
            args.run.val.as_deref().map(absolute).transpose()?,
        )
    };
    let config = SearchConfig {
        data,
        val,
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
        regularisation: Regularisation::from_name(&args.regularisation).with_context(|| {
            format!(
                "unknown regularisation `{}`: use scaled or fixed",
                args.regularisation
            )
        })?,
        jobs: args.jobs,
        accelerator: Accelerator::from_name(&args.device)
            .with_context(|| format!("unknown device `{}`: use cpu or wgpu", args.device))?,
    };
    if args.plan_only || args.cluster.requested() {
        if resume {
            bail!("--plan-only, --slurm and --kubernetes create a new run: give --out RUN and --data DIR");
        }
        // Refused before the folder exists: bad cluster options leave nothing behind.
        let kubernetes = args
            .cluster
            .kubernetes_options(&root, &config.image_folders())?;
        let created = create(&root, config)?;
        let plans = plan(&created)?;
        if args.plan_only {
            if json {
                return print_json(&plans);
            }
            print_plan(&plans);
            println!("{} candidates in {}", plans.len(), root.display());
            return Ok(());
        }
        return submit(&args.cluster, kubernetes, &root, &created, &plans, json);
    }
    let results = search(&root, config, resume, &Progress { json })?;
    report(&root, &results, json)
}
