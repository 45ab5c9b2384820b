//! Compound scaling: `d = alpha^phi`, `w = beta^phi`, `r = gamma^phi` (paper Eq. 3), or explicit `(d, w, r)`,
//! and the official rounding rules that turn multipliers into whole filters and repeats.

use crate::error::{ArchError, Result};
use crate::variant::NetworkConfig;
use serde::{Deserialize, Serialize};

/// The per-dimension bases of compound scaling.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Coefficients {
    /// Depth base.
    pub alpha: f64,
    /// Width base.
    pub beta: f64,
    /// Resolution base.
    pub gamma: f64,
}

impl Default for Coefficients {
    /// The paper's grid-search result on B0: 1.2, 1.1, 1.15.
    fn default() -> Self {
        Self {
            alpha: 1.2,
            beta: 1.1,
            gamma: 1.15,
        }
    }
}

/// Largest accepted `alpha`, `beta`, `gamma`.
pub const MAX_COEFFICIENT: f64 = 4.0;
/// Accepted range of `phi`.
pub const PHI_RANGE: (f64, f64) = (-8.0, 30.0);
/// Accepted range of width and depth multipliers.
pub const MULTIPLIER_RANGE: (f64, f64) = (0.05, 64.0);
/// Accepted range of input resolutions.
pub const RESOLUTION_RANGE: (u32, u32) = (8, 8192);

fn check(name: &'static str, value: f64, (lo, hi): (f64, f64)) -> Result<()> {
    if value.is_finite() && value >= lo && value <= hi {
        Ok(())
    } else {
        Err(ArchError::BadCoefficient {
            name,
            value,
            reason: format!("must be a number in [{lo}, {hi}]"),
        })
    }
}

impl Coefficients {
    /// Checks the paper's constraint `alpha, beta, gamma >= 1` and a sane upper bound.
    pub fn validate(&self) -> Result<()> {
        check("alpha", self.alpha, (1.0, MAX_COEFFICIENT))?;
        check("beta", self.beta, (1.0, MAX_COEFFICIENT))?;
        check("gamma", self.gamma, (1.0, MAX_COEFFICIENT))
    }

    /// `alpha * beta^2 * gamma^2`: the factor by which the formula says MACs grow per unit of `phi`.
    pub fn flops_factor(&self) -> f64 {
        self.alpha * self.beta * self.beta * self.gamma * self.gamma
    }
}

/// Scales `base` by `phi`: width `* beta^phi`, depth `* alpha^phi`, resolution `* gamma^phi` (rounded).
pub fn compound(
    base: &NetworkConfig,
    phi: f64,
    coefficients: Coefficients,
) -> Result<NetworkConfig> {
    check("phi", phi, PHI_RANGE)?;
    coefficients.validate()?;
    let resolution = (f64::from(base.resolution) * coefficients.gamma.powf(phi)).round();
    let mut config = custom(
        base,
        base.width * coefficients.beta.powf(phi),
        base.depth * coefficients.alpha.powf(phi),
        resolution.clamp(0.0, f64::from(u32::MAX)) as u32,
    )?;
    config.name = format!("{}-phi{phi:.3}", base.name);
    Ok(config)
}

/// `base` with explicit width and depth multipliers (relative to the unscaled base) and resolution.
pub fn custom(
    base: &NetworkConfig,
    width: f64,
    depth: f64,
    resolution: u32,
) -> Result<NetworkConfig> {
    check("width", width, MULTIPLIER_RANGE)?;
    check("depth", depth, MULTIPLIER_RANGE)?;
    let (lo, hi) = RESOLUTION_RANGE;
    if !(lo..=hi).contains(&resolution) {
        return Err(ArchError::BadCoefficient {
            name: "resolution",
            value: f64::from(resolution),
            reason: format!("must be a whole number of pixels in [{lo}, {hi}]"),
        });
    }
    Ok(NetworkConfig {
        name: format!("{}-w{width:.3}-d{depth:.3}-r{resolution}", base.name),
        width,
        depth,
        resolution,
        preprocessing: base.preprocessing.at_resolution(resolution),
        ..base.clone()
    })
}

/// TF `round_filters`: scale, round to a multiple of 8 (at least 8), and never lose more than 10%.
///
/// The arithmetic is done in `f64` in the same order as the official Python so results are bit-identical.
pub fn round_filters(filters: u32, width: f64) -> u32 {
    const DIVISOR: f64 = 8.0;
    let scaled = f64::from(filters) * width;
    let mut rounded = DIVISOR.max(((scaled + DIVISOR / 2.0) / DIVISOR).floor() * DIVISOR);
    if rounded < 0.9 * scaled {
        rounded += DIVISOR;
    }
    rounded as u32
}

/// TF `round_repeats`: `ceil(depth * repeats)`.
pub fn round_repeats(repeats: u32, depth: f64) -> u32 {
    (depth * f64::from(repeats)).ceil().max(1.0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::variant::Variant;

    #[test]
    fn round_filters_matches_the_official_heads_and_stems() {
        // Stems and heads of B0..B7 (efficientnet-facts.md §1.3).
        let widths = [1.0, 1.0, 1.1, 1.2, 1.4, 1.6, 1.8, 2.0];
        let stems = [32, 32, 32, 40, 48, 48, 56, 64];
        let heads = [1280, 1280, 1408, 1536, 1792, 2048, 2304, 2560];
        for ((w, stem), head) in widths.iter().zip(stems).zip(heads) {
            assert_eq!(round_filters(32, *w), stem, "stem at w={w}");
            assert_eq!(round_filters(1280, *w), head, "head at w={w}");
        }
        // The 10% rule: 16 * 0.3 = 4.8 rounds to 8 by the floor of 8; 40*1.1=44 rounds to 48.
        assert_eq!(round_filters(16, 0.3), 8);
        assert_eq!(round_filters(40, 1.1), 48);
    }

    #[test]
    fn round_filters_never_shrinks_when_width_grows() {
        for filters in [16, 24, 40, 80, 112, 192, 320, 1280] {
            let mut last = 0;
            for step in 0..4000 {
                let w = 0.05 + step as f64 * 0.001;
                let r = round_filters(filters, w);
                assert!(r >= last, "{filters} at w={w}: {r} < {last}");
                last = r;
            }
        }
    }

    #[test]
    fn compound_phi_one_is_near_b2_and_validates_inputs() {
        let b0 = Variant::by_name("b0").unwrap().config();
        let c = compound(&b0, 1.0, Coefficients::default()).unwrap();
        assert!((c.width - 1.1).abs() < 1e-12 && (c.depth - 1.2).abs() < 1e-12);
        assert_eq!(c.resolution, 258); // 224 * 1.15 = 257.6
        assert!((Coefficients::default().flops_factor() - 1.92027).abs() < 1e-4);
        for (phi, coeffs, needle) in [
            (f64::NAN, Coefficients::default(), "phi"),
            (99.0, Coefficients::default(), "phi"),
            (
                1.0,
                Coefficients {
                    alpha: 0.9,
                    ..Coefficients::default()
                },
                "alpha",
            ),
            (
                1.0,
                Coefficients {
                    gamma: -1.0,
                    ..Coefficients::default()
                },
                "gamma",
            ),
        ] {
            let err = compound(&b0, phi, coeffs).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
        assert!(custom(&b0, -1.0, 1.0, 224)
            .unwrap_err()
            .to_string()
            .contains("width"));
        assert!(custom(&b0, 1.0, 1.0, 3)
            .unwrap_err()
            .to_string()
            .contains("resolution"));
    }
}
