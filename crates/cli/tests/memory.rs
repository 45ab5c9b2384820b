//! Memory measured, not assumed: each run is a child process that reports its own peak resident memory
//! (the kernel's high-water mark of its address space), held against the plan's figures. Inference: peak <= 1.10 x (weights + the
//! batch's peak activations) + the runtime's fixed bytes. Training: the estimate within 15% of the peak.
#![cfg(target_os = "linux")]

mod common;

use common::{asset_image, scratch};
use effnet_arch::memory::RUNTIME_BYTES;
use effnet_arch::{account, resolve, Accounting, Variant};
use effnet_weights::random::random_weights;
use effnet_weights::safetensors_io::write_safetensors;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Runs `effnet args --report-memory` and returns its JSON output and the peak resident memory it
/// reported for itself, in bytes. (The kernel's `wait4` figure would include this test process's own
/// memory, which Linux carries over into a child's peak when it starts a program.)
fn run_measured(args: &[&str]) -> (Value, u64) {
    let o = Command::new(env!("CARGO_BIN_EXE_effnet"))
        .args(args)
        .arg("--report-memory")
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "effnet {args:?} failed: {stderr}");
    let peak = stderr
        .lines()
        .find_map(|l| l.strip_prefix("effnet: peak memory "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no peak memory line in: {stderr}"));
    let json = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    (json, peak)
}

fn accounting(model: &str) -> Accounting {
    account(&resolve(&Variant::by_name(model).unwrap().config()).unwrap())
}

/// Asserts the inference bound for `batch` images: peak <= 1.10 x plan + runtime.
fn assert_within_bound(run: &str, peak: u64, a: &Accounting, batch: u64) {
    let bound = (1.10 * a.inference_batch_memory_bytes(batch) as f64) as u64 + RUNTIME_BYTES;
    assert!(
        peak <= bound,
        "{run}: peak {:.1} MiB > bound {:.1} MiB",
        peak as f64 / MIB,
        bound as f64 / MIB
    );
}

const MIB: f64 = (1 << 20) as f64;

#[test]
fn bench_stays_within_the_plan_for_b0_b3_b7_at_batch_1_and_4() {
    for model in ["b0", "b3", "b7"] {
        let a = accounting(model);
        for batch in [1u64, 4] {
            let (report, peak) = run_measured(&[
                "bench",
                model,
                "--batch",
                &batch.to_string(),
                "--warmup",
                "1",
                "--runs",
                "2",
                "--min-seconds",
                "0",
                "--json",
            ]);
            assert_within_bound(&format!("bench {model} batch {batch}"), peak, &a, batch);
            // The report's own figures: the plan for this batch, and the peak measured before printing
            // (close to the final figure: the kernel's counters are synchronised lazily).
            assert_eq!(
                report["plan_memory_bytes"].as_u64(),
                Some(a.inference_batch_memory_bytes(batch))
            );
            let own = report["peak_rss_bytes"]
                .as_u64()
                .expect("reported on Linux");
            assert!(
                (own as f64 - peak as f64).abs() <= 0.05 * peak as f64,
                "{own} vs {peak}"
            );
        }
    }
}

/// Writes random weights of `model` as effnet safetensors under `dir`.
fn random_weights_file(dir: &Path, model: &str) -> String {
    let plan = resolve(&Variant::by_name(model).unwrap().config()).unwrap();
    let path = dir.join(format!("{model}.safetensors"));
    write_safetensors(&path, &random_weights(&plan, 5), Default::default()).unwrap();
    path.display().to_string()
}

#[test]
fn predict_loads_weights_once_and_stays_within_the_plan() {
    let dir = scratch("memory-predict");
    let images: Vec<String> = ["chelsea", "coffee", "camera", "motorcycle_left"]
        .into_iter()
        .map(asset_image)
        .collect();
    for model in ["b0", "b3", "b7"] {
        let weights = random_weights_file(&dir, model);
        let a = accounting(model);
        for batch in [1u64, 4] {
            let batch_text = batch.to_string();
            let mut args = vec![
                "predict",
                "--weights",
                &weights,
                "--model",
                model,
                "--batch",
                &batch_text,
                "--json",
            ];
            args.extend(images[..batch as usize].iter().map(String::as_str));
            let (predictions, peak) = run_measured(&args);
            assert_eq!(predictions.as_array().unwrap().len(), batch as usize);
            assert_within_bound(&format!("predict {model} batch {batch}"), peak, &a, batch);
        }
        std::fs::remove_file(&weights).unwrap();
    }
}

#[test]
fn fit_max_memory_picks_networks_that_run_within_the_budget() {
    for budget_mib in [40u64, 100, 250] {
        let budget = budget_mib << 20;
        let fit = common::json(&common::effnet(&[
            "fit",
            "--max-memory",
            &format!("{budget_mib}MiB"),
            "--json",
        ]));
        let phi = fit["phi"].as_f64().unwrap();
        assert!(fit["process_memory_bytes"].as_u64().unwrap() <= budget);
        let (_, peak) = run_measured(&[
            "bench",
            &format!("--phi={phi}"),
            "--warmup",
            "1",
            "--runs",
            "1",
            "--min-seconds",
            "0",
            "--json",
        ]);
        assert!(
            peak <= budget,
            "fit --max-memory {budget_mib}MiB chose phi {phi}, which peaked at {:.1} MiB",
            peak as f64 / MIB
        );
    }
}

#[test]
fn the_training_estimate_is_within_15_percent_of_the_measured_peak() {
    for model in ["b0", "--phi=-2"] {
        for batch in ["8", "16"] {
            let mut args = vec!["bench", model];
            args.extend(["--train", "--batch", batch, "--runs", "1", "--json"]);
            let (report, peak) = run_measured(&args);
            let estimate = report["plan_memory_bytes"].as_u64().unwrap() as f64;
            let error = (estimate - peak as f64).abs() / peak as f64;
            assert!(
                error <= 0.15,
                "{model} batch {batch}: estimate {:.1} MiB, peak {:.1} MiB",
                estimate / MIB,
                peak as f64 / MIB
            );
        }
    }
}
