//! What the crate's unit tests share: deterministic inputs and the activations in f64.

use effnet_arch::variant::Activation;

/// `n` deterministic values in [-1, 1).
pub(crate) fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

/// `activation` in f64, from its definition.
pub(crate) fn activate(activation: Option<Activation>, v: f64) -> f64 {
    match activation {
        None => v,
        Some(Activation::Swish) => v / (1.0 + (-v).exp()),
        Some(Activation::Relu6) => v.clamp(0.0, 6.0),
        Some(Activation::Sigmoid) => 1.0 / (1.0 + (-v).exp()),
    }
}
