//! The paper's problem under the compound rule: the largest `phi` whose *resolved* network meets every budget.
//!
//! `phi` is searched on a grid of [`PHI_STEP`]. With `alpha, beta, gamma >= 1`, width, depth and resolution are
//! non-decreasing in `phi`, and so are `round_filters`, `ceil` on repeats and SAME output sizes; every cost
//! (MACs, parameters, memory) is a sum of non-negative non-decreasing terms, hence a non-decreasing step
//! function of `phi`. That makes "fits the budget" monotone, and a binary search on the grid finds the exact
//! largest admissible grid point.

use crate::accounting::{account, Accounting};
use crate::error::{ArchError, Result};
use crate::memory::RECIPE_PARAMETER_COPIES;
use crate::plan::Plan;
use crate::resolve::resolve;
use crate::scaling::{compound, Coefficients, MULTIPLIER_RANGE, PHI_RANGE, RESOLUTION_RANGE};
use crate::variant::{NetworkConfig, Variant, VARIANTS};
use serde::Serialize;

/// Spacing of the `phi` grid.
pub const PHI_STEP: f64 = 0.001;

/// Resource limits; `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Budget {
    /// Most multiply-adds per image (the paper's FLOPS).
    pub max_macs: Option<u64>,
    /// Most bytes of an inference process: f32 weights, the peak activations of one image and the
    /// runtime ([`Accounting::process_memory_bytes`]).
    pub max_memory: Option<u64>,
    /// Most trainable parameters.
    pub max_params: Option<u64>,
    /// Most bytes of a training process with the official recipe.
    pub max_train_memory: Option<TrainingBudget>,
}

/// A bound on training memory: [`Accounting::training_memory_bytes`] with the recipe's parameter copies.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TrainingBudget {
    /// Most bytes.
    pub max_bytes: u64,
    /// Images per training step.
    pub batch: u64,
}

impl TrainingBudget {
    /// The training memory a network with these costs needs at this batch.
    pub fn needed(&self, a: &Accounting) -> u64 {
        a.training_memory_bytes(self.batch, RECIPE_PARAMETER_COPIES)
    }
}

impl Budget {
    /// Whether a network with these costs fits.
    pub fn admits(&self, a: &Accounting) -> bool {
        let within = |limit: Option<u64>, value: u64| limit.is_none_or(|l| value <= l);
        within(self.max_macs, a.macs)
            && within(self.max_memory, a.process_memory_bytes())
            && within(self.max_params, a.params)
            && self
                .max_train_memory
                .is_none_or(|t| t.needed(a) <= t.max_bytes)
    }

    /// Whether any limit is set.
    pub fn is_unbounded(&self) -> bool {
        self.max_macs.is_none()
            && self.max_memory.is_none()
            && self.max_params.is_none()
            && self.max_train_memory.is_none()
    }
}

/// One point of the grid: a compound-scaled network and its costs.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The compound coefficient.
    pub phi: f64,
    /// The resolved network.
    pub plan: Plan,
    /// Its costs.
    pub accounting: Accounting,
}

/// The solver's answer.
#[derive(Debug, Clone)]
pub struct Fit {
    /// The largest admissible grid point.
    pub best: Candidate,
    /// The next grid point, which exceeds the budget (absent at the top of the grid).
    pub next: Option<Candidate>,
    /// Official variants of the same family that also fit.
    pub fitting_variants: Vec<(&'static Variant, Accounting)>,
}

fn phi_of(k: i64) -> f64 {
    k as f64 * PHI_STEP
}

/// The range of grid indices whose multipliers and resolution are within the accepted ranges.
fn grid_bounds(base: &NetworkConfig, c: Coefficients) -> (i64, i64) {
    let (mut lo, mut hi) = PHI_RANGE;
    let mut limit = |start: f64, coefficient: f64, (min, max): (f64, f64)| {
        if coefficient > 1.0 {
            lo = lo.max((min / start).ln() / coefficient.ln());
            hi = hi.min((max / start).ln() / coefficient.ln());
        }
    };
    limit(base.width, c.beta, MULTIPLIER_RANGE);
    limit(base.depth, c.alpha, MULTIPLIER_RANGE);
    let (rmin, rmax) = RESOLUTION_RANGE;
    limit(
        f64::from(base.resolution),
        c.gamma,
        (f64::from(rmin) + 0.5, f64::from(rmax) - 0.5),
    );
    (
        (lo / PHI_STEP).ceil() as i64,
        (hi / PHI_STEP).floor() as i64,
    )
}

/// Resolves and accounts the network at grid index `k`; `None` if it cannot be resolved (too large).
fn candidate(base: &NetworkConfig, c: Coefficients, k: i64) -> Option<Candidate> {
    let config = compound(base, phi_of(k), c).ok()?;
    let plan = resolve(&config).ok()?;
    Some(Candidate {
        phi: phi_of(k),
        accounting: account(&plan),
        plan,
    })
}

/// Solves: the largest `phi` on the grid such that the scaled `base` fits `budget`.
pub fn fit(base: &NetworkConfig, coefficients: Coefficients, budget: &Budget) -> Result<Fit> {
    coefficients.validate()?;
    if budget.is_unbounded() {
        return Err(ArchError::Infeasible(
            "no budget given: set a limit on MACs, memory, training memory or parameters".into(),
        ));
    }
    let (k_min, k_max) = grid_bounds(base, coefficients);
    let smallest = (k_min..=k_max)
        .take(16)
        .find_map(|k| candidate(base, coefficients, k).map(|c| (k, c)))
        .ok_or_else(|| {
            ArchError::Infeasible(format!(
                "no network of `{}` resolves on the phi grid",
                base.name
            ))
        })?;
    let fits = |k: i64| candidate(base, coefficients, k).filter(|c| budget.admits(&c.accounting));
    let (k_first, smallest) = smallest;
    if !budget.admits(&smallest.accounting) {
        let a = &smallest.accounting;
        return Err(ArchError::Infeasible(format!(
            "no network fits: the smallest on the grid (phi = {:.3}, {}) needs {} MACs, {} parameters and {} bytes of inference memory{}",
            smallest.phi,
            smallest.plan.config.name,
            a.macs,
            a.params,
            a.process_memory_bytes(),
            budget.max_train_memory.map_or(String::new(), |t| format!(
                ", and {} bytes to train at batch {}",
                t.needed(a),
                t.batch
            ))
        )));
    }
    // Exponential search for an infeasible upper end, then bisection: `lo` always fits, `hi` never does.
    let (mut lo, mut step) = (k_first, 1000_i64);
    let mut hi = loop {
        let probe = (lo + step).min(k_max);
        if probe == lo {
            break k_max + 1;
        }
        if fits(probe).is_some() {
            lo = probe;
            step *= 2;
        } else {
            break probe;
        }
    };
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid).is_some() {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let best = fits(lo).expect("the lower end of the bisection fits");
    let next = (hi <= k_max)
        .then(|| candidate(base, coefficients, hi))
        .flatten();
    let family = VARIANTS
        .iter()
        .find(|v| v.config().base == base.base)
        .map(|v| v.family);
    let fitting_variants = VARIANTS
        .iter()
        .filter(|v| Some(v.family) == family)
        .filter_map(|v| {
            let a = account(&resolve(&v.config()).ok()?);
            budget.admits(&a).then_some((v, a))
        })
        .collect();
    Ok(Fit {
        best,
        next,
        fitting_variants,
    })
}
