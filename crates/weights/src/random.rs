//! Deterministic pseudo-random weights for any plan, so benchmarks and exactness tests need no download.
//!
//! The generator is a documented formula, reproduced independently by `tools/reference.py`:
//! for the canonical parameter `name` and element index `i`,
//! `h = fnv1a64(name) ^ (seed * 0x9E3779B97F4A7C15)`, `z = splitmix64_mix(h + (i + 1) * 0x9E3779B97F4A7C15)`,
//! `u = (z >> 40) / 2^24` in [0, 1), and the value is `f32(lo + (hi - lo) * u)` computed in f64 with:
//! conv weights `±sqrt(3 / fan_in)`, classifier weights `±50 * sqrt(3 / fan_in)` (so logits spread over several
//! units and absolute tolerances mean something), biases and BN shifts/means `±0.1`, BN scales `[0.5, 1.5]`,
//! BN variances `[0.5, 1.5]`.

use crate::layout::{params, Field};
use crate::tensor::{Tensor, TensorSource};
use effnet_arch::plan::LayerOp;
use effnet_arch::Plan;
use std::collections::{BTreeMap, HashMap};

/// Gain of the random classifier weights.
const CLASSIFIER_GAIN: f64 = 50.0;

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// FNV-1a, 64 bits: a stable hash of a name.
pub fn fnv1a64(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// splitmix64's finaliser: spreads the bits of `z` over the whole word.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The `i`-th uniform number in [0, 1) of the stream named `name`.
pub fn unit(name: &str, seed: u64, i: u64) -> f64 {
    let h = fnv1a64(name) ^ seed.wrapping_mul(GOLDEN);
    let z = mix(h.wrapping_add((i + 1).wrapping_mul(GOLDEN)));
    (z >> 40) as f64 / (1u64 << 24) as f64
}

/// Random weights generated on demand, tensor by tensor: a [`TensorSource`] that never holds more than the
/// tensor it hands out.
pub struct RandomWeights {
    /// Shape and value range of each canonical parameter, by name.
    params: HashMap<String, (Vec<usize>, (f64, f64))>,
    seed: u64,
}

impl RandomWeights {
    /// The random weights of every parameter of `plan` with `seed`.
    pub fn new(plan: &Plan, seed: u64) -> Self {
        let params = params(plan)
            .into_iter()
            .map(|p| {
                let fan_in: usize = p.shape.iter().skip(1).product();
                let range = match (p.field, p.layer.op) {
                    (Field::Weight, LayerOp::Conv(_)) => {
                        let a = (3.0 / fan_in as f64).sqrt();
                        (-a, a)
                    }
                    (Field::Weight, LayerOp::Linear(_)) => {
                        let a = CLASSIFIER_GAIN * (3.0 / fan_in as f64).sqrt();
                        (-a, a)
                    }
                    (Field::BnWeight | Field::BnVar, _) => (0.5, 1.5),
                    _ => (-0.1, 0.1),
                };
                (p.name, (p.shape, range))
            })
            .collect();
        Self { params, seed }
    }
}

impl TensorSource for RandomWeights {
    fn take(&mut self, name: &str) -> Option<Tensor> {
        let (shape, (lo, hi)) = self.params.get(name)?;
        let n: usize = shape.iter().product();
        let data = (0..n as u64)
            .map(|i| (lo + (hi - lo) * unit(name, self.seed, i)) as f32)
            .collect();
        Some(Tensor::new(shape.clone(), data))
    }
}

/// Canonical-layout random weights for every parameter of `plan`, all in memory.
pub fn random_weights(plan: &Plan, seed: u64) -> BTreeMap<String, Tensor> {
    let mut source = RandomWeights::new(plan, seed);
    params(plan)
        .into_iter()
        .map(|p| {
            let tensor = source.take(&p.name).expect("every parameter of the plan");
            (p.name, tensor)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_is_the_documented_formula() {
        // FNV-1a 64 test vectors from the algorithm's specification.
        assert_eq!(fnv1a64(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64("a"), 0xaf63_dc4c_8601_ec8c);
        let u: Vec<f64> = (0..1000).map(|i| unit("stem.weight", 0, i)).collect();
        assert!(u.iter().all(|&x| (0.0..1.0).contains(&x)));
        let mean = u.iter().sum::<f64>() / 1000.0;
        assert!((mean - 0.5).abs() < 0.03, "{mean}");
        assert_ne!(
            unit("stem.weight", 0, 0),
            unit("stem.weight", 1, 0),
            "seeds differ"
        );
    }
}
