//! Exponential moving average of the weights and batch-norm statistics, as the official recipe keeps it:
//! after update `t` (1-based), `shadow = d * shadow + (1 - d) * current` with
//! `d = min(decay, (1 + t) / (10 + t))`. Evaluation and the exported weights use the shadow.

use crate::model::EfficientNet;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;
use std::collections::HashMap;

/// The averaged network.
#[derive(Debug, Clone)]
pub struct Ema {
    /// The target decay (0.9999 in the official recipe).
    pub decay: f64,
    /// How many updates have been averaged in.
    pub updates: u64,
    /// The shadow network (no autodiff).
    pub model: EfficientNet,
}

/// Every float tensor of a module (parameters and running statistics), flattened, by id.
#[derive(Default)]
struct Values(HashMap<ParamId, Tensor<1>>);

impl ModuleVisitor for Values {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val().without_autodiff();
        let n = t.shape().num_elements();
        self.0.insert(param.id, t.reshape([n]));
    }
}

struct Blend {
    values: Values,
    decay: f64,
}

impl ModuleMapper for Blend {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(current) = self.values.0.remove(&param.id) else {
            return param;
        };
        let d = self.decay;
        param.map(|shadow| {
            let dims = shadow.dims();
            shadow.mul_scalar(d) + current.reshape(dims).mul_scalar(1.0 - d)
        })
    }
}

impl Ema {
    /// Starts the average at `model`'s current values.
    pub fn new(model: &EfficientNet, decay: f64, updates: u64) -> Self {
        Self {
            decay,
            updates,
            model: model.valid(),
        }
    }

    /// The decay of the next update.
    pub fn next_decay(&self) -> f64 {
        let t = (self.updates + 1) as f64;
        self.decay.min((1.0 + t) / (10.0 + t))
    }

    /// Averages in `model`'s current values.
    pub fn update(&mut self, model: &EfficientNet) {
        let mut values = Values::default();
        model.visit(&mut values);
        let decay = self.next_decay();
        self.model = self.model.clone().map(&mut Blend { values, decay });
        self.updates += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::{initial_weights, small_b0};
    use burn::tensor::Device;

    #[test]
    fn the_average_follows_the_warmup_ramp_then_the_decay() {
        let plan = small_b0(16, 1000);
        let a = initial_weights(&plan, 1);
        let b = initial_weights(&plan, 2);
        let model_b = EfficientNet::trainable(&plan, &b, &Device::flex()).unwrap();
        let mut ema = Ema::new(
            &EfficientNet::trainable(&plan, &a, &Device::flex()).unwrap(),
            0.9999,
            0,
        );
        // First update: d = (1 + 1) / (10 + 1).
        assert!((ema.next_decay() - 2.0 / 11.0).abs() < 1e-12);
        ema.update(&model_b);
        let d = 2.0 / 11.0;
        let averaged = ema.model.export();
        for name in [
            "stem.weight",
            "blocks.3.project.bn.running_var",
            "classifier.bias",
        ] {
            for ((x, y), z) in a[name]
                .data
                .iter()
                .zip(&b[name].data)
                .zip(&averaged[name].data)
            {
                let expected = d * f64::from(*x) + (1.0 - d) * f64::from(*y);
                assert!((f64::from(*z) - expected).abs() < 1e-6, "{name}");
            }
        }
        let late = Ema::new(&model_b, 0.9999, 1_000_000);
        assert!(
            (late.next_decay() - 0.9999).abs() < 1e-12,
            "the ramp ends at the decay"
        );
    }
}
