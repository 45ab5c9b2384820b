//! Initial weights for training from scratch, with the official EfficientNet initialisers: convolution
//! kernels `N(0, sqrt(2 / fan_out))` with `fan_out = k * k * out / groups`, classifier weights
//! `U(-1/sqrt(classes), 1/sqrt(classes))`, biases 0, batch-norm scale 1, shift 0, mean 0, variance 1.
//! A new classifier for fine-tuning uses PyTorch's `nn.Linear` default, `U(-1/sqrt(features),
//! 1/sqrt(features))` for weights and bias, so its first logits are small next to a pretrained backbone's
//! large features.

use crate::model::Tensors;
use effnet_arch::plan::LayerOp;
use effnet_arch::Plan;
use effnet_weights::layout::{params, Field, Param};
use effnet_weights::random::unit;
use effnet_weights::Tensor;

fn sample(p: &Param, seed: u64, fine_tune: bool) -> Tensor {
    let n: usize = p.shape.iter().product();
    let uniform = |i: usize| unit(&p.name, seed, i as u64);
    let data: Vec<f32> = match (p.field, p.layer.op) {
        (Field::Weight, LayerOp::Conv(c)) => {
            let fan_out = (c.kernel * c.kernel * c.out_channels / c.groups) as f64;
            let std = (2.0 / fan_out).sqrt();
            // Box-Muller on two uniforms per element.
            (0..n)
                .map(|i| {
                    let u1 = 1.0 - uniform(2 * i);
                    let u2 = uniform(2 * i + 1);
                    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                    (z * std) as f32
                })
                .collect()
        }
        (Field::Weight | Field::Bias, LayerOp::Linear(l)) if fine_tune => {
            let range = 1.0 / f64::from(l.in_features).sqrt();
            (0..n)
                .map(|i| (range * (2.0 * uniform(i) - 1.0)) as f32)
                .collect()
        }
        (Field::Weight, LayerOp::Linear(l)) => {
            let range = 1.0 / f64::from(l.out_features).sqrt();
            (0..n)
                .map(|i| (range * (2.0 * uniform(i) - 1.0)) as f32)
                .collect()
        }
        (Field::BnWeight | Field::BnVar, _) => vec![1.0; n],
        _ => vec![0.0; n],
    };
    Tensor::new(p.shape.clone(), data)
}

/// Fresh weights for every parameter of `plan`.
pub fn initial_weights(plan: &Plan, seed: u64) -> Tensors {
    params(plan)
        .iter()
        .map(|p| (p.name.clone(), sample(p, seed, false)))
        .collect()
}

/// Replaces the classifier of pretrained `tensors` with a fresh one for `plan`'s number of classes.
pub fn new_classifier(plan: &Plan, tensors: &mut Tensors, seed: u64) {
    for p in params(plan) {
        if matches!(p.layer.op, LayerOp::Linear(_)) {
            tensors.insert(p.name.clone(), sample(&p, seed, true));
        }
    }
}

/// A B0 plan at `resolution` with `classes` outputs, for tests.
#[cfg(test)]
pub(crate) fn small_b0(resolution: u32, classes: u32) -> Plan {
    let mut config = effnet_arch::Variant::by_name("b0").unwrap().config();
    config.resolution = resolution;
    config.num_classes = classes;
    effnet_arch::resolve(&config).unwrap()
}
