//! Weights by name, end to end, against a stand-in for the Hugging Face hub and torchvision's host that the
//! test starts on 127.0.0.1 (`tests/hub_server.py`): the same top-5 as timm's evaluation transform and
//! network (`tools/timm_reference.py`, PIL and numpy float64) on real Lite0 weights in timm's layout, and
//! logits within 1e-4 on PNG photos (effnet resizes as PIL does, byte for byte) and 0.05 on a JPEG (the two
//! JPEG decoders differ by one 8-bit level in a few pixels); the cache layout `huggingface_hub` writes, shared both ways; no request when
//! the snapshot is complete; resumed and corrupted downloads; the hub's error answers; torchvision's hash.

mod common;

use common::{asset_image, lite0_pth, root, scratch};
use effnet_weights::layout::{params, Layout};
use effnet_weights::safetensors_io::{read_safetensors, write_safetensors};
use effnet_weights::{load, LoadOptions, Tensor};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

const LITE0_REPO: &str = "timm/tf_efficientnet_lite0.in1k";
/// Logits agree this closely when the decoded pixels are the same (PNG).
const LOGIT_TOLERANCE: f32 = 1e-4;
/// And this closely on a JPEG, which PIL's libjpeg and effnet's decoder round differently in a few pixels.
const JPEG_LOGIT_TOLERANCE: f32 = 0.05;

/// The stand-in server, stopped when dropped.
struct Server {
    child: Child,
    port: u16,
    root: PathBuf,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(dir: &Path) -> Self {
        let root = dir.join("server");
        std::fs::create_dir_all(root.join("hub")).unwrap();
        let (port_file, log) = (dir.join("port"), dir.join("requests.log"));
        let child = Command::new("python3")
            .arg(root_dir().join("crates/cli/tests/hub_server.py"))
            .args([&root, &port_file, &log])
            .spawn()
            .expect("python3 runs");
        let started = std::time::Instant::now();
        while !port_file.exists() {
            assert!(
                started.elapsed().as_secs() < 30,
                "the test server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let port = std::fs::read_to_string(&port_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        Self {
            child,
            port,
            root,
            log,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Publishes a repository with `config` and `weights` (and marker files such as `.gated`).
    fn repo(&self, name: &str, config: Option<&Value>, weights: Option<&Path>, markers: &[&str]) {
        let folder = self.root.join("hub").join(name);
        std::fs::create_dir_all(&folder).unwrap();
        if let Some(config) = config {
            std::fs::write(
                folder.join("config.json"),
                serde_json::to_vec_pretty(config).unwrap(),
            )
            .unwrap();
        }
        if let Some(weights) = weights {
            std::fs::copy(weights, folder.join("model.safetensors")).unwrap();
        }
        for marker in markers {
            std::fs::write(folder.join(marker), b"").unwrap();
        }
    }

    /// The requests logged so far.
    fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

fn root_dir() -> PathBuf {
    root()
}

/// A clean environment for `effnet`: its caches under `dir`, the hub at `endpoint`, no proxy.
fn run(dir: &Path, endpoint: &str, extra: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_effnet"));
    command
        .args(args)
        .env("HF_HOME", dir.join("hf"))
        .env("TORCH_HOME", dir.join("torch"))
        .env("HF_ENDPOINT", endpoint)
        .env("NO_PROXY", "127.0.0.1")
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_HUB_CACHE")
        .env_remove("XDG_CACHE_HOME");
    for (k, v) in extra {
        command.env(k, v);
    }
    command.output().expect("the binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok_json(o: &Output) -> Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The real Lite0 weights written in timm's key layout (`tf_efficientnet_lite0`), as a hub repository
/// holds them.
fn lite0_in_timm_layout(dir: &Path) -> PathBuf {
    let weights = load(&lite0_pth(), &LoadOptions::default()).unwrap();
    let timm: BTreeMap<String, Tensor> = params(&weights.plan)
        .iter()
        .map(|p| {
            (
                Layout::Timm.key(&weights.plan, p),
                weights.tensors[&p.name].clone(),
            )
        })
        .collect();
    let path = dir.join("lite0-timm.safetensors");
    write_safetensors(&path, &timm, HashMap::new()).unwrap();
    path
}

fn fixture() -> Value {
    let text = std::fs::read_to_string(root_dir().join("fixtures/timm_reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Predicts `image` with `weights` and compares the top-5 and logits with the fixture case.
fn check_case(dir: &Path, endpoint: &str, weights: &str, case: &Value) -> f32 {
    let image = asset_image(case["image"].as_str().unwrap().split('.').next().unwrap());
    let image = if case["image"].as_str().unwrap().ends_with(".jpg") {
        image.replace(".png", ".jpg")
    } else {
        image
    };
    let out = ok_json(&run(
        dir,
        endpoint,
        &[],
        &[
            "predict",
            "--weights",
            weights,
            "--logits",
            "--json",
            &image,
        ],
    ));
    let got: Vec<f32> = serde_json::from_value(out[0]["logits"].clone()).unwrap();
    let want: Vec<f32> = serde_json::from_value(case["logits"].clone()).unwrap();
    let top: Vec<u64> = out[0]["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["class"].as_u64().unwrap())
        .collect();
    let want_top: Vec<u64> = serde_json::from_value(case["top5"].clone()).unwrap();
    assert_eq!(top, want_top, "{weights} on {image}: top-5");
    let diff = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let tolerance = if image.ends_with(".jpg") {
        JPEG_LOGIT_TOLERANCE
    } else {
        LOGIT_TOLERANCE
    };
    assert!(
        diff <= tolerance,
        "{weights} on {image}: max |logit diff| {diff}"
    );
    eprintln!("{weights} on {image}: max |logit diff| from the timm reference {diff:e}");
    diff
}

#[test]
fn a_hub_name_predicts_as_timm_does_and_caches_as_huggingface_hub_does() {
    let dir = scratch("hub-lite0");
    let server = Server::start(&dir);
    let weights = lite0_in_timm_layout(&dir);
    let cases = fixture()["cases"].clone();
    server.repo(
        LITE0_REPO,
        Some(&cases["center_coffee"]["config"]),
        Some(&weights),
        &[],
    );
    let name = format!("hf:{LITE0_REPO}");
    let mut worst = 0f32;
    for case in ["center_coffee", "center_camera"] {
        worst = worst.max(check_case(&dir, &server.endpoint(), &name, &cases[case]));
    }
    eprintln!("largest logit difference from the timm reference: {worst}");

    // The cache as huggingface_hub lays it out.
    let repo = dir.join("hf/hub/models--timm--tf_efficientnet_lite0.in1k");
    let commit = std::fs::read_to_string(repo.join("refs/main")).unwrap();
    assert_eq!(commit.len(), 40);
    let sha = effnet_weights::load::sha256_file(&weights).unwrap();
    let link = repo
        .join("snapshots")
        .join(&commit)
        .join("model.safetensors");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        PathBuf::from(format!("../../blobs/{sha}"))
    );
    assert!(repo.join("blobs").join(&sha).is_file());
    assert!(repo
        .join("snapshots")
        .join(&commit)
        .join("config.json")
        .is_file());

    // A complete snapshot makes no request, and works offline with the hub gone.
    let before = server.requests().len();
    check_case(&dir, &server.endpoint(), &name, &cases["center_coffee"]);
    assert_eq!(
        server.requests().len(),
        before,
        "no request for a complete snapshot"
    );
    let offline = [("HF_HUB_OFFLINE", "1")];
    let o = run(
        &dir,
        "http://127.0.0.1:9",
        &offline,
        &["predict", "--weights", &name, &asset_image("coffee")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_test_size_and_every_crop_mode_follow_timm() {
    let dir = scratch("hub-modes");
    let server = Server::start(&dir);
    let weights = lite0_in_timm_layout(&dir);
    let cases = fixture()["cases"].clone();
    for (repo, case) in [
        ("timm/lite0-squash", "test_size_squash_chelsea"),
        ("timm/lite0-border", "border_rocket"),
    ] {
        server.repo(repo, Some(&cases[case]["config"]), Some(&weights), &[]);
        check_case(
            &dir,
            &server.endpoint(),
            &format!("hf:{repo}"),
            &cases[case],
        );
    }
    // The test size is the default; --resolution still overrides it.
    let converted = dir.join("squash.safetensors");
    let o = run(
        &dir,
        &server.endpoint(),
        &[],
        &[
            "convert",
            "hf:timm/lite0-squash",
            converted.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let metadata = read_safetensors(&converted).unwrap().metadata;
    assert_eq!(metadata["resolution"], "256", "test_input_size");
    assert_eq!(
        (
            metadata["crop_pct"].as_str(),
            metadata["crop_mode"].as_str()
        ),
        ("1.0", "squash")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn downloads_resume_and_a_corrupted_one_is_refused() {
    let dir = scratch("hub-resume");
    let server = Server::start(&dir);
    let weights = lite0_in_timm_layout(&dir);
    let config = fixture()["cases"]["center_coffee"]["config"].clone();
    let sha = effnet_weights::load::sha256_file(&weights).unwrap();
    let size = std::fs::metadata(&weights).unwrap().len();
    let convert = |name: &str, out: &str| {
        run(
            &dir,
            &server.endpoint(),
            &[],
            &["convert", name, dir.join(out).to_str().unwrap()],
        )
    };

    // The transfer breaks off halfway: the download resumes from where it stopped, with a range.
    server.repo("timm/cut", Some(&config), Some(&weights), &[".cut"]);
    let o = convert("hf:timm/cut", "cut.safetensors");
    assert!(o.status.success(), "{}", stderr(&o));
    let resumed = server
        .requests()
        .into_iter()
        .any(|r| r.contains(&format!("/cdn/{sha}")) && !r.ends_with("range=-"));
    assert!(
        resumed,
        "a range request resumed the download: {:?}",
        server.requests()
    );
    let blob = dir.join("hf/hub/models--timm--cut/blobs").join(&sha);
    assert_eq!(effnet_weights::load::sha256_file(&blob).unwrap(), sha);

    // A partial file from an interrupted run is continued, not restarted.
    server.repo("timm/partial", Some(&config), Some(&weights), &[]);
    let blobs = dir.join("hf/hub/models--timm--partial/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let head = std::fs::read(&weights).unwrap()[..100_000].to_vec();
    std::fs::write(blobs.join(format!("{sha}.incomplete")), head).unwrap();
    let o = convert("hf:timm/partial", "partial.safetensors");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(server
        .requests()
        .iter()
        .any(|r| r.ends_with("range=bytes=100000-")));
    assert_eq!(std::fs::metadata(blobs.join(&sha)).unwrap().len(), size);

    // Bytes that do not hash to the announced sha256 never take the blob's name.
    server.repo("timm/corrupt", Some(&config), Some(&weights), &[".corrupt"]);
    let o = convert("hf:timm/corrupt", "corrupt.safetensors");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("sha256"), "{}", stderr(&o));
    let blobs = dir.join("hf/hub/models--timm--corrupt/blobs");
    let left: Vec<_> = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.iter().all(|n| n.to_string_lossy().len() == 40),
        "only config.json's blob: {left:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hub_errors_say_what_to_do() {
    let dir = scratch("hub-errors");
    let server = Server::start(&dir);
    let weights = lite0_in_timm_layout(&dir);
    let config = fixture()["cases"]["center_coffee"]["config"].clone();
    let endpoint = server.endpoint();
    let predict = |name: &str, extra: &[(&str, &str)], endpoint: &str| {
        run(
            &dir,
            endpoint,
            extra,
            &["predict", "--weights", name, &asset_image("coffee")],
        )
    };
    let message = stderr(&predict("hf:timm/nope", &[], &endpoint));
    assert!(
        message.contains("does not exist, or is private or gated"),
        "{message}"
    );
    let message = stderr(&predict(
        "hf:timm/nope",
        &[("HF_TOKEN", "secret")],
        &endpoint,
    ));
    assert!(
        message.contains("no such repository") && message.contains("404"),
        "{message}"
    );

    server.repo("timm/gated", Some(&config), Some(&weights), &[".gated"]);
    let message = stderr(&predict("hf:timm/gated", &[], &endpoint));
    assert!(
        message.contains("is gated") && message.contains("HF_TOKEN"),
        "{message}"
    );
    let o = predict("hf:timm/gated", &[("HF_TOKEN", "secret")], &endpoint);
    assert!(o.status.success(), "{}", stderr(&o));
    let requests = server.requests();
    assert!(requests
        .iter()
        .any(|r| r.contains("/timm/gated/resolve/") && r.contains("auth=yes")));
    assert!(
        requests
            .iter()
            .filter(|r| r.contains("/cdn/"))
            .all(|r| r.contains("auth=no")),
        "the token stays with the hub: {requests:?}"
    );

    let message = stderr(&predict("hf:timm/nothing-here", &[], "http://127.0.0.1:9"));
    assert!(
        message.contains("cannot reach") && message.contains("set HF_HUB_OFFLINE=1"),
        "{message}"
    );
    let message = stderr(&predict(
        "hf:timm/nothing-here",
        &[("HF_HUB_OFFLINE", "1")],
        &endpoint,
    ));
    assert!(message.contains("not in the cache"), "{message}");

    let mut resnet = config.clone();
    resnet["architecture"] = "resnet50".into();
    server.repo("timm/resnet50.a1_in1k", Some(&resnet), Some(&weights), &[]);
    let message = stderr(&predict("hf:timm/resnet50.a1_in1k", &[], &endpoint));
    assert!(message.contains("not an EfficientNet"), "{message}");
    server.repo("timm/no-config", None, Some(&weights), &[]);
    let message = stderr(&predict("hf:timm/no-config", &[], &endpoint));
    assert!(message.contains("no config.json"), "{message}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn torchvision_names_use_torchs_cache_and_check_the_published_hash() {
    let dir = scratch("hub-torchvision");
    let server = Server::start(&dir);
    let file = "efficientnet_b0_rwightman-3dd342df.pth";
    // Served bytes whose sha256 cannot start with the published prefix are refused and removed.
    std::fs::create_dir_all(server.root.join("torchvision")).unwrap();
    std::fs::write(
        server.root.join("torchvision").join(file),
        b"not the weights",
    )
    .unwrap();
    let base = [(
        "EFFNET_TORCHVISION_URL",
        format!("{}/models", server.endpoint()),
    )];
    let extra: Vec<(&str, &str)> = base.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let o = run(
        &dir,
        &server.endpoint(),
        &extra,
        &[
            "predict",
            "--weights",
            "torchvision:efficientnet_b0",
            &asset_image("coffee"),
        ],
    );
    assert!(stderr(&o).contains("published 3dd342df"), "{}", stderr(&o));
    let checkpoints = dir.join("torch/hub/checkpoints");
    assert_eq!(
        std::fs::read_dir(&checkpoints).unwrap().count(),
        0,
        "nothing left behind"
    );

    // A file already in torch's cache is used as torchvision would, with its enum's transform.
    let plan =
        effnet_arch::resolve(&effnet_arch::Variant::by_name("b0").unwrap().config()).unwrap();
    let canonical = effnet_weights::random::random_weights(&plan, 1);
    let torchvision: BTreeMap<String, Tensor> = params(&plan)
        .iter()
        .map(|p| {
            (
                Layout::Torchvision.key(&plan, p),
                canonical[&p.name].clone(),
            )
        })
        .collect();
    write_safetensors(&checkpoints.join(file), &torchvision, HashMap::new()).unwrap();
    let before = server.requests().len();
    let out = dir.join("tv.safetensors");
    let o = run(
        &dir,
        &server.endpoint(),
        &extra,
        &[
            "convert",
            "torchvision:efficientnet_b0",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        server.requests().len(),
        before,
        "no request for a cached checkpoint"
    );
    let m = read_safetensors(&out).unwrap().metadata;
    // torchvision's EfficientNet_B0_Weights.IMAGENET1K_V1: crop 224 of a 256 resize, bicubic.
    assert_eq!(
        (
            m["resolution"].as_str(),
            m["crop_pct"].as_str(),
            m["crop_mode"].as_str(),
            m["interpolation"].as_str()
        ),
        ("224", "0.875", "center", "bicubic")
    );
    assert_eq!(m["padding"], "symmetric");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn huggingface_hub_and_effnet_share_the_cache_both_ways() {
    let python = root_dir().join("assets/python");
    assert!(
        python.join("huggingface_hub").is_dir(),
        "run scripts/fetch-assets"
    );
    let dir = scratch("hub-share");
    let server = Server::start(&dir);
    let weights = lite0_in_timm_layout(&dir);
    let config = fixture()["cases"]["center_coffee"]["config"].clone();
    server.repo(LITE0_REPO, Some(&config), Some(&weights), &[]);
    server.repo("timm/second", Some(&config), Some(&weights), &[]);
    let download = |repo: &str, offline: bool| -> Output {
        let script = "import sys; from huggingface_hub import hf_hub_download as d; \
                      print(d(sys.argv[1], 'model.safetensors')); print(d(sys.argv[1], 'config.json'))";
        let mut c = Command::new("python3");
        c.args(["-c", script, repo])
            .env("PYTHONPATH", &python)
            .env("HF_HOME", dir.join("hf"))
            .env("HF_ENDPOINT", server.endpoint())
            .env("NO_PROXY", "127.0.0.1")
            .env("HF_HUB_DISABLE_TELEMETRY", "1")
            .env_remove("HF_HUB_CACHE");
        if offline {
            c.env("HF_HUB_OFFLINE", "1");
        }
        c.output().unwrap()
    };
    // effnet downloads, huggingface_hub finds the files offline in the same snapshot.
    let o = run(
        &dir,
        &server.endpoint(),
        &[],
        &[
            "predict",
            "--weights",
            &format!("hf:{LITE0_REPO}"),
            &asset_image("coffee"),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = download(LITE0_REPO, true);
    assert!(
        o.status.success(),
        "huggingface_hub offline: {}",
        stderr(&o)
    );
    let printed = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        printed.contains("models--timm--tf_efficientnet_lite0.in1k/snapshots/"),
        "{printed}"
    );
    // huggingface_hub downloads, effnet runs it offline without a request.
    let o = download("timm/second", false);
    assert!(o.status.success(), "huggingface_hub: {}", stderr(&o));
    let before = server.requests().len();
    let offline = [("HF_HUB_OFFLINE", "1")];
    let o = run(
        &dir,
        &server.endpoint(),
        &offline,
        &[
            "predict",
            "--weights",
            "hf:timm/second",
            &asset_image("coffee"),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(server.requests().len(), before);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_repository_without_model_safetensors_falls_back_to_pytorch_model_bin() {
    let dir = scratch("hub-bin");
    let server = Server::start(&dir);
    let weights = lite0_in_timm_layout(&dir);
    let cases = fixture()["cases"].clone();
    server.repo(
        "timm/bin-only",
        Some(&cases["center_coffee"]["config"]),
        None,
        &[],
    );
    // The loader reads by content, so the timm-layout weights serve as the .bin here.
    std::fs::copy(
        &weights,
        server.root.join("hub/timm/bin-only/pytorch_model.bin"),
    )
    .unwrap();
    check_case(
        &dir,
        &server.endpoint(),
        "hf:timm/bin-only",
        &cases["center_coffee"],
    );
    let requests = server.requests();
    assert!(requests
        .iter()
        .any(|r| r.contains("/resolve/main/model.safetensors")));
    assert!(requests.iter().any(|r| r.contains("GET /cdn/")));
    let snapshot = dir.join("hf/hub/models--timm--bin-only/snapshots");
    let commit = std::fs::read_dir(&snapshot)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(commit.join("pytorch_model.bin").is_file());
    std::fs::remove_dir_all(&dir).unwrap();
}
