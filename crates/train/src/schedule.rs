//! Learning-rate schedules: linear warmup, then TF's staircase exponential decay (x0.97 every 2.4 epochs
//! in the official recipe), cosine annealing to zero, or a constant rate.

use serde::{Deserialize, Serialize};

/// What happens after the warmup.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Decay {
    /// `lr * rate^floor(epoch / every_epochs)`, as `tf.train.exponential_decay(staircase=True)`.
    Exponential {
        /// Factor per period (0.97).
        rate: f64,
        /// Period in epochs (2.4).
        every_epochs: f64,
    },
    /// Half a cosine from the base rate down to zero at the last step.
    Cosine,
    /// The base rate throughout.
    Constant,
}

/// A learning rate for every optimizer step of a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Peak learning rate (after warmup).
    pub base_lr: f64,
    /// Warmup length in epochs (linear from `base_lr / warmup_steps`).
    pub warmup_epochs: f64,
    /// The decay after warmup.
    pub decay: Decay,
    /// Optimizer steps per epoch.
    pub steps_per_epoch: usize,
    /// Epochs of the whole run.
    pub epochs: usize,
}

impl Schedule {
    /// The learning rate of step `step` (0-based, counted over the whole run).
    pub fn lr(&self, step: usize) -> f64 {
        let per_epoch = self.steps_per_epoch.max(1) as f64;
        let warmup = (self.warmup_epochs * per_epoch).round() as usize;
        if step < warmup {
            return self.base_lr * (step + 1) as f64 / warmup as f64;
        }
        match self.decay {
            Decay::Exponential { rate, every_epochs } => {
                let period = (every_epochs * per_epoch).max(1.0);
                self.base_lr * rate.powf((step as f64 / period).floor())
            }
            Decay::Cosine => {
                let total = (self.epochs * self.steps_per_epoch).max(warmup + 1);
                let progress = (step - warmup) as f64 / (total - warmup) as f64;
                self.base_lr * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
            }
            Decay::Constant => self.base_lr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(decay: Decay) -> Schedule {
        Schedule {
            base_lr: 0.1,
            warmup_epochs: 2.0,
            decay,
            steps_per_epoch: 10,
            epochs: 10,
        }
    }

    #[test]
    fn warmup_rises_linearly_to_the_base_rate() {
        let s = schedule(Decay::Constant);
        assert!((s.lr(0) - 0.005).abs() < 1e-12);
        assert!((s.lr(9) - 0.05).abs() < 1e-12);
        assert!((s.lr(19) - 0.1).abs() < 1e-12);
        assert!((s.lr(20) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn exponential_decay_is_a_staircase_over_the_global_step() {
        let s = schedule(Decay::Exponential {
            rate: 0.97,
            every_epochs: 2.4,
        });
        // Period 24 steps: steps 20..23 are still at the base rate, 24..47 at 0.97x, 48 at 0.97^2.
        assert!((s.lr(23) - 0.1).abs() < 1e-12);
        assert!((s.lr(24) - 0.097).abs() < 1e-12);
        assert!((s.lr(47) - 0.097).abs() < 1e-12);
        assert!((s.lr(48) - 0.1 * 0.97 * 0.97).abs() < 1e-12);
    }

    #[test]
    fn cosine_ends_at_zero_and_passes_half_way_at_the_middle() {
        let s = schedule(Decay::Cosine);
        assert!((s.lr(20) - 0.1).abs() < 1e-12);
        assert!((s.lr(60) - 0.05).abs() < 1e-12);
        assert!(s.lr(100).abs() < 1e-12);
    }
}
