//! `effnet explain` on the real Lite0 weights: the files it writes (overlay PNGs at the photo's size,
//! `.npy` maps at the head's resolution), the JSON it prints, and its choice of classes, layers and
//! methods. The maps' own correctness (gradients against finite differences, the sanity checks of
//! Adebayo et al.) is tested in the explain crate.

mod common;

use common::{asset_image, effnet, json, lite0_pth, scratch};
use std::path::Path;
use std::process::Output;

/// `effnet explain` on Lite0 into `out`, with `args` after the common options.
fn explain(out: &Path, args: &[&str]) -> Output {
    let weights = lite0_pth();
    let mut all = vec![
        "explain",
        "--weights",
        weights.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    all.extend(args);
    effnet(&all)
}

fn npy_shape(path: &str) -> Vec<u64> {
    let bytes = std::fs::read(path).unwrap();
    npyz::NpyFile::new(&bytes[..]).unwrap().shape().to_vec()
}

#[test]
fn explain_writes_overlays_and_maps_and_lists_them() {
    let dir = scratch("explain");
    let out = dir.join("cams");
    let (coffee, cat) = (asset_image("coffee"), asset_image("chelsea"));
    let listed = json(&explain(&out, &["--top", "2", "--json", &coffee, &cat]));
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 4, "two classes of two images");
    assert_eq!(listed[0]["class"], 967);
    assert_eq!(listed[0]["label"], "espresso");
    assert!([281, 282, 285].contains(&listed[2]["class"].as_u64().unwrap()));
    for entry in listed {
        let prob = entry["prob"].as_f64().unwrap();
        assert!(prob > 0.0 && prob < 1.0);
        let peak = entry["peak"].as_array().unwrap();
        assert!(peak
            .iter()
            .all(|v| (0.0..=1.0).contains(&v.as_f64().unwrap())));
        let mass: f64 = ["top_left", "top_right", "bottom_left", "bottom_right"]
            .iter()
            .map(|q| entry["mass"][q].as_f64().unwrap())
            .sum();
        assert!((mass - 1.0).abs() < 1e-9, "{entry}");
        let overlay = entry["overlay"].as_str().unwrap();
        let (w, h) = image::image_dimensions(overlay).unwrap();
        let source = image::image_dimensions(entry["file"].as_str().unwrap()).unwrap();
        assert_eq!((w, h), source, "the overlay has the photo's size");
        assert_eq!(npy_shape(entry["map"].as_str().unwrap()), [7, 7]);
    }
    assert!(out.join("coffee_967.png").exists() && !out.join("chelsea_967.png").exists());

    // A given class at an inner stage with Grad-CAM++: the map has that stage's resolution (stride 16).
    let listed = json(&explain(
        &out,
        &[
            "--class",
            "967",
            "--layer",
            "stage:5",
            "--method",
            "gradcam++",
            "--json",
            &coffee,
        ],
    ));
    assert_eq!(listed[0]["class"], 967);
    assert_eq!(npy_shape(listed[0]["map"].as_str().unwrap()), [14, 14]);

    let o = explain(&out, &["--layer", "stage:9", &coffee]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("stage:9 does not exist"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
