//! The search handed to cluster schedulers. The same tiny search (a small base on the texture patches at
//! 32 px, 7 candidates, 3 epochs each) is run locally with `--jobs 1` and then:
//! - as a Kubernetes Indexed Job: the manifest is checked against the Kubernetes API schema
//!   (kubernetes-validate, strict) and each indexed worker's command is run here with its
//!   `JOB_COMPLETION_INDEX`, one of them killed after its first epoch and run again;
//! - on a real single-node Slurm cluster (`scripts/test-cluster` starts it; ignored otherwise): submitted
//!   with `--slurm`, one array task cancelled with `scancel` mid-run and resubmitted.
//!
//! Either way the collected ranking must equal the local one, candidate by candidate, with the same
//! accuracies (the same seed gives the same training), every candidate trained once and the killed one
//! resumed rather than restarted.

mod common;

use common::{effnet, effnet_with, json, root, scratch, textures, tiny_search_args, TinyGrid};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const EPOCHS: usize = 3;
/// The controls (base, depth, width, resolution) and the 0.5-grid points within 0.3 of 2.
const CANDIDATES: usize = 7;

/// Runs the tiny search on `train`/`val` into `out`, with `extra` options.
fn search(train: &Path, val: &Path, out: &Path, extra: &[&str]) -> Output {
    let grid = TinyGrid {
        grid: "0.5",
        tolerance: "0.3",
        epochs: &EPOCHS.to_string(),
    };
    let mut args = tiny_search_args(train, val, out, &grid);
    args.extend(extra.iter().map(|a| a.to_string()));
    effnet_with(&args)
}

/// The JSON the tiny search printed, which must have succeeded.
fn search_json(train: &Path, val: &Path, out: &Path, extra: &[&str]) -> Value {
    json(&search(train, val, out, extra))
}

/// The ranking of a collected search: (id, best accuracy, final accuracy) best first.
fn ranking(results: &Value) -> Vec<(String, f64, f64)> {
    results["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["val_accuracy"].as_f64().unwrap(),
                c["final_accuracy"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn read_results(run: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("results.json")).unwrap()).unwrap()
}

fn assert_same_ranking(cluster: &Value, local: &Value) {
    let (a, b) = (ranking(cluster), ranking(local));
    assert_eq!(a.len(), CANDIDATES, "{cluster}");
    assert_eq!(
        a.iter().map(|r| &r.0).collect::<Vec<_>>(),
        b.iter().map(|r| &r.0).collect::<Vec<_>>(),
        "the same order"
    );
    for (x, y) in a.iter().zip(&b) {
        assert!(
            (x.1 - y.1).abs() < 1e-9 && (x.2 - y.2).abs() < 1e-9,
            "{x:?} vs {y:?}"
        );
    }
    assert_eq!(cluster["winner"], local["winner"]);
    assert_eq!(cluster["unfinished"], serde_json::json!([]));
    assert_eq!(cluster["failed"], serde_json::json!([]));
}

/// The candidate folders, in index order, and the index of the one with the most multiply-adds.
fn candidate_dirs(run: &Path) -> (Vec<PathBuf>, usize) {
    let candidates: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("candidates.json")).unwrap())
            .unwrap();
    let candidates = candidates.as_array().unwrap();
    assert_eq!(candidates.len(), CANDIDATES);
    let largest = (0..CANDIDATES)
        .max_by_key(|&i| candidates[i]["macs"].as_u64().unwrap())
        .unwrap();
    let dirs = candidates
        .iter()
        .map(|c| run.join("candidates").join(c["id"].as_str().unwrap()))
        .collect();
    (dirs, largest)
}

fn epochs_done(candidate: &Path) -> u64 {
    std::fs::read_to_string(candidate.join("state.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["epoch"].as_u64())
        .unwrap_or(0)
}

/// Every candidate trained each epoch exactly once: none lost, none repeated by a restart.
fn assert_each_epoch_once(run: &Path) {
    for dir in candidate_dirs(run).0 {
        let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
        let epochs: Vec<&str> = csv
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap())
            .collect();
        let expected: Vec<String> = (1..=EPOCHS).map(|e| e.to_string()).collect();
        assert_eq!(epochs, expected, "{}", dir.display());
    }
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Validates `manifest` against the Kubernetes API schema, rejecting unknown fields.
fn validate_against_schema(manifest: &Path) {
    let python = root().join("assets/python");
    assert!(
        python.join("kubernetes_validate").exists(),
        "kubernetes-validate missing: run scripts/fetch-assets"
    );
    let o = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "--no-warn"])
        .arg(manifest)
        .env("PYTHONPATH", &python)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn documents(manifest: &Path) -> Vec<Value> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(manifest).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// Runs a container command of the manifest here, `effnet` being the binary under test.
fn container_command(command: &[String], index: Option<usize>) -> Command {
    assert_eq!(command[0], "effnet");
    let mut c = Command::new(env!("CARGO_BIN_EXE_effnet"));
    c.args(&command[1..]);
    if let Some(index) = index {
        c.env("JOB_COMPLETION_INDEX", index.to_string());
    }
    c
}

#[test]
fn kubernetes_workers_run_by_index_reproduce_the_local_ranking() {
    let dir = scratch("cluster-kubernetes");
    let (train, val) = textures(&dir);
    let local = search_json(&train, &val, &dir.join("local"), &["--jobs", "1"]);

    let run = dir.join("runs/search");
    let manifest = dir.join("search.yaml");
    let written = search_json(
        &train,
        &val,
        &run,
        &[
            "--kubernetes",
            manifest.to_str().unwrap(),
            "--pvc",
            "effnet-runs",
            "--image",
            "registry.example/effnet:1",
            "--parallelism",
            "3",
        ],
    );
    validate_against_schema(&manifest);
    let docs = documents(&manifest);
    assert_eq!(docs.len(), 2);
    let (workers, collector) = (&docs[0], &docs[1]);
    assert_eq!(workers["kind"], "Job");
    assert_eq!(workers["spec"]["completionMode"], "Indexed");
    assert_eq!(workers["spec"]["completions"], CANDIDATES);
    assert_eq!(workers["spec"]["parallelism"], 3);
    let pod = &workers["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "registry.example/effnet:1");
    assert_eq!(
        pod["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "effnet-runs"
    );
    // The claim is mounted where the run folder and the images are here (their common parent by default).
    assert_eq!(
        container["volumeMounts"][0]["mountPath"].as_str().unwrap(),
        dir.to_str().unwrap()
    );
    assert_eq!(
        written["mount_path"].as_str().unwrap(),
        dir.to_str().unwrap()
    );
    // Memory: the largest candidate's plan estimate plus the image cache, as --plan-only reports it.
    let plans = search_json(&train, &val, &dir.join("plan"), &["--plan-only"]);
    let largest = plans
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["training_memory_bytes"].as_u64().unwrap())
        .max()
        .unwrap();
    assert_eq!(
        container["resources"]["requests"]["memory"],
        format!("{}Mi", (largest + (2 << 30)).div_ceil(1 << 20))
    );
    let command = strings(&container["command"]);

    // Pods in any order; the one for the largest candidate is killed after its first epoch and retried.
    let (dirs, largest) = candidate_dirs(&run);
    let mut killed = container_command(&command, Some(largest))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("a first epoch", Duration::from_secs(300), || {
        epochs_done(&dirs[largest]) >= 1
    });
    killed.kill().unwrap();
    killed.wait().unwrap();
    let cut_after = epochs_done(&dirs[largest]);
    assert!((1..EPOCHS as u64).contains(&cut_after), "{cut_after}");
    for index in (0..CANDIDATES).rev() {
        let o = container_command(&command, Some(index)).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let said = String::from_utf8_lossy(&o.stdout);
        if index == largest {
            assert!(
                said.contains(&format!("resumed after {cut_after} epochs")),
                "{said}"
            );
        } else {
            assert!(said.contains("trained from the start"), "{said}");
        }
        assert_eq!(
            said.contains("every candidate has finished"),
            index == 0,
            "only the last worker ranks them: {said}"
        );
    }
    // The last worker (index 0) ranked them all.
    assert_each_epoch_once(&run);
    assert_same_ranking(&read_results(&run), &local);
    assert!(run.join("results.png").exists());

    // The collect Job's command: nothing is left to wait for.
    let collect = strings(&collector["spec"]["template"]["spec"]["containers"][0]["command"]);
    assert!(collect.ends_with(&["--collect".into(), "--wait".into()]));
    let mut collect = container_command(&collect, None);
    collect.arg("--json");
    let o = collect.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_same_ranking(&serde_json::from_slice(&o.stdout).unwrap(), &local);

    // Paths the pods could not see are refused before anything is created.
    let outside = search(
        &train,
        &val,
        &dir.join("runs/other"),
        &[
            "--kubernetes",
            dir.join("other.yaml").to_str().unwrap(),
            "--pvc",
            "effnet-runs",
            "--mount-path",
            dir.join("runs").to_str().unwrap(),
        ],
    );
    assert!(!outside.status.success());
    let e = String::from_utf8_lossy(&outside.stderr);
    assert!(e.contains("is not under --mount-path"), "{e}");
    assert!(!dir.join("runs/other").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

fn slurm(program: &str, args: &[&str]) -> String {
    let o = Command::new(program).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn queue_is_empty() -> bool {
    slurm("squeue", &["-h", "-o", "%i"]).is_empty()
}

#[test]
#[ignore = "needs a Slurm cluster: scripts/test-cluster starts one and runs this"]
fn a_search_submitted_to_slurm_matches_the_local_ranking_and_a_cancelled_task_resumes() {
    assert!(
        std::env::var_os("SLURM_CONF").is_some(),
        "SLURM_CONF is not set: run scripts/test-cluster"
    );
    let dir = scratch("cluster-slurm");
    let (train, val) = textures(&dir);
    let local = search_json(&train, &val, &dir.join("local"), &["--jobs", "1"]);

    let run = dir.join("search");
    let submitted = search_json(
        &train,
        &val,
        &run,
        &[
            "--slurm",
            "--cpus-per-task",
            "1",
            "--sbatch-args",
            "--time=30",
        ],
    );
    let array = submitted["array_job"].as_str().unwrap().to_owned();
    let script = std::fs::read_to_string(run.join("slurm/search.sbatch")).unwrap();
    assert!(script.contains(&format!("#SBATCH --array=0-{}", CANDIDATES - 1)));
    assert!(script.contains("#SBATCH --time=30"));

    // Cancel a task that has committed an epoch and not finished, then resubmit it.
    let dirs = candidate_dirs(&run).0;
    let mut cancelled = None;
    wait_for("a task to cancel mid-run", Duration::from_secs(600), || {
        let Some(index) = (0..CANDIDATES)
            .find(|&i| epochs_done(&dirs[i]) >= 1 && !dirs[i].join("result.json").exists())
        else {
            return queue_is_empty();
        };
        slurm("scancel", &[&format!("{array}_{index}")]);
        // A task that finished before the cancel reached it does not count.
        wait_for("the cancel", Duration::from_secs(60), || {
            !slurm("squeue", &["-h", "-o", "%i", "-j", &array])
                .lines()
                .any(|l| l == format!("{array}_{index}"))
        });
        if dirs[index].join("result.json").exists() {
            return false;
        }
        cancelled = Some((index, epochs_done(&dirs[index])));
        true
    });
    let (index, cut_after) = cancelled.expect("a task was cancelled mid-run");
    // Committed at least one epoch; at worst all of them, cut before recording its result.
    assert!((1..=EPOCHS as u64).contains(&cut_after), "{cut_after}");
    slurm(
        "sbatch",
        &[
            "--parsable",
            &format!("--array={index}"),
            run.join("slurm/search.sbatch").to_str().unwrap(),
        ],
    );
    wait_for(
        "the queue to drain",
        Duration::from_secs(900),
        queue_is_empty,
    );

    assert_each_epoch_once(&run);
    assert_same_ranking(&read_results(&run), &local);
    for i in 0..CANDIDATES {
        let log = std::fs::read_to_string(run.join(format!("slurm/candidate-{i}.log"))).unwrap();
        let starts = log.matches("training ").count();
        let ends: Vec<&str> = log
            .lines()
            .filter(|l| l.starts_with(&format!("candidate {i} (")))
            .collect();
        assert_eq!(ends.len(), 1, "candidate {i} finished once: {log}");
        if i == index {
            assert_eq!(starts, 2, "{log}");
            assert!(
                ends[0].contains(&format!("resumed after {cut_after} epochs")),
                "{log}"
            );
        } else {
            assert_eq!(starts, 1, "candidate {i} trained once: {log}");
            assert!(ends[0].contains("trained from the start"), "{log}");
        }
    }
    // The collect job ran after the array.
    assert!(run.join("slurm/collect.log").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failed_candidate_is_reported_and_a_retry_clears_it() {
    let dir = scratch("cluster-failure");
    let (train, val) = textures(&dir);
    let run = dir.join("search");
    let plans = search_json(&train, &val, &run, &["--plan-only"]);
    assert_eq!(plans.as_array().unwrap().len(), CANDIDATES);
    let out = run.to_str().unwrap();

    // The images vanish: the worker fails with the reason, and records it for the collector.
    let hidden = dir.join("hidden");
    std::fs::rename(&train, &hidden).unwrap();
    let o = effnet(&["search", "--out", out, "--candidate", "1"]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains(train.to_str().unwrap()) && !e.contains("panicked"),
        "{e}"
    );
    let collected = json(&effnet(&["search", "--json", "--out", out, "--collect"]));
    let failed = collected["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{collected}");
    assert_eq!(failed[0]["index"], 1);
    assert!(failed[0]["error"]
        .as_str()
        .unwrap()
        .contains(train.to_str().unwrap()));
    assert_eq!(
        collected["unfinished"].as_array().unwrap().len(),
        CANDIDATES - 1
    );
    let o = effnet(&["search", "--out", out, "--collect"]);
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains("failed: candidate 1 (") && said.contains("missing: candidate 0 ("),
        "{said}"
    );

    // Back in place, the retry (an index from the scheduler's variable) trains it and clears the failure.
    std::fs::rename(&hidden, &train).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_effnet"))
        .args(["search", "--json", "--out", out])
        .env("SLURM_ARRAY_TASK_ID", "1")
        .output()
        .unwrap();
    let result = json(&o);
    assert_eq!(result["index"], 1);
    let collected = json(&effnet(&["search", "--json", "--out", out, "--collect"]));
    assert_eq!(collected["failed"], serde_json::json!([]));
    assert_eq!(collected["candidates"][0]["id"], result["id"]);
    // Run again (a requeued task that had finished), it trains nothing and reports the same result.
    let metrics = candidate_dirs(&run).0[1].join("metrics.csv");
    let before = std::fs::read(&metrics).unwrap();
    let o = effnet(&["search", "--out", out, "--candidate", "1"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("had already finished"));
    assert_eq!(std::fs::read(&metrics).unwrap(), before);
    assert_eq!(
        json(&effnet(&[
            "search",
            "--json",
            "--out",
            out,
            "--candidate",
            "1"
        ])),
        result
    );

    // Indexes that are not candidates, and folders that are not searches, get one clear line.
    for (args, env, expected) in [
        (vec!["--candidate", "7"], None, "candidate 7 does not exist"),
        (
            vec![],
            Some("x"),
            "SLURM_ARRAY_TASK_ID=\"x\" is not a candidate index",
        ),
        (vec![], None, "already holds a search"),
    ] {
        let mut c = Command::new(env!("CARGO_BIN_EXE_effnet"));
        c.args(["search", "--out", out])
            .args(&args)
            .env_remove("SLURM_ARRAY_TASK_ID")
            .env_remove("JOB_COMPLETION_INDEX");
        if let Some(value) = env {
            c.env("SLURM_ARRAY_TASK_ID", value);
        }
        let o = c.output().unwrap();
        assert!(!o.status.success());
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(
            e.contains(expected) && !e.contains("panicked"),
            "{args:?}: {e}"
        );
    }
    let o = effnet(&["search", "--out", dir.to_str().unwrap(), "--collect"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not a search folder"));
    // A Kubernetes search without a claim is refused before its folder exists.
    let o = search(
        &train,
        &val,
        &dir.join("k8s"),
        &["--kubernetes", dir.join("k.yaml").to_str().unwrap()],
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("--kubernetes needs --pvc"));
    assert!(!dir.join("k8s").exists());

    // Candidates that train on a GPU ask each scheduler for one.
    let gpu = |out: &str, extra: &[&str]| {
        search_json(
            &train,
            &val,
            &dir.join(out),
            &[&["--device", "wgpu"], extra].concat(),
        )
    };
    let manifest = dir.join("gpu.yaml");
    gpu(
        "gpu-k8s",
        &["--kubernetes", manifest.to_str().unwrap(), "--pvc", "runs"],
    );
    validate_against_schema(&manifest);
    let container = &documents(&manifest)[0]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["resources"]["limits"]["nvidia.com/gpu"], 1);
    let written = gpu("gpu-slurm", &["--slurm", "--dry-run"]);
    let script = std::fs::read_to_string(written["array_script"].as_str().unwrap()).unwrap();
    assert!(script.contains("#SBATCH --gpus-per-task=1"), "{script}");
    std::fs::remove_dir_all(&dir).unwrap();
}
