//! The engine against the independent numpy float64 reference (`tools/reference.py`, fixtures in
//! `fixtures/reference_logits.json`): every logit within 1e-3 absolute, and the same top-5 in the same order.

mod common;

use common::{hash_input, lite0, random_engine, root};
use effnet_arch::Padding;
use effnet_engine::{Engine, FeatureMap};
use serde_json::Value;

const TOLERANCE: f32 = 1e-3;

fn case(name: &str) -> Value {
    let text = std::fs::read_to_string(root().join("fixtures/reference_logits.json"))
        .expect("fixtures present");
    let all: Value = serde_json::from_str(&text).unwrap();
    all["cases"][name].clone()
}

/// The un-resized centre crop of an image, `(pixel - 127) / 128`, as the reference defines it.
fn centre_crop(file: &str, res: usize) -> FeatureMap {
    let path = root().join("assets/images").join(file);
    let img = image::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/fetch-assets)", path.display()))
        .to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (top, left) = ((h - res) / 2, (w - res) / 2);
    let mut data = Vec::with_capacity(res * res * 3);
    for y in 0..res {
        for x in 0..res {
            let px = img.get_pixel((left + x) as u32, (top + y) as u32);
            data.extend(px.0.iter().map(|&v| (f32::from(v) - 127.0) / 128.0));
        }
    }
    FeatureMap::new(&data, res, res, 3)
}

fn top5(logits: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    order.truncate(5);
    order
}

fn check(name: &str, engine: &Engine, input: &FeatureMap) {
    compare(name, name, &engine.logits(input).unwrap());
    // One image on two or three threads takes the intra-image parallel path.
    for threads in [2, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let split = pool
            .install(|| engine.logits_batch(std::slice::from_ref(input)))
            .pop()
            .unwrap()
            .unwrap();
        compare(
            name,
            &format!("{name} (split across {threads} threads)"),
            &split,
        );
    }
    // Called from outside any pool: the global one (split too, where the machine has several cores).
    let global = engine
        .logits_batch(std::slice::from_ref(input))
        .pop()
        .unwrap()
        .unwrap();
    compare(name, &format!("{name} (global pool)"), &global);
}

fn compare(case_name: &str, label: &str, got: &[f32]) {
    let reference = case(case_name);
    let expected: Vec<f32> = reference["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let worst = got
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("{label}: max |logit - reference| = {worst:.2e}");
    assert!(
        worst <= TOLERANCE,
        "{label}: max |logit - reference| = {worst}"
    );
    let want: Vec<usize> = reference["top5"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(top5(got), want, "{label}: top-5");
}

#[test]
fn real_lite0_matches_the_reference_on_the_hash_input_and_photos() {
    let engine = lite0();
    check("lite0_hash", &engine, &hash_input(224));
    for (name, file) in [
        ("lite0_coffee", "coffee.png"),
        ("lite0_camera", "camera.png"),
        ("lite0_chelsea", "chelsea.png"),
    ] {
        check(name, &engine, &centre_crop(file, 224));
    }
}

#[test]
fn a_batch_of_images_matches_the_references_image_by_image() {
    // Several images: the images run on separate threads and the classifier is one GEMM for all.
    let engine = lite0();
    let names = [
        "lite0_hash",
        "lite0_coffee",
        "lite0_camera",
        "lite0_chelsea",
    ];
    let inputs = [
        hash_input(224),
        centre_crop("coffee.png", 224),
        centre_crop("camera.png", 224),
        centre_crop("chelsea.png", 224),
    ];
    let batch = engine.logits_batch(&inputs);
    assert_eq!(batch.len(), names.len());
    for (name, logits) in names.iter().zip(batch) {
        compare(name, &format!("{name} (in a batch of 4)"), &logits.unwrap());
    }
    // An odd batch with a bad image in it: that image alone fails, the others keep their places.
    let bad = FeatureMap::new(&[0.0; 8 * 8 * 2], 8, 8, 2);
    let odd = [inputs[1].clone(), bad, inputs[3].clone()];
    let batch = engine.logits_batch(&odd);
    assert_eq!(batch.len(), 3);
    assert!(batch[1].is_err(), "a 2-channel image is rejected");
    compare(
        "lite0_coffee",
        "lite0_coffee (first of 3)",
        batch[0].as_ref().unwrap(),
    );
    compare(
        "lite0_chelsea",
        "lite0_chelsea (last of 3)",
        batch[2].as_ref().unwrap(),
    );
}

#[test]
fn random_b0_and_b3_match_with_tf_same_padding() {
    check(
        "b0_random_tf-same",
        &random_engine("b0", Padding::TfSame, 1e-3),
        &hash_input(224),
    );
    check(
        "b3_random_tf-same",
        &random_engine("b3", Padding::TfSame, 1e-3),
        &hash_input(300),
    );
}

#[test]
fn random_b0_matches_with_symmetric_padding_and_torch_epsilon() {
    check(
        "b0_random_symmetric",
        &random_engine("b0", Padding::Symmetric, 1e-5),
        &hash_input(224),
    );
}
