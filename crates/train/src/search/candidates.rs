//! The candidates of a search: the compound grid, and the controls (the unscaled base and each dimension
//! scaled alone to the MACs the target asks for).

use super::{Candidate, Kind, Search, SearchConfig};
use crate::error::{Result, TrainError};
use effnet_arch::memory::RECIPE_PARAMETER_COPIES;
use effnet_arch::scaling::compound;
use effnet_arch::variant::network_by_name_or_blocks;
use effnet_arch::{account, resolve, NetworkConfig};
use serde::{Deserialize, Serialize};

/// Every grid point with each coefficient in `[1, ...]` and `|alpha * beta^2 * gamma^2 - target| <= tolerance`.
pub fn grid(target: f64, tolerance: f64, step: f64) -> Vec<Candidate> {
    let values = |max: f64| -> Vec<f64> {
        let n = ((max - 1.0) / step + 1e-9).floor().max(0.0) as usize;
        (0..=n).map(|i| 1.0 + i as f64 * step).collect()
    };
    let hi = target + tolerance;
    let mut out = Vec::new();
    for &alpha in &values(hi) {
        for &beta in &values(hi.sqrt()) {
            for &gamma in &values(hi.sqrt()) {
                let c = Candidate {
                    kind: Kind::Compound,
                    alpha,
                    beta,
                    gamma,
                };
                if (c.product() - target).abs() <= tolerance + 1e-9 {
                    out.push(c);
                }
            }
        }
    }
    out
}

/// The base network at the search's base resolution.
pub fn base_network(config: &SearchConfig) -> Result<NetworkConfig> {
    let mut base = network_by_name_or_blocks(&config.base)?;
    base.resolution = config.img_size;
    base.preprocessing = base.preprocessing.at_resolution(config.img_size);
    Ok(base)
}

pub(super) fn scaled(base: &NetworkConfig, phi: f64, c: &Candidate) -> Result<NetworkConfig> {
    Ok(compound(base, phi, c.coefficients())?)
}

pub(super) fn macs(config: &NetworkConfig) -> Result<u64> {
    Ok(account(&resolve(config)?).macs)
}

/// The smallest coefficient of one dimension whose real MACs reach `target_macs` (bisection: MACs never
/// fall as a coefficient grows).
fn single_dimension(
    base: &NetworkConfig,
    phi: f64,
    kind: Kind,
    target: f64,
    target_macs: u64,
) -> Result<Candidate> {
    let make = |c: f64| Candidate {
        kind,
        alpha: if kind == Kind::Depth { c } else { 1.0 },
        beta: if kind == Kind::Width { c } else { 1.0 },
        gamma: if kind == Kind::Resolution { c } else { 1.0 },
    };
    let (mut lo, mut hi) = (1.0f64, target.max(1.0) * 2.0);
    while macs(&scaled(base, phi, &make(hi))?)? < target_macs {
        if hi > 64.0 {
            return Err(TrainError::Options(format!(
                "{kind:?} scaling alone cannot reach {target_macs} multiply-adds"
            )));
        }
        (lo, hi) = (hi, hi * 2.0);
    }
    for _ in 0..40 {
        let mid = 0.5 * (lo + hi);
        if macs(&scaled(base, phi, &make(mid))?)? >= target_macs {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(make((hi * 1e4).ceil() / 1e4))
}

/// The candidates of a search: the base, the three single-dimension scalings and the compound grid.
pub fn candidates(config: &SearchConfig) -> Result<Vec<Candidate>> {
    let base = base_network(config)?;
    let target_macs = (macs(&base)? as f64 * config.target.powf(config.phi)).round() as u64;
    let mut out = vec![Candidate {
        kind: Kind::Baseline,
        alpha: 1.0,
        beta: 1.0,
        gamma: 1.0,
    }];
    for kind in [Kind::Depth, Kind::Width, Kind::Resolution] {
        out.push(single_dimension(
            &base,
            config.phi,
            kind,
            config.target,
            target_macs,
        )?);
    }
    out.extend(grid(config.target, config.tolerance, config.grid));
    Ok(out)
}

/// A candidate as it will train: its network's size and cost at the search's resolution and batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidatePlan {
    /// Its index in `candidates.json`.
    #[serde(default)]
    pub index: usize,
    /// Its folder name under `candidates/`.
    pub id: String,
    /// The candidate.
    #[serde(flatten)]
    pub candidate: Candidate,
    /// Depth multiplier after scaling.
    pub d: f64,
    /// Width multiplier after scaling.
    pub w: f64,
    /// Resolution after scaling.
    pub r: u32,
    /// Parameters.
    pub params: u64,
    /// Multiply-adds per image.
    pub macs: u64,
    /// The plan's training-memory estimate at the search's batch with the official recipe.
    #[serde(default)]
    pub training_memory_bytes: u64,
}

/// Every candidate of `search` as it will train.
pub fn plan(search: &Search) -> Result<Vec<CandidatePlan>> {
    let base = base_network(&search.config)?;
    (0..search.candidates.len())
        .map(|index| Ok(scaled_candidate(&base, search, index)?.1))
        .collect()
}

/// Candidate `index` of `search` scaled from `base` (the search's [`base_network`]): its network and plan.
pub(super) fn scaled_candidate(
    base: &NetworkConfig,
    search: &Search,
    index: usize,
) -> Result<(NetworkConfig, CandidatePlan)> {
    let candidate = search.candidates[index];
    let network = scaled(base, search.config.phi, &candidate)?;
    let cost = account(&resolve(&network)?);
    let plan = CandidatePlan {
        index,
        id: candidate.id(),
        candidate,
        d: network.depth,
        w: network.width,
        r: network.resolution,
        params: cost.params,
        macs: cost.macs,
        training_memory_bytes: cost
            .training_memory_bytes(search.config.batch as u64, RECIPE_PARAMETER_COPIES),
    };
    Ok((network, plan))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_holds_exactly_the_admissible_points() {
        let points = grid(2.0, 0.1, 0.1);
        assert_eq!(points.len(), 22);
        assert!(points
            .iter()
            .all(|c| (c.product() - 2.0).abs() <= 0.1 + 1e-9));
        assert!(points
            .iter()
            .all(|c| c.alpha >= 1.0 && c.beta >= 1.0 && c.gamma >= 1.0));
        // The paper's (1.2, 1.1, 1.15) product is 1.92: on a 0.05 grid it is admissible.
        let fine = grid(2.0, 0.1, 0.05);
        assert!(fine.iter().any(|c| (c.alpha - 1.2).abs() < 1e-9
            && (c.beta - 1.1).abs() < 1e-9
            && (c.gamma - 1.15).abs() < 1e-9));
        // Brute force over a wider box finds nothing the grid missed.
        let mut count = 0;
        for a in 0..=30 {
            for b in 0..=30 {
                for g in 0..=30 {
                    let (a, b, g) = (
                        1.0 + a as f64 * 0.1,
                        1.0 + b as f64 * 0.1,
                        1.0 + g as f64 * 0.1,
                    );
                    count += usize::from((a * b * b * g * g - 2.0).abs() <= 0.1 + 1e-9);
                }
            }
        }
        assert_eq!(count, points.len());
    }

    #[test]
    fn single_dimension_baselines_reach_the_target_macs_and_no_further() {
        let config = super::super::sample_config(64);
        let all = candidates(&config).unwrap();
        let base = base_network(&config).unwrap();
        let base_macs = macs(&base).unwrap();
        for c in &all[1..4] {
            let m = macs(&scaled(&base, 1.0, c).unwrap()).unwrap();
            assert!(
                m as f64 >= 2.0 * base_macs as f64,
                "{c:?}: {m} vs {base_macs}"
            );
            // A slightly smaller coefficient falls short: the baseline is the cheapest that reaches the target.
            let mut less = *c;
            match c.kind {
                Kind::Depth => less.alpha -= 0.01,
                Kind::Width => less.beta -= 0.01,
                _ => less.gamma -= 0.01,
            }
            let m_less = macs(&scaled(&base, 1.0, &less).unwrap()).unwrap();
            assert!(
                (m_less as f64) < 2.0 * base_macs as f64,
                "{less:?}: {m_less}"
            );
        }
        assert_eq!(all.len(), 4 + 22);
    }
}
