//! `effnet bench`: inference speed of any network on random weights (no download needed): warm-up, repeated
//! timed runs, median latency per batch and images per second; with `--train`, the training step.

use crate::memory::{map_large_allocations, peak_rss_bytes};
use crate::model_args::ModelArgs;
use crate::output::{bytes, print_json};
use anyhow::{ensure, Result};
use clap::Args;
use effnet_arch::resolve;
use effnet_data::system::ensure_memory;
use effnet_engine::{Engine, FeatureMap};
use effnet_train::trainer::TIMED_STEP_PARAMETER_COPIES;
use effnet_weights::random::RandomWeights;
use serde::Serialize;
use std::time::{Duration, Instant};

/// Arguments of `effnet bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Images per batch.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Untimed runs before measuring.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed runs (at least; more are made until --min-seconds have passed).
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Keep measuring at least this long.
    #[arg(long, default_value_t = 2.0)]
    min_seconds: f64,
    /// Time training steps (forward, backward, TF-RMSProp update on the burn CPU backend) instead of
    /// inference; --runs steps after one warm-up step.
    #[arg(long)]
    pub train: bool,
}

/// The plan's memory figure for what was run next to the process's measured peak.
#[derive(Debug, Serialize)]
struct MemoryReport {
    /// The plan's bytes for this run (see `effnet info`).
    plan_memory_bytes: u64,
    /// This process's peak resident memory (absent where the platform does not report it).
    peak_rss_bytes: Option<u64>,
    /// `peak_rss_bytes / plan_memory_bytes`.
    peak_over_plan: Option<f64>,
}

impl MemoryReport {
    /// The report for a run whose plan needs `plan_memory_bytes`, measured now.
    fn measured(plan_memory_bytes: u64) -> Self {
        let peak_rss_bytes = peak_rss_bytes();
        Self {
            plan_memory_bytes,
            peak_rss_bytes,
            peak_over_plan: peak_rss_bytes.map(|p| p as f64 / plan_memory_bytes as f64),
        }
    }

    /// `plan X, peak Y` for the text output.
    fn describe(&self) -> String {
        let peak = self.peak_rss_bytes.map_or("not reported".into(), bytes);
        format!("plan {}, peak {peak}", bytes(self.plan_memory_bytes))
    }
}

#[derive(Debug, Serialize)]
struct TrainBenchReport {
    model: String,
    resolution: u32,
    batch: usize,
    threads: usize,
    steps: usize,
    ms_per_step: f64,
    images_per_sec: f64,
    /// Activation bytes kept for backward per image.
    training_activation_bytes: u64,
    /// `plan_memory_bytes`: the training estimate for this batch with the step's parameter copies.
    #[serde(flatten)]
    memory: MemoryReport,
}

fn bench_train(args: &BenchArgs, plan: &effnet_arch::Plan, json: bool) -> Result<()> {
    let accounting = effnet_arch::account(plan);
    let needed = accounting.training_memory_bytes(args.batch as u64, TIMED_STEP_PARAMETER_COPIES);
    let what = format!("training {} at batch {}", plan.config.name, args.batch);
    ensure_memory(&what, needed).map_err(anyhow::Error::msg)?;
    let seconds = effnet_train::trainer::time_train_steps(plan, args.batch, args.runs)?;
    let report = TrainBenchReport {
        model: plan.config.name.clone(),
        resolution: plan.config.resolution,
        batch: args.batch,
        threads: rayon::current_num_threads(),
        steps: args.runs,
        ms_per_step: seconds * 1e3,
        images_per_sec: args.batch as f64 / seconds,
        training_activation_bytes: accounting.training_activation_bytes,
        memory: MemoryReport::measured(needed),
    };
    if json {
        return print_json(&report);
    }
    println!(
        "{} @{} batch {} on {} threads: {:.1} ms per training step (median of {}), {:.1} images/s; memory: {}",
        report.model,
        report.resolution,
        report.batch,
        report.threads,
        report.ms_per_step,
        report.steps,
        report.images_per_sec,
        report.memory.describe()
    );
    Ok(())
}

#[derive(Debug, Serialize)]
struct BenchReport {
    model: String,
    resolution: u32,
    batch: usize,
    threads: usize,
    /// The instruction set of the kernels that ran.
    isa: &'static str,
    runs: usize,
    macs_per_image: u64,
    ms_per_batch: f64,
    ms_per_batch_min: f64,
    images_per_sec: f64,
    gmacs_per_sec: f64,
    /// The plan's inference memory of one image (as `effnet info` reports it).
    inference_memory_bytes: u64,
    /// The plan's peak activations of one image.
    inference_activation_bytes: u64,
    /// Activation buffers the engine allocated (during the first batch; later ones reuse them).
    activation_pool_bytes: usize,
    /// `plan_memory_bytes`: weights plus the peak activations of every image of the batch.
    #[serde(flatten)]
    memory: MemoryReport,
}

/// Runs `effnet bench`.
pub fn run(args: &BenchArgs, json: bool) -> Result<()> {
    ensure!(
        args.batch >= 1 && args.runs >= 1,
        "--batch and --runs must be at least 1"
    );
    ensure!(
        args.min_seconds.is_finite() && (0.0..=3600.0).contains(&args.min_seconds),
        "--min-seconds must be between 0 and 3600, got {}",
        args.min_seconds
    );
    let config = args.model.config()?;
    let plan = resolve(&config)?;
    if args.train {
        return bench_train(args, &plan, json);
    }
    let accounting = effnet_arch::account(&plan);
    let needed = accounting.inference_batch_memory_bytes(args.batch as u64);
    let what = format!("inference of {} at batch {}", config.name, args.batch);
    ensure_memory(&what, needed).map_err(anyhow::Error::msg)?;
    map_large_allocations();
    let engine = Engine::new(&plan, RandomWeights::new(&plan, 0));
    let r = config.resolution as usize;
    let image = FeatureMap::new(
        &(0..r * r * 3)
            .map(|i| ((i % 255) as f32 / 127.5) - 1.0)
            .collect::<Vec<f32>>(),
        r,
        r,
        3,
    );
    let batch = vec![image; args.batch];
    let once = || -> Result<Duration> {
        let start = Instant::now();
        for logits in engine.logits_batch(&batch) {
            logits?;
        }
        Ok(start.elapsed())
    };
    for _ in 0..args.warmup {
        once()?;
    }
    let mut times = Vec::new();
    let started = Instant::now();
    while times.len() < args.runs || started.elapsed().as_secs_f64() < args.min_seconds {
        times.push(once()?.as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let macs = accounting.macs;
    let report = BenchReport {
        model: config.name.clone(),
        resolution: config.resolution,
        batch: args.batch,
        threads: rayon::current_num_threads(),
        isa: effnet_engine::isa::active()?.name(),
        runs: times.len(),
        macs_per_image: macs,
        ms_per_batch: median,
        ms_per_batch_min: times[0],
        images_per_sec: args.batch as f64 * 1e3 / median,
        gmacs_per_sec: macs as f64 * args.batch as f64 / (median * 1e6),
        inference_memory_bytes: accounting.inference_memory_bytes(),
        inference_activation_bytes: accounting.inference_activation_bytes,
        activation_pool_bytes: effnet_engine::activation_pool_bytes(),
        memory: MemoryReport::measured(needed),
    };
    if json {
        return print_json(&report);
    }
    println!(
        "{} @{} batch {} on {} threads, {} kernels: {:.2} ms per batch (median of {}, best {:.2}), {:.1} images/s, {:.1} GMAC/s; memory: {}",
        report.model,
        report.resolution,
        report.batch,
        report.threads,
        report.isa,
        report.ms_per_batch,
        report.runs,
        report.ms_per_batch_min,
        report.images_per_sec,
        report.gmacs_per_sec,
        report.memory.describe()
    );
    Ok(())
}
