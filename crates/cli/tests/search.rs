//! The compound-scaling search end to end through the binary: a tiny base on the texture patches at 32 px,
//! interrupted and resumed without retraining finished candidates, and its winner fed to `effnet fit`.

mod common;

use common::{effnet, effnet_with, json, scratch, textures, tiny_search_args, TinyGrid};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// The 0.2-grid points within 0.05 of 2, one epoch each.
const GRID: TinyGrid = TinyGrid {
    grid: "0.2",
    tolerance: "0.05",
    epochs: "1",
};

fn finished(results: &Path) -> Vec<String> {
    std::fs::read_to_string(results)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .map(|v| {
            v["candidates"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn state_times(run: &Path, ids: &[String]) -> BTreeMap<String, SystemTime> {
    ids.iter()
        .map(|id| {
            let state = run.join("candidates").join(id).join("state.json");
            (
                id.clone(),
                std::fs::metadata(state).unwrap().modified().unwrap(),
            )
        })
        .collect()
}

fn run_config(run: &Path, id: &str) -> Value {
    let text =
        std::fs::read_to_string(run.join("candidates").join(id).join("config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn the_fixed_regularisation_trains_every_candidate_with_the_official_recipe() {
    let dir = scratch("search-fixed");
    let (train, val) = textures(&dir);
    let run = dir.join("search");
    let mut args = tiny_search_args(&train, &val, &run, &GRID);
    args.extend(["--plan-only", "--regularisation", "fixed"].map(String::from));
    let plans = json(&effnet_with(&args));
    let id = plans[0]["id"].as_str().unwrap();
    let trained = effnet(&["search", "--out", run.to_str().unwrap(), "--candidate", "0"]);
    assert!(
        trained.status.success(),
        "{}",
        String::from_utf8_lossy(&trained.stderr)
    );
    let config = run_config(&run, id);
    assert_eq!(config["recipe"], "official", "{config}");
    // The official crop and weight average, with the search's batch-norm momentum.
    assert_eq!(
        (&config["min_crop"], &config["bn_momentum"], &config["ema"]),
        (&Value::from(0.08), &Value::from(0.9), &Value::from(0.9999)),
        "{config}"
    );
    assert_eq!(config["dropout"], Value::Null, "{config}");
    let bad = effnet(&[
        "search",
        "--regularisation",
        "strong",
        "--data",
        train.to_str().unwrap(),
        "--out",
        dir.join("bad").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        stderr.contains("unknown regularisation `strong`"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_tiny_search_runs_resumes_and_feeds_fit() {
    let dir = scratch("search");
    let (train, val) = textures(&dir);
    let run = dir.join("search");
    let args = tiny_search_args(&train, &val, &run, &GRID);

    // Interrupted once two candidates are recorded.
    let mut child = Command::new(env!("CARGO_BIN_EXE_effnet"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let results_path = run.join("results.json");
    let started = Instant::now();
    while finished(&results_path).len() < 2 && started.elapsed() < Duration::from_secs(600) {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = finished(&results_path);
    assert!(before.len() >= 2, "{before:?}");
    let times = state_times(&run, &before);

    let results = json(&effnet(&[
        "search",
        "--json",
        "--resume",
        run.to_str().unwrap(),
    ]));
    let candidates = results["candidates"].as_array().unwrap();
    // The base, three single-dimension controls and the 0.2-grid points within 0.05 of 2.
    let compound: Vec<&Value> = candidates
        .iter()
        .filter(|c| c["kind"] == "compound")
        .collect();
    assert_eq!(compound.len(), 5, "{results}");
    assert_eq!(candidates.len(), 9);
    let mut ids: Vec<&str> = candidates
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 9, "every candidate once");
    for c in &compound {
        let (a, b, g) = (
            c["alpha"].as_f64().unwrap(),
            c["beta"].as_f64().unwrap(),
            c["gamma"].as_f64().unwrap(),
        );
        assert!(a >= 1.0 && b >= 1.0 && g >= 1.0);
        assert!((a * b * b * g * g - 2.0).abs() <= 0.05 + 1e-9, "{c}");
        assert!((c["formula_ratio"].as_f64().unwrap() - a * b * b * g * g).abs() < 1e-9);
    }
    for kind in ["baseline", "depth", "width", "resolution"] {
        let c = candidates.iter().find(|c| c["kind"] == kind).unwrap();
        if kind != "baseline" {
            assert!(c["macs_ratio"].as_f64().unwrap() >= 2.0, "{c}");
        }
        assert!(c["val_accuracy"].as_f64().unwrap() > 0.0);
    }
    // Finished candidates were not retrained.
    assert_eq!(state_times(&run, &before), times);
    // By default each candidate is regularised for its own size and run (`train --recipe auto`): below
    // 128 px the largest crop and V2's weakest dropout; 19 steps settle batch norm fastest, too few for
    // a weight average.
    for c in candidates {
        let config = run_config(&run, c["id"].as_str().unwrap());
        assert_eq!(config["recipe"], "auto", "{config}");
        assert_eq!(
            (&config["min_crop"], &config["bn_momentum"], &config["ema"]),
            (&Value::from(0.7), &Value::from(0.9), &Value::Null),
            "{config}"
        );
        assert_eq!(config["dropout"], 0.1, "{config}");
    }
    assert!(run.join("results.png").exists());

    // Ranked best first, and the winner is the best compound candidate.
    let accuracies: Vec<f64> = candidates
        .iter()
        .map(|c| c["val_accuracy"].as_f64().unwrap())
        .collect();
    assert!(accuracies.windows(2).all(|w| w[0] >= w[1]));
    let winner = &results["winner"];
    assert_eq!(winner["alpha"], compound[0]["alpha"]);
    assert_eq!(winner["gamma"], compound[0]["gamma"]);

    // Step 2: the searched coefficients scale B0 within a budget.
    let fit = json(&effnet(&[
        "fit",
        "--json",
        "--from-search",
        results_path.to_str().unwrap(),
        "--max-macs",
        "1e9",
    ]));
    let phi = fit["phi"].as_f64().unwrap();
    let depth = winner["alpha"].as_f64().unwrap().powf(phi);
    let width = winner["beta"].as_f64().unwrap().powf(phi);
    assert!(
        (fit["depth"].as_f64().unwrap() - depth).abs() < 1e-9,
        "{fit}"
    );
    assert!(
        (fit["width"].as_f64().unwrap() - width).abs() < 1e-9,
        "{fit}"
    );
    assert!(fit["macs"].as_u64().unwrap() <= 1_000_000_000);
    std::fs::remove_dir_all(&dir).unwrap();
}
