//! How much faster a network runs on T threads than on one, measured in one process: inferences on a
//! one-thread and a T-thread rayon pool alternate, and each pair gives one speedup, so a slow spell of a
//! shared machine lands on both sides of the ratio.
//!
//! `cargo run --release -p effnet-engine --example thread_scaling -- [MODEL] [BATCH] [THREADS] [PAIRS]`
//! (defaults: b0 1 2 200; random weights at the model's resolution).

use effnet_arch::{resolve, Variant};
use effnet_engine::{Engine, FeatureMap};
use effnet_weights::random::RandomWeights;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or(default.to_string());
    let model = arg(0, "b0");
    let (batch, threads, pairs): (usize, usize, usize) = (
        arg(1, "1").parse()?,
        arg(2, "2").parse()?,
        arg(3, "200").parse()?,
    );
    let variant = Variant::by_name(&model)?;
    let plan = resolve(&variant.config())?;
    let engine = Engine::new(&plan, RandomWeights::new(&plan, 0));
    let r = plan.resolution() as usize;
    let image = FeatureMap::new(
        &(0..r * r * 3)
            .map(|i| (i % 255) as f32 / 127.5 - 1.0)
            .collect::<Vec<f32>>(),
        r,
        r,
        3,
    );
    let images = vec![image; batch];
    let pools = [1, threads].map(|t| rayon::ThreadPoolBuilder::new().num_threads(t).build());
    let [one, many] = pools;
    let (one, many) = (one?, many?);
    let time = |pool: &rayon::ThreadPool| {
        let start = Instant::now();
        pool.install(|| engine.logits_batch(&images));
        start.elapsed().as_secs_f64() * 1e3
    };
    for _ in 0..3 {
        time(&one);
        time(&many);
    }
    let (mut serial, mut parallel, mut speedups) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..pairs {
        let (a, b) = (time(&one), time(&many));
        serial.push(a);
        parallel.push(b);
        speedups.push(a / b);
    }
    for v in [&mut serial, &mut parallel, &mut speedups] {
        v.sort_by(f64::total_cmp);
    }
    let quartile = |v: &[f64], q: usize| v[(v.len() - 1) * q / 4];
    println!(
        "{model} batch {batch}: 1 thread {:.2} ms, {threads} threads {:.2} ms (medians); paired speedup {:.2} (quartiles {:.2}-{:.2})",
        quartile(&serial, 2),
        quartile(&parallel, 2),
        quartile(&speedups, 2),
        quartile(&speedups, 1),
        quartile(&speedups, 3),
    );
    Ok(())
}
