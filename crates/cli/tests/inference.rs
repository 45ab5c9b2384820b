//! Real weights end to end through the binary: convert, predict (full decode -> crop -> resize -> normalise),
//! embed, and one clear error for every kind of bad input.

mod common;

use common::{effnet, lite0_pth, root, scratch};
use serde_json::Value;
use std::path::Path;
use std::process::Output;

fn image(name: &str) -> String {
    root()
        .join("assets/images")
        .join(name)
        .display()
        .to_string()
}

fn converted(dir: &Path) -> String {
    let out = dir.join("lite0.safetensors");
    let o = effnet(&[
        "convert",
        lite0_pth().to_str().unwrap(),
        out.to_str().unwrap(),
        "--license",
        "Apache-2.0",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["model"], "lite0");
    assert_eq!(report["layout"], "lukemelas");
    // torch hub names files after the first 8 hex digits of their sha256.
    assert!(
        report["source_sha256"]
            .as_str()
            .unwrap()
            .starts_with("57934424"),
        "{report}"
    );
    out.display().to_string()
}

fn predictions(args: &[&str]) -> (Vec<Value>, Output) {
    let o = effnet(args);
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    (v.as_array().unwrap().clone(), o)
}

fn top1(p: &Value) -> u64 {
    p["top"][0]["class"].as_u64().unwrap()
}

#[test]
fn lite0_recognises_the_photos_through_the_full_pipeline() {
    let dir = scratch("predict");
    let weights = converted(&dir);
    let (preds, o) = predictions(&[
        "predict",
        "--weights",
        &weights,
        "--json",
        &image("coffee.png"),
        &image("camera.png"),
        &image("chelsea.png"),
    ]);
    assert!(o.status.success());
    assert_eq!(top1(&preds[0]), 967, "coffee -> espresso");
    assert_eq!(top1(&preds[1]), 872, "camera -> tripod");
    assert!(
        [281, 282, 285].contains(&top1(&preds[2])),
        "chelsea -> a cat: {}",
        preds[2]
    );
    assert_eq!(preds[0]["top"][0]["label"], "espresso");
    let probs: Vec<f64> = preds[0]["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["prob"].as_f64().unwrap())
        .collect();
    assert_eq!(probs.len(), 5);
    assert!(probs.windows(2).all(|w| w[0] >= w[1]) && probs.iter().sum::<f64>() <= 1.0 + 1e-9);
    assert!(probs[0] > 0.8, "confident espresso: {}", probs[0]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_converted_file_and_the_original_pth_give_the_same_logits() {
    let dir = scratch("same");
    let weights = converted(&dir);
    let coffee = image("coffee.png");
    let (a, _) = predictions(&[
        "predict",
        "--weights",
        &weights,
        "--logits",
        "--json",
        &coffee,
    ]);
    let (b, _) = predictions(&[
        "predict",
        "--weights",
        lite0_pth().to_str().unwrap(),
        "--logits",
        "--json",
        &coffee,
    ]);
    assert_eq!(a[0]["logits"], b[0]["logits"]);
    assert_eq!(a[0]["logits"].as_array().unwrap().len(), 1000);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_batch_keeps_going_past_a_bad_image_and_rgba_input_works() {
    let dir = scratch("batch");
    let weights = converted(&dir);
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    image::open(image("coffee.png"))
        .unwrap()
        .to_rgba8()
        .save(images.join("a_coffee_rgba.png"))
        .unwrap();
    std::fs::write(images.join("b_broken.png"), b"not a png at all").unwrap();
    std::fs::copy(image("camera.png"), images.join("c_camera.png")).unwrap();
    let (preds, o) = predictions(&[
        "predict",
        "--weights",
        &weights,
        "--json",
        images.to_str().unwrap(),
    ]);
    assert!(
        !o.status.success(),
        "a failed image makes the exit code non-zero"
    );
    assert_eq!(preds.len(), 3);
    assert_eq!(top1(&preds[0]), 967, "RGBA decodes with its alpha dropped");
    assert!(
        preds[1]["error"].as_str().unwrap().contains("b_broken.png"),
        "{}",
        preds[1]
    );
    assert_eq!(
        top1(&preds[2]),
        872,
        "the image after the bad one is still classified"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("1 of 3 images"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn embed_writes_npy_with_its_file_list_and_json() {
    let dir = scratch("embed");
    let weights = converted(&dir);
    let npy = dir.join("emb.npy");
    let o = effnet(&[
        "embed",
        "--weights",
        &weights,
        "--out",
        npy.to_str().unwrap(),
        &image("coffee.png"),
        &image("camera.png"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(&npy).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let header = String::from_utf8_lossy(&bytes[10..128]);
    assert!(
        header.contains("'shape': (2, 1280") && header.contains("<f4"),
        "{header}"
    );
    let data_bytes = bytes.len() - (10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize);
    assert_eq!(data_bytes, 2 * 1280 * 4);
    let list = std::fs::read_to_string(dir.join("emb.txt")).unwrap();
    assert!(list.lines().next().unwrap().ends_with("coffee.png") && list.lines().count() == 2);

    let json = dir.join("emb.json");
    assert!(effnet(&[
        "embed",
        "--weights",
        &weights,
        "--out",
        json.to_str().unwrap(),
        &image("coffee.png")
    ])
    .status
    .success());
    let v: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let embedding = v[0]["embedding"].as_array().unwrap();
    assert_eq!(embedding.len(), 1280);
    assert!(
        embedding.iter().all(|x| x.as_f64().unwrap() >= -0.0),
        "pooled ReLU6 features are non-negative"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn fails_with(args: &[&str], needles: &[&str]) {
    let o = effnet(args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{args:?} should fail");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{args:?}: expected `{needle}` in: {stderr}"
        );
    }
    assert!(
        stderr
            .lines()
            .filter(|l| l.starts_with("effnet: error"))
            .count()
            == 1,
        "one clear line: {stderr}"
    );
}

#[test]
fn bad_weights_and_bad_inputs_are_one_clear_line_each() {
    let dir = scratch("bad");
    let pth = lite0_pth();
    let coffee = image("coffee.png");
    // Truncated and corrupt weights.
    let bytes = std::fs::read(&pth).unwrap();
    let truncated = dir.join("truncated.pth");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    fails_with(
        &["predict", "--weights", truncated.to_str().unwrap(), &coffee],
        &["truncated.pth", "truncated"],
    );
    let garbage = dir.join("garbage.safetensors");
    std::fs::write(&garbage, b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage").unwrap();
    fails_with(
        &["predict", "--weights", garbage.to_str().unwrap(), &coffee],
        &["garbage.safetensors"],
    );
    let empty = dir.join("empty.pth");
    std::fs::write(&empty, b"").unwrap();
    fails_with(
        &["predict", "--weights", empty.to_str().unwrap(), &coffee],
        &["empty.pth", "empty"],
    );
    fails_with(
        &["predict", "--weights", "/no/such/weights.pth", &coffee],
        &["/no/such/weights.pth"],
    );
    // Weights that do not fit the requested model name the tensor and the variant they fit.
    fails_with(
        &[
            "predict",
            "--weights",
            pth.to_str().unwrap(),
            "--model",
            "b0",
            &coffee,
        ],
        &["_blocks.0._se_reduce.weight", "fits lite0"],
    );
    // A layout nobody uses.
    let odd = dir.join("odd.pth.safetensors");
    let o = effnet(&["convert", pth.to_str().unwrap(), odd.to_str().unwrap()]);
    assert!(o.status.success());
    fails_with(
        &[
            "predict",
            "--weights",
            odd.to_str().unwrap(),
            "--layout",
            "timm",
            &coffee,
        ],
        &["odd.pth.safetensors", "conv_stem.weight"],
    );
    fails_with(
        &[
            "predict",
            "--weights",
            pth.to_str().unwrap(),
            "--layout",
            "keras",
            &coffee,
        ],
        &["unknown layout `keras`"],
    );
    // Inputs: an empty folder, a missing file.
    let folder = dir.join("nothing");
    std::fs::create_dir_all(&folder).unwrap();
    fails_with(
        &[
            "predict",
            "--weights",
            pth.to_str().unwrap(),
            folder.to_str().unwrap(),
        ],
        &["nothing", "no images"],
    );
    fails_with(
        &[
            "predict",
            "--weights",
            pth.to_str().unwrap(),
            "/no/such/image.png",
        ],
        &["/no/such/image.png"],
    );
    fails_with(
        &[
            "embed",
            "--weights",
            pth.to_str().unwrap(),
            "--out",
            "x.csv",
            &coffee,
        ],
        &["x.csv", ".npy or .json"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
