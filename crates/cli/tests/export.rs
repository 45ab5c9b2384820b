//! `effnet export`, `effnet features` and `effnet info --features` end to end: what they write, what they
//! refuse before any work, and that both output forms of `features` hold the same maps. The numbers of the
//! exported graphs are checked against two ONNX runtimes in `crates/onnx/tests`, and the feature maps against
//! the float64 reference in `crates/engine/tests/reference_features.rs`.

mod common;

use common::{asset_image, effnet, json, lite0_pth, root, scratch};
use effnet_weights::safetensors_io::read_safetensors;
use std::process::Command;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn info_prints_timm_feature_info() {
    let levels = json(&effnet(&["info", "b0", "--features", "--json"]));
    let channels: Vec<u64> = levels
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["num_chs"].as_u64().unwrap())
        .collect();
    // timm's efficientnet_b0(features_only=True).feature_info.channels().
    assert_eq!(channels, [16, 24, 40, 112, 320]);
    assert_eq!(levels[3]["module"], "blocks.4");
    assert_eq!(levels[3]["reduction"], 16);
    let picked = json(&effnet(&[
        "info",
        "b0",
        "--features",
        "--location",
        "expansion",
        "--out-indices",
        "1,3",
        "--json",
    ]));
    assert_eq!(picked[0]["num_chs"], 144);
    assert_eq!(picked[1]["module"], "blocks.4.2.conv_pwl");
}

#[test]
fn export_writes_a_model_onnx_runtime_loads_with_the_metadata_it_needs() {
    let dir = scratch("export-lite0");
    let weights = dir.join("lite0.safetensors");
    let o = effnet(&[
        "convert",
        lite0_pth().to_str().unwrap(),
        weights.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let model = dir.join("lite0.onnx");
    let report = json(&effnet(&[
        "export",
        "--weights",
        weights.to_str().unwrap(),
        "--out",
        model.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(report["outputs"], serde_json::json!(["logits"]));
    assert_eq!(report["input_size"], 224);
    let operators: Vec<&str> = report["operators"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    // Lite0: ReLU6 as Clip, no squeeze-excite, classifier as Gemm; batch norm folded (no BatchNormalization).
    assert_eq!(
        operators,
        [
            "Add",
            "Clip",
            "Conv",
            "Flatten",
            "Gemm",
            "GlobalAveragePool"
        ]
    );
    let script = r#"
import json, sys, onnxruntime as ort, numpy as np
s = ort.InferenceSession(sys.argv[1])
x = np.zeros((2, 3, 224, 224), np.float32)
print(json.dumps({"shape": s.run(None, {"input": x})[0].shape, "metadata": s.get_modelmeta().custom_metadata_map}))
"#;
    let o = Command::new("python3")
        .args(["-c", script, model.to_str().unwrap()])
        .env("PYTHONPATH", root().join("assets/python"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let printed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        printed["shape"],
        serde_json::json!([2, 1000]),
        "a symbolic batch"
    );
    let m = &printed["metadata"];
    let values = |key: &str| -> Vec<f64> {
        m[key]
            .as_str()
            .unwrap()
            .split(',')
            .map(|v| v.parse().unwrap())
            .collect()
    };
    // The Lite preprocessing (TF Lite): (pixel - 127) / 128, bilinear, centre crop 0.875 at 224 px.
    for (mean, std) in values("mean").into_iter().zip(values("std")) {
        assert!((mean - 127.0 / 255.0).abs() < 1e-6 && (std - 128.0 / 255.0).abs() < 1e-6);
    }
    assert_eq!(
        (m["crop_pct"].as_str(), m["interpolation"].as_str()),
        (Some("0.875"), Some("bilinear"))
    );
    assert_eq!(m["resolution"], "224");
    let labels: Vec<String> = serde_json::from_str(m["labels"].as_str().unwrap()).unwrap();
    assert_eq!(
        (labels.len(), labels[0].as_str()),
        (1000, "tench, Tinca tinca")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn export_refuses_foreign_weights_and_missing_folders_before_any_work() {
    let dir = scratch("export-refusals");
    let o = effnet(&[
        "export",
        "--weights",
        lite0_pth().to_str().unwrap(),
        "--out",
        dir.join("m.onnx").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let message = stderr(&o);
    assert!(
        message.contains("not effnet weights") && message.contains("effnet convert"),
        "{message}"
    );
    assert_eq!(message.lines().count(), 1, "one line: {message}");
    assert!(!dir.join("m.onnx").exists());

    let random_b0 = |out: &std::path::Path, extra: &[&str]| {
        let out = out.to_str().unwrap();
        effnet(
            &[
                &[
                    "export",
                    "--model",
                    "b0",
                    "--random-seed",
                    "0",
                    "--out",
                    out,
                ],
                extra,
            ]
            .concat(),
        )
    };
    let o = random_b0(&dir.join("no/such/folder/m.onnx"), &[]);
    let message = stderr(&o);
    assert!(
        message.contains("the output folder does not exist"),
        "{message}"
    );
    let o = random_b0(&dir.join("m.onnx"), &["--opset", "12"]);
    assert!(stderr(&o).contains("13 to 24"), "{}", stderr(&o));
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(
        names.is_empty(),
        "nothing written, no temporary left: {names:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn features_writes_every_level_of_every_image_as_safetensors_or_npy() {
    let dir = scratch("features");
    let file = dir.join("features.safetensors");
    let images = [asset_image("coffee"), asset_image("camera")];
    let weights = lite0_pth();
    let mut args = vec!["features", "--weights", weights.to_str().unwrap()];
    args.extend(images.iter().map(String::as_str));
    let summary = json(&effnet(
        &[&args[..], &["--out", file.to_str().unwrap(), "--json"]].concat(),
    ));
    assert_eq!(summary["images"], 2);
    assert_eq!(
        summary["shapes"],
        serde_json::json!([
            [112, 112, 16],
            [56, 56, 24],
            [28, 28, 40],
            [14, 14, 112],
            [7, 7, 320]
        ])
    );
    let contents = read_safetensors(&file).unwrap();
    assert_eq!(contents.tensors.len(), 10);
    assert_eq!(
        contents.tensors["image1.feature_3"].shape,
        vec![14, 14, 112]
    );
    let files: Vec<String> = serde_json::from_str(&contents.metadata["files"]).unwrap();
    assert!(files[1].ends_with("camera.png"));
    let info: serde_json::Value = serde_json::from_str(&contents.metadata["feature_info"]).unwrap();
    assert_eq!(info[4]["reduction"], 32);

    let folder = dir.join("npy");
    std::fs::create_dir(&folder).unwrap();
    let o = effnet(
        &[
            &args[..],
            &["--out", folder.to_str().unwrap(), "--out-indices", "3"],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let npy =
        npyz::NpyFile::new(std::fs::File::open(folder.join("feature_3.npy")).unwrap()).unwrap();
    assert_eq!(npy.shape(), [2, 14, 14, 112]);
    let values = npy.into_vec::<f32>().unwrap();
    let per_image = 14 * 14 * 112;
    assert_eq!(
        values[per_image..],
        contents.tensors["image1.feature_3"].data[..]
    );
    assert!(
        !folder.join("feature_0.npy").exists(),
        "only the level asked for"
    );
    let listed = std::fs::read_to_string(folder.join("files.txt")).unwrap();
    assert_eq!(listed.lines().count(), 2);

    let o = effnet(
        &[
            &args[..],
            &["--out", file.to_str().unwrap(), "--out-indices", "5"],
        ]
        .concat(),
    );
    assert!(stderr(&o).contains("levels 0..=4"), "{}", stderr(&o));
    let o = effnet(&[&args[..], &["--out", dir.join("f.npz").to_str().unwrap()]].concat());
    assert!(
        stderr(&o).contains(".safetensors file or an existing folder"),
        "{}",
        stderr(&o)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
