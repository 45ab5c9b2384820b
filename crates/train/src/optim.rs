//! Optimizers: TF-style RMSProp (the official EfficientNet recipe), AdamW and SGD with Nesterov momentum
//! (fine-tuning), each with weight decay on kernels only: batch-norm parameters and biases are excluded.

use burn::module::ParamGroup;
use burn::optim::{
    decay::WeightDecayConfig, momentum::MomentumConfig, AdamWConfig, ModuleOptimizer, Optimizer,
    RecordState, SgdConfig, StateSink, StateSource,
};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// Parameters that never get weight decay: batch-norm scales and shifts, and every bias.
pub const NO_DECAY_PATTERN: &str = r"(^|\.)bn\.|(^|\.)bias$";

/// RMSProp as TensorFlow 1 computes it, which the official EfficientNet recipe uses:
/// `ms = rho * ms + (1 - rho) * g²` (with `ms` starting at 1),
/// `mom = momentum * mom + lr * g / sqrt(ms + epsilon)`, `w -= mom`,
/// where `g` includes the L2 term `weight_decay * w`. Unlike PyTorch's RMSprop the epsilon sits inside the
/// square root and the learning rate inside the momentum buffer.
#[derive(Debug, Clone)]
pub struct TfRmsProp {
    /// Decay of the mean square (0.9).
    pub rho: f64,
    /// Momentum (0.9).
    pub momentum: f64,
    /// Epsilon inside the square root (1e-3).
    pub epsilon: f64,
    /// L2 coefficient added to the gradient.
    pub weight_decay: f64,
}

/// Per-parameter state of [`TfRmsProp`].
#[derive(Clone)]
pub struct TfRmsPropState<const D: usize> {
    /// Running mean of squared gradients.
    pub mean_square: Tensor<D>,
    /// Momentum buffer (already scaled by the learning rate).
    pub momentum: Tensor<D>,
}

impl<const D: usize> RecordState for TfRmsPropState<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        out.push_tensor(prefix, "mean_square", self.mean_square.to_data());
        out.push_tensor(prefix, "momentum", self.momentum.to_data());
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        Some(Self {
            mean_square: Tensor::from_data(src.take_tensor(prefix, "mean_square")?, device),
            momentum: Tensor::from_data(src.take_tensor(prefix, "momentum")?, device),
        })
    }
}

impl Optimizer for TfRmsProp {
    type State<const D: usize> = TfRmsPropState<D>;

    fn step<const D: usize>(
        &self,
        lr: f64,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let grad = if self.weight_decay > 0.0 {
            grad + tensor.clone().mul_scalar(self.weight_decay)
        } else {
            grad
        };
        let (mean_square, momentum) = match state {
            Some(s) => (s.mean_square, s.momentum),
            None => (grad.ones_like(), grad.zeros_like()),
        };
        let mean_square =
            mean_square.mul_scalar(self.rho) + grad.clone().square().mul_scalar(1.0 - self.rho);
        let step = grad / mean_square.clone().add_scalar(self.epsilon).sqrt();
        let momentum = momentum.mul_scalar(self.momentum) + step.mul_scalar(lr);
        let state = TfRmsPropState {
            mean_square,
            momentum: momentum.clone(),
        };
        (tensor - momentum, Some(state))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        TfRmsPropState {
            mean_square: state.mean_square.to_device(device),
            momentum: state.momentum.to_device(device),
        }
    }
}

/// Which optimizer a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// TF-style RMSProp (decay 0.9, momentum 0.9, epsilon 1e-3): the official recipe.
    Rmsprop,
    /// AdamW (betas 0.9 / 0.999, epsilon 1e-8) with decoupled weight decay.
    Adamw,
    /// SGD with Nesterov momentum 0.9.
    Sgd,
}

impl OptimizerKind {
    /// Parses a command-line name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "rmsprop" => Some(Self::Rmsprop),
            "adamw" => Some(Self::Adamw),
            "sgd" => Some(Self::Sgd),
            _ => None,
        }
    }

    /// The optimizer for a whole network: `weight_decay` on kernels, none on batch norm and biases.
    pub fn init(self, weight_decay: f64) -> ModuleOptimizer {
        match self {
            Self::Rmsprop => with_decay_groups(weight_decay, |wd| TfRmsProp {
                rho: 0.9,
                momentum: 0.9,
                epsilon: 1e-3,
                weight_decay: wd,
            }),
            Self::Adamw => with_decay_groups(weight_decay, |wd| {
                AdamWConfig::new().with_weight_decay(wd as f32).build()
            }),
            Self::Sgd => with_decay_groups(weight_decay, |wd| {
                SgdConfig::new()
                    .with_momentum(Some(MomentumConfig {
                        momentum: 0.9,
                        dampening: 0.0,
                        nesterov: true,
                    }))
                    .with_weight_decay((wd > 0.0).then(|| WeightDecayConfig::new(wd as f32)))
                    .build()
            }),
        }
    }
}

/// One optimizer with `weight_decay` for kernels and a copy without it for [`NO_DECAY_PATTERN`].
fn with_decay_groups<O: Optimizer>(weight_decay: f64, make: impl Fn(f64) -> O) -> ModuleOptimizer {
    let optimizer = ModuleOptimizer::from(make(weight_decay));
    if weight_decay == 0.0 {
        return optimizer;
    }
    let no_decay = ParamGroup::from_regex(NO_DECAY_PATTERN).expect("the pattern is valid");
    optimizer.with_group(no_decay, make(0.0), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::{initial_weights, small_b0};
    use crate::model::EfficientNet;
    use burn::module::Module;
    use burn::optim::GradientsParams;
    use burn::tensor::TensorData;

    #[test]
    fn tf_rmsprop_follows_the_tensorflow_update_rule() {
        let opt = TfRmsProp {
            rho: 0.9,
            momentum: 0.9,
            epsilon: 1e-3,
            weight_decay: 0.01,
        };
        let device = Device::flex();
        let mut w = Tensor::<1>::from_data(TensorData::new(vec![0.5f32, -1.0], [2]), &device);
        let mut state = None;
        // Reference in f64, written from the TF1 `ApplyRMSProp` kernel.
        let (mut rw, mut ms, mut mom) = ([0.5f64, -1.0], [1.0f64; 2], [0.0f64; 2]);
        for (step, g) in [[0.3f64, -2.0], [0.1, 0.5], [-1.0, 0.0]].iter().enumerate() {
            let lr = 0.1 / (step + 1) as f64;
            let grad = Tensor::<1>::from_data(
                TensorData::new(g.iter().map(|&v| v as f32).collect::<Vec<_>>(), [2]),
                &device,
            );
            let (next, s) = opt.step(lr, w, grad, state);
            (w, state) = (next, s);
            for i in 0..2 {
                let g = g[i] + 0.01 * rw[i];
                ms[i] = 0.9 * ms[i] + 0.1 * g * g;
                mom[i] = 0.9 * mom[i] + lr * g / (ms[i] + 1e-3).sqrt();
                rw[i] -= mom[i];
            }
        }
        let got: Vec<f32> = w.into_data().convert::<f32>().try_into_vec().unwrap();
        for i in 0..2 {
            assert!(
                (f64::from(got[i]) - rw[i]).abs() < 1e-6,
                "{got:?} vs {rw:?}"
            );
        }
    }

    #[test]
    fn weight_decay_shrinks_kernels_and_spares_batch_norm_and_biases() {
        let plan = small_b0(16, 3);
        let before = initial_weights(&plan, 1);
        let model = EfficientNet::trainable(&plan, &before, &Device::flex()).unwrap();
        let x = Tensor::<4>::zeros([2, 3, 16, 16], &Device::flex().autodiff());
        // A zero loss: every gradient is exactly zero, so only the decoupled decay moves parameters.
        let loss = model.forward(x).sum().mul_scalar(0.0);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let mut optimizer = OptimizerKind::Adamw.init(0.5);
        let after = optimizer.step(0.1, model, grads).valid().export();
        let mut decayed = 0;
        for (name, old) in &before {
            if name.ends_with("running_mean") || name.ends_with("running_var") {
                continue;
            }
            let new = &after[name];
            let expected = if old.shape.len() >= 2 { 0.95 } else { 1.0 };
            decayed += usize::from(old.shape.len() >= 2);
            for (a, b) in old.data.iter().zip(&new.data) {
                assert!(
                    (a * expected - b).abs() <= 1e-6 * a.abs().max(1.0),
                    "{name}: {a} -> {b}"
                );
            }
        }
        assert!(decayed > 50, "{decayed} kernels checked");
    }
}
