//! The `effnet` binary end to end: JSON fields, the solver's answer, the plot, and clear errors on bad input.

use serde_json::Value;
use std::process::{Command, Output};

fn effnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_effnet"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn json(args: &[&str]) -> Value {
    let out = effnet(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("valid JSON")
}

fn fails_cleanly(args: &[&str], needle: &str) {
    let out = effnet(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    assert!(
        stderr.contains(needle),
        "{args:?}: expected `{needle}` in: {stderr}"
    );
}

#[test]
fn info_json_has_the_documented_fields() {
    let v = json(&["info", "b0", "--json"]);
    for field in [
        "width",
        "depth",
        "resolution",
        "params",
        "macs",
        "weight_bytes",
        "inference_activation_bytes",
        "training_activation_bytes",
        "stages",
    ] {
        assert!(v.get(field).is_some(), "missing {field}");
    }
    assert_eq!(v["params"], 5_288_548);
    assert_eq!(
        v["stages"].as_array().unwrap().len(),
        9,
        "stem + 7 stages + head, as Table 1"
    );
    let with_layers = json(&["info", "lite0", "--layers", "--json"]);
    let layers = with_layers["layers"].as_array().unwrap();
    let sum: u64 = layers.iter().map(|l| l["params"].as_u64().unwrap()).sum();
    assert_eq!(sum, 4_652_008);
}

#[test]
fn custom_networks_come_from_phi_or_from_w_d_r() {
    let by_phi = json(&["info", "--phi", "1", "--json"]);
    assert_eq!(by_phi["resolution"], 258);
    let by_dims = json(&[
        "info",
        "--width",
        "1.1",
        "--depth",
        "1.2",
        "--resolution",
        "260",
        "--json",
    ]);
    assert_eq!(
        by_dims["params"], 9_109_994,
        "w 1.1, d 1.2 is B2's architecture"
    );
    let small = json(&["info", "--phi", "-2", "--json"]);
    assert!(small["macs"].as_u64().unwrap() < 386_000_000);
    let blocks = json(&[
        "info",
        "--base",
        "r1_k3_s11_e1_i32_o16_se0.25,r2_k3_s22_e6_i16_o24_se0.25",
        "--json",
    ]);
    assert_eq!(blocks["stages"].as_array().unwrap().len(), 4);
}

#[test]
fn bench_json_reports_the_median_latency_and_its_throughput() {
    let args = |model: &[&'static str]| {
        let mut a = vec!["bench"];
        a.extend_from_slice(model);
        a.extend([
            "--batch",
            "2",
            "--threads",
            "1",
            "--resolution",
            "64",
            "--warmup",
            "1",
            "--runs",
            "3",
            "--min-seconds",
            "0",
            "--json",
        ]);
        a
    };
    let v = json(&args(&["--model", "b0"]));
    assert_eq!(v["resolution"], 64);
    assert_eq!(v["batch"], 2);
    assert_eq!(v["threads"], 1);
    assert!(v["runs"].as_u64().unwrap() >= 3);
    let median = v["ms_per_batch"].as_f64().unwrap();
    let best = v["ms_per_batch_min"].as_f64().unwrap();
    assert!(
        0.0 < best && best <= median,
        "best {best} ms, median {median} ms"
    );
    let throughput = v["images_per_sec"].as_f64().unwrap();
    assert!(
        (throughput * median / 2e3 - 1.0).abs() < 1e-9,
        "2 images per median batch"
    );
    let info = json(&["info", "b0", "--resolution", "64", "--json"]);
    assert_eq!(
        v["macs_per_image"], info["macs"],
        "the network `info` describes"
    );
    let positional = json(&args(&["b0"]));
    assert_eq!(positional["macs_per_image"], v["macs_per_image"]);
    fails_cleanly(&args(&["b0", "--model", "b1"]), "cannot be used with");
}

#[test]
fn scale_reports_the_formula_next_to_the_real_ratio() {
    let v = json(&["scale", "--phi", "2", "--json"]);
    let factor = v["flops_factor"].as_f64().unwrap();
    assert!((factor - 1.2 * 1.21 * 1.3225).abs() < 1e-9);
    assert!((v["predicted_macs_ratio"].as_f64().unwrap() - factor * factor).abs() < 1e-9);
    let real = v["macs"].as_f64().unwrap() / v["base_macs"].as_f64().unwrap();
    assert!((v["real_macs_ratio"].as_f64().unwrap() - real).abs() < 1e-12);
}

#[test]
fn fit_meets_the_budget_and_the_next_step_breaks_it() {
    let v = json(&["fit", "--max-macs", "1.8e9", "--json"]);
    for field in [
        "phi",
        "width",
        "depth",
        "resolution",
        "params",
        "macs",
        "inference_activation_bytes",
        "predicted_top1",
    ] {
        assert!(v.get(field).is_some(), "missing {field}");
    }
    assert!(v["macs"].as_u64().unwrap() <= 1_800_000_000);
    assert!(v["next_macs"].as_u64().unwrap() > 1_800_000_000);
    let top1 = v["predicted_top1"].as_f64().unwrap();
    assert!(
        top1 > 80.1 && top1 < 81.6 + 1e-9,
        "between B2 and B3: {top1}"
    );
    let names: Vec<&str> = v["fitting_variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b0", "b1", "b2"]);
}

#[test]
fn compare_draws_a_png() {
    let dir = std::env::temp_dir().join(format!("effnet-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("acc.png");
    let rows = json(&[
        "compare",
        "b0",
        "b4",
        "lite0",
        "--plot",
        png.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(rows.as_array().unwrap().len(), 3);
    let b4 = &rows[1];
    assert!(
        b4["real_over_formula"].as_f64().unwrap() > 1.0,
        "rounding makes B4 dearer than the formula"
    );
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert!(bytes.len() > 10_000, "a real picture, not an empty canvas");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_is_a_clear_error_not_a_panic() {
    fails_cleanly(&["info", "b9"], "unknown model `b9`");
    fails_cleanly(&["info", "--width", "-1"], "width");
    fails_cleanly(&["info", "--depth", "1e9"], "depth");
    fails_cleanly(&["info", "--resolution", "2"], "resolution");
    fails_cleanly(&["scale", "--phi", "1", "--alpha", "0.5"], "alpha");
    fails_cleanly(&["scale", "--phi", "nan"], "phi");
    fails_cleanly(&["info", "--base", "r1_k3_s1_e1_i32_o16"], "two digits");
    fails_cleanly(
        &[
            "info",
            "--base",
            "r1_k3_s11_e1_i32_o16,r1_k3_s22_e6_i24_o24",
        ],
        "stage 1",
    );
    fails_cleanly(&["fit", "--max-macs", "1000"], "smallest");
    fails_cleanly(&["fit"], "no budget");
    fails_cleanly(&["fit", "--max-macs", "lots"], "not a number");
    fails_cleanly(&["compare", "b0", "resnet50"], "unknown model `resnet50`");
    fails_cleanly(
        &["compare", "--plot", "/nonexistent-dir/x.png"],
        "nonexistent-dir",
    );
}

#[test]
fn a_reader_that_goes_away_does_not_make_effnet_panic() {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_effnet"))
        .args(["info", "l2", "--layers"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // like `effnet info l2 --layers | head -1`
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `EFFNET_ISA` forces the kernels that `bench` reports and `info` names, and an instruction set that
/// cannot run here (or that does not exist) is a clear error naming those that can.
#[test]
fn effnet_isa_forces_the_kernels_or_fails_naming_the_ones_that_run() {
    let with_isa = |isa: &str, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_effnet"))
            .env("EFFNET_ISA", isa)
            .args(args)
            .output()
            .expect("the binary runs")
    };
    let bench = [
        "bench",
        "b0",
        "--resolution",
        "32",
        "--warmup",
        "0",
        "--runs",
        "1",
        "--min-seconds",
        "0",
        "--json",
    ];
    let out = with_isa("portable", &bench);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(v["isa"], "portable");
    let out = with_isa("portable", &["info", "b0", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(v["isa"], "portable");
    let default = json(&["info", "b0", "--json"]);
    let native = default["isa"].as_str().unwrap();
    assert!(
        ["avx512", "avx2", "neon", "portable"].contains(&native),
        "{native}"
    );
    for bad in [
        "mmx",
        if cfg!(target_arch = "x86_64") {
            "neon"
        } else {
            "avx2"
        },
    ] {
        let out = with_isa(bad, &["info", "b0"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && !stderr.contains("panicked"),
            "{bad}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("EFFNET_ISA={bad}")) && stderr.contains("portable"),
            "{bad}: {stderr}"
        );
    }
}
