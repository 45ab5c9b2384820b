//! The learning-rate range test (Smith 2017, "Cyclical learning rates for training neural networks",
//! section 3.3; fastai's `lr_find`): a short run from the run's own starting weights in which the rate
//! grows exponentially from a tiny value, one step per rate, recording the loss. The loss first stays flat
//! (too small a rate to learn), then falls, then blows up.
//!
//! The suggestion and the test's length depend on the optimizer (see [`Rule`] and
//! [`RangeTest::for_optimizer`]). For AdamW, the fine-tuning optimizer, the test is fastai's 100 steps
//! and the suggestion fastai's `valley`, the middle of the longest descent, which fastai tunes for
//! fine-tuning with Adam. For RMSProp and SGD, which train from scratch, the test takes 400 steps and the
//! suggestion is fastai's `minimum`, a tenth of the rate at the lowest smoothed loss within two decades
//! of the last rate tried (see [`REACH`]). A network trained
//! from scratch needs far more steps than a pretrained one before its loss answers the rate: in 100 steps
//! (12 per decade of rates) its loss hardly falls before it blows up, as Smith's original test, which
//! ran for several epochs, avoided. Measured against grids of rates on small datasets
//! (`docs/recipes.md`), `valley` was an order of magnitude too low from scratch with RMSProp, and the
//! minimum an order of magnitude too high for fine-tuning with AdamW. The run stops early once the
//! smoothed loss exceeds four times its minimum, as fastai does.

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::optim::OptimizerKind;
use crate::trainer::{prepare, seed_epoch, train_step, Prepared};
use serde::Serialize;

/// The rates tried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RangeTest {
    /// The first rate.
    pub start: f64,
    /// The last rate.
    pub end: f64,
    /// Optimizer steps (one rate each).
    pub steps: usize,
}

impl RangeTest {
    /// Rates from 1e-7 to 10, as fastai's: in 100 steps for AdamW (fine-tuning, fastai's length) and in
    /// 400 for RMSProp and SGD (training from scratch, whose loss needs more steps to answer the rate).
    pub fn for_optimizer(optimizer: OptimizerKind) -> Self {
        Self {
            start: 1e-7,
            end: 10.0,
            steps: match optimizer {
                OptimizerKind::Adamw => 100,
                OptimizerKind::Rmsprop | OptimizerKind::Sgd => 400,
            },
        }
    }

    /// The rate of step `i`: `start * (end / start)^(i / (steps - 1))`.
    pub fn lr(&self, i: usize) -> f64 {
        let t = i as f64 / (self.steps.max(2) - 1) as f64;
        self.start * (self.end / self.start).powf(t)
    }
}

/// One step of the test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LrPoint {
    /// The rate of the step.
    pub lr: f64,
    /// The batch's loss.
    pub loss: f64,
    /// The loss smoothed over the steps so far (exponential average, bias-corrected).
    pub smoothed: f64,
}

/// The outcome of a range test.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LrFinding {
    /// Every step taken.
    pub points: Vec<LrPoint>,
    /// The suggested peak rate.
    pub suggested: f64,
    /// The rate at the lowest smoothed loss of the middle steps (see [`lowest_rate`]).
    pub minimum: f64,
    /// How it was chosen.
    pub rule: Rule,
    /// Whether the test stopped early because the loss blew up.
    pub diverged: bool,
}

/// Smoothing of fastai's recorder: `avg = 0.98 * avg + 0.02 * loss`, divided by `1 - 0.98^(i + 1)`.
const SMOOTHING: f64 = 0.98;

/// The smoothed losses of `losses`.
fn smoothed(losses: &[f64]) -> Vec<f64> {
    let mut average = 0.0;
    losses
        .iter()
        .enumerate()
        .map(|(i, &loss)| {
            average = SMOOTHING * average + (1.0 - SMOOTHING) * loss;
            average / (1.0 - SMOOTHING.powi(i as i32 + 1))
        })
        .collect()
}

/// How the suggestion is read off the curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rule {
    /// fastai's `valley`: half-way through the middle third of the longest descent.
    Valley,
    /// fastai's `minimum`: a tenth of the rate at the lowest smoothed loss, where the loss stops falling.
    Minimum,
}

impl Rule {
    /// The rule for `optimizer`: `valley` for AdamW, the minimum for RMSProp and SGD.
    pub fn for_optimizer(optimizer: OptimizerKind) -> Self {
        match optimizer {
            OptimizerKind::Adamw => Self::Valley,
            OptimizerKind::Rmsprop | OptimizerKind::Sgd => Self::Minimum,
        }
    }
}

/// The points a suggestion is read from: all but the first tenth (the smoothing's start) and the last
/// five (the blow-up), or all when that leaves fewer than two.
fn middle(points: &[LrPoint]) -> &[LrPoint] {
    let kept = &points[(points.len() / 10).min(points.len())
        ..points.len().saturating_sub(5).max(points.len() / 10)];
    if kept.len() < 2 {
        points
    } else {
        kept
    }
}

/// How far below the last rate tried the lowest smoothed loss is looked for: two decades.
///
/// From scratch the loss often falls twice: a first dip two to three decades below the blow-up, where
/// the network shrinks the large logits of its initial classifier, a rise where the rate first grows
/// too large, and a second dip just before the blow-up. Smith's maximum rate is where the loss stops
/// falling before it blows up, the second dip; the first can be lower in a noisy test (small batches),
/// and a tenth of it is then far too low a rate. On the recipe benchmark the second dip lay well within
/// two decades of the last rate and the first well outside them (`docs/recipes.md`).
pub const REACH: f64 = 100.0;

/// The middle points whose rate is at least the last rate tried divided by [`REACH`], or all the
/// middle points when none is.
fn near_the_end(points: &[LrPoint]) -> &[LrPoint] {
    let kept = middle(points);
    let Some(last) = points.last() else {
        return kept;
    };
    let first = kept.partition_point(|p| p.lr < last.lr / REACH);
    if first < kept.len() {
        &kept[first..]
    } else {
        kept
    }
}

/// The rate at the lowest smoothed loss of `points`, leaving out the first tenth and the last five
/// steps and the rates more than [`REACH`] times below the last; 0 with no point.
pub fn lowest_rate(points: &[LrPoint]) -> f64 {
    lowest(near_the_end(points)).map_or(0.0, |p| p.lr)
}

/// The point with the lowest smoothed loss.
fn lowest(points: &[LrPoint]) -> Option<&LrPoint> {
    points
        .iter()
        .min_by(|a, b| a.smoothed.total_cmp(&b.smoothed))
}

/// The suggested peak rate from `points` by `rule`.
///
/// `Minimum` is a tenth of [`lowest_rate`]. `Valley` finds the longest run of middle points whose
/// smoothed losses keep falling (a longest decreasing subsequence) and takes the point half-way through
/// its middle third, still on the descent and clear of both the flat start and the minimum's edge; with
/// no fall at all, a tenth of [`lowest_rate`].
pub fn suggest(points: &[LrPoint], rule: Rule) -> f64 {
    let minimum = lowest_rate(points) / 10.0;
    if rule == Rule::Minimum {
        return minimum;
    }
    let kept = middle(points);
    let n = kept.len();
    let mut run = vec![1usize; n];
    let (mut start, mut end) = (0, 0);
    for i in 1..n {
        for j in 0..i {
            if kept[i].smoothed < kept[j].smoothed && run[i] < run[j] + 1 {
                run[i] = run[j] + 1;
            }
            if run[end] < run[i] {
                end = i;
                start = end + 1 - run[end];
            }
        }
    }
    if end == start {
        return minimum;
    }
    let third = (end - start) as f64 / 3.0;
    let index = start + third as usize + (third / 2.0) as usize;
    kept[index.min(n - 1)].lr
}

/// Ends a range test's pass over an epoch's batches: all the steps were taken, or the loss blew up.
struct Stop;

/// Runs the range test on `config`'s data, network and optimizer (its own rate and schedule are
/// ignored), calling `each` after every step.
pub fn find_lr(
    config: &TrainConfig,
    test: &RangeTest,
    each: &mut dyn FnMut(&LrPoint),
) -> Result<LrFinding> {
    if !(test.start > 0.0 && test.end > test.start && test.steps >= 2) {
        return Err(TrainError::Options(format!(
            "the range test needs 0 < start < end and at least 2 steps, got {} to {} in {}",
            test.start, test.end, test.steps
        )));
    }
    let Prepared {
        mut model,
        mut optimizer,
        loader,
        device,
        ..
    } = prepare(config)?;
    let (mut losses, mut points, mut diverged) = (Vec::new(), Vec::new(), false);
    let mut epoch = 1;
    let on_skip = |_: &std::path::PathBuf, _: &str| {};
    while points.len() < test.steps && !diverged {
        seed_epoch(&device, config.seed, epoch);
        let mut current = Some(model);
        // An `Err(Stop)` only ends the pass early.
        let _ = loader.for_each_batch(epoch, &on_skip, |batch| -> std::result::Result<(), Stop> {
            let lr = test.lr(points.len());
            let (m, loss, _) = train_step(
                current
                    .take()
                    .expect("the model is put back after every step"),
                &mut optimizer,
                batch,
                lr,
                config.label_smoothing,
                &device,
            );
            current = Some(m);
            losses.push(if loss.is_finite() {
                loss
            } else {
                f64::INFINITY
            });
            let smooth = *smoothed(&losses).last().expect("one loss at least");
            let point = LrPoint {
                lr,
                loss,
                smoothed: smooth,
            };
            each(&point);
            points.push(point);
            let least = points
                .iter()
                .map(|p| p.smoothed)
                .fold(f64::INFINITY, f64::min);
            if !smooth.is_finite() || smooth > 4.0 * least {
                diverged = true;
                return Err(Stop);
            }
            if points.len() >= test.steps {
                return Err(Stop);
            }
            Ok(())
        });
        model = current.expect("the model is put back after every step");
        epoch += 1;
    }
    let rule = Rule::for_optimizer(config.optimizer);
    Ok(LrFinding {
        suggested: suggest(&points, rule),
        minimum: lowest_rate(&points),
        rule,
        points,
        diverged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_grow_geometrically_from_start_to_end() {
        let t = RangeTest {
            start: 1e-4,
            end: 1.0,
            steps: 5,
        };
        let rates: Vec<f64> = (0..5).map(|i| t.lr(i)).collect();
        for (got, want) in rates.iter().zip([1e-4, 1e-3, 1e-2, 1e-1, 1.0]) {
            assert!((got / want - 1.0).abs() < 1e-12, "{got} vs {want}");
        }
    }

    #[test]
    fn smoothing_is_bias_corrected() {
        // A constant loss stays constant from the first step on.
        assert!(smoothed(&[2.0; 5]).iter().all(|v| (v - 2.0).abs() < 1e-12));
        let s = smoothed(&[1.0, 3.0]);
        assert!((s[1] - (0.98 * 0.02 + 0.02 * 3.0) / (1.0 - 0.98f64.powi(2))).abs() < 1e-12);
    }

    /// 30 steps, 1e-6 up by a factor 10^0.2 each: flat for 10, falling for 15, then blowing up.
    fn valley_curve() -> Vec<LrPoint> {
        (0..30)
            .map(|i| {
                let loss = match i {
                    0..=9 => 2.3,
                    10..=24 => 2.3 - 0.1 * (i - 9) as f64,
                    _ => 0.8 + (i - 24) as f64,
                };
                LrPoint {
                    lr: 1e-6 * 10f64.powf(0.2 * i as f64),
                    loss,
                    smoothed: loss,
                }
            })
            .collect()
    }

    #[test]
    fn the_minimum_is_where_the_smoothed_loss_stops_falling() {
        let points = valley_curve();
        // The lowest loss is step 24's; the suggestion is a tenth of its rate.
        let minimum = suggest(&points, Rule::Minimum);
        assert!((minimum / (points[24].lr / 10.0) - 1.0).abs() < 1e-12);
        // A lower loss in the first tenth (the smoothing's start) or the last five steps is left out.
        let mut edges = points.clone();
        edges[1].smoothed = 0.0;
        edges[27].smoothed = 0.0;
        assert!((suggest(&edges, Rule::Minimum) / (points[24].lr / 10.0) - 1.0).abs() < 1e-12);
        assert!((lowest_rate(&edges) / points[24].lr - 1.0).abs() < 1e-12);
        assert_eq!(lowest_rate(&[]), 0.0);
        assert_eq!(suggest(&[], Rule::Minimum), 0.0);
    }

    #[test]
    fn the_minimum_is_looked_for_within_two_decades_of_the_last_rate() {
        // The last rate is step 29's, 1e-6 * 10^5.8; two decades below it is step 19's.
        let points = valley_curve();
        // A lower first dip at step 12, 10^3.4 times below the last rate, is left out...
        let mut early = points.clone();
        early[12].smoothed = 0.1;
        assert!((lowest_rate(&early) / points[24].lr - 1.0).abs() < 1e-12);
        assert!((suggest(&early, Rule::Minimum) / (points[24].lr / 10.0) - 1.0).abs() < 1e-12);
        // ...and one at step 20, just within two decades of it, is taken.
        let mut near = points.clone();
        near[20].smoothed = 0.1;
        assert!((lowest_rate(&near) / points[20].lr - 1.0).abs() < 1e-12);
        // When no middle step lies within two decades of the last rate (rates 1,000 times apart), the
        // lowest of all the middle steps counts.
        let sparse: Vec<LrPoint> = (0..10)
            .map(|i| LrPoint {
                lr: 1e-9 * 1000f64.powi(i),
                loss: 1.0,
                smoothed: if i == 3 { 0.5 } else { 1.0 },
            })
            .collect();
        assert!((lowest_rate(&sparse) / sparse[3].lr - 1.0).abs() < 1e-12);
    }

    #[test]
    fn the_valley_lies_in_the_longest_descent() {
        let points = valley_curve();
        // Kept: steps 3..25. The valley runs from step 9 (the last flat one) to 24 (the minimum):
        // 15 steps, a third is 5, so step 9 + 5 + 2 = 16.
        let valley = suggest(&points, Rule::Valley);
        assert!((valley / points[16].lr - 1.0).abs() < 1e-12, "{valley}");
        // No fall at all: a tenth of the minimum's rate.
        let flat: Vec<LrPoint> = points[..3]
            .iter()
            .map(|p| LrPoint {
                smoothed: 1.0,
                ..*p
            })
            .collect();
        assert!((suggest(&flat, Rule::Valley) / (points[0].lr / 10.0) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn adamw_gets_the_valley_in_100_steps_and_the_others_the_minimum_in_400() {
        assert_eq!(Rule::for_optimizer(OptimizerKind::Adamw), Rule::Valley);
        assert_eq!(Rule::for_optimizer(OptimizerKind::Rmsprop), Rule::Minimum);
        assert_eq!(Rule::for_optimizer(OptimizerKind::Sgd), Rule::Minimum);
        assert_eq!(RangeTest::for_optimizer(OptimizerKind::Adamw).steps, 100);
        for scratch in [OptimizerKind::Rmsprop, OptimizerKind::Sgd] {
            let test = RangeTest::for_optimizer(scratch);
            assert_eq!((test.start, test.end, test.steps), (1e-7, 10.0, 400));
        }
    }

    #[test]
    fn bad_ranges_are_refused() {
        let config = TrainConfig::recipe(crate::Recipe::Official, "x".into(), 1, 8, 32);
        let err = find_lr(
            &config,
            &RangeTest {
                start: 1.0,
                end: 0.1,
                steps: 10,
            },
            &mut |_| {},
        )
        .unwrap_err();
        assert!(err.to_string().contains("0 < start < end"), "{err}");
    }
}
