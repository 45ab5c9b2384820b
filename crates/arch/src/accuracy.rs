//! An estimate of ImageNet top-1 from multiply-adds, read off the published B0..B7 accuracy-vs-MACs curve.
//!
//! The curve is piecewise linear in `log(MACs)` through the official B0..B7 checkpoints (paper v5 Table 2, MACs
//! from our resolved plans). Outside B0..B7 the nearest segment is extended and the estimate says so. It is an
//! estimate of what the official recipe reaches on ImageNet, not a measurement of any trained network.

use crate::accounting::account;
use crate::resolve::resolve;
use crate::variant::Variant;
use serde::Serialize;

/// A predicted top-1 accuracy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Top1Estimate {
    /// Predicted ImageNet top-1 in percent.
    pub top1: f64,
    /// True when the MACs fall outside the B0..B7 range and the curve was extended.
    pub extrapolated: bool,
}

/// The curve's points: (MACs, published top-1) for B0..B7.
pub fn published_curve() -> Vec<(u64, f64)> {
    ["b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7"]
        .iter()
        .map(|name| {
            let v = Variant::by_name(name).expect("B0..B7 are known");
            let plan = resolve(&v.config()).expect("official variants resolve");
            (
                account(&plan).macs,
                v.published_top1.expect("B0..B7 have a published top-1").0,
            )
        })
        .collect()
}

/// Predicts top-1 for a network of `macs` multiply-adds.
pub fn predict_top1(macs: u64) -> Top1Estimate {
    let curve = published_curve();
    let x = (macs.max(1) as f64).ln();
    let points: Vec<(f64, f64)> = curve.iter().map(|&(m, a)| ((m as f64).ln(), a)).collect();
    let segment = points
        .windows(2)
        .position(|w| x <= w[1].0)
        .unwrap_or(points.len() - 2);
    let ((x0, y0), (x1, y1)) = (points[segment], points[segment + 1]);
    let extrapolated = x < points[0].0 || x > points[points.len() - 1].0;
    let top1 = (y0 + (y1 - y0) * (x - x0) / (x1 - x0)).clamp(0.0, 100.0);
    Top1Estimate { top1, extrapolated }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_curve_passes_through_the_published_points() {
        for (macs, top1) in published_curve() {
            let e = predict_top1(macs);
            assert!(
                (e.top1 - top1).abs() < 1e-9 && !e.extrapolated,
                "{macs}: {e:?}"
            );
        }
    }

    #[test]
    fn between_points_it_interpolates_and_outside_it_says_so() {
        let curve = published_curve();
        let mid = ((curve[0].0 as f64) * (curve[1].0 as f64)).sqrt() as u64;
        let e = predict_top1(mid);
        assert!(e.top1 > 77.1 && e.top1 < 79.1 && !e.extrapolated);
        assert!(predict_top1(100_000_000).extrapolated);
        assert!(predict_top1(100_000_000).top1 < 77.1);
        assert!(predict_top1(80_000_000_000).extrapolated);
    }
}
