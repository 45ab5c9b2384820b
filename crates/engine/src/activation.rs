//! Activations written so the compiler vectorises them: `exp` is a range reduction plus a degree-6
//! polynomial (relative error about 1e-7) instead of a libm call, which keeps swish and sigmoid in SIMD
//! registers. We write our own because libm's `expf` is scalar and was 30% of B0's inference time.

use effnet_arch::variant::Activation;

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// Adding and subtracting 1.5 * 2^23 rounds to the nearest integer in f32 arithmetic.
const ROUND: f32 = 12_582_912.0;

/// `e^x` for f32, vectorisable; clamped to the finite range.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // SAFETY: the clamp above keeps `n` within [-126, 127], so the conversion is exact and in range.
    let n = unsafe { n.to_int_unchecked::<i32>() };
    p * f32::from_bits(((n + 127) as u32) << 23)
}

/// `1 / (1 + e^-x)`.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// Applies `activation` to every element of `values`, in place (the match is hoisted out of the loop).
#[inline(always)]
pub fn apply(activation: Option<Activation>, values: &mut [f32]) {
    match activation {
        None => {}
        Some(Activation::Swish) => values.iter_mut().for_each(|v| *v *= sigmoid(*v)),
        Some(Activation::Relu6) => values.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0)),
        Some(Activation::Sigmoid) => values.iter_mut().for_each(|v| *v = sigmoid(*v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_over_the_range_that_matters() {
        let mut worst = 0f64;
        for i in -8000..=8000 {
            let x = i as f32 * 0.01;
            let rel = ((f64::from(exp(x)) - f64::from(x).exp()) / f64::from(x).exp()).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert!(exp(-1000.0) >= 0.0 && exp(-1000.0) < 1e-37 && exp(1000.0).is_finite());
    }

    #[test]
    fn activations_match_their_definitions() {
        let mut v = [-7.0, -1.0, 0.0, 2.0, 7.0];
        apply(Some(Activation::Relu6), &mut v);
        assert_eq!(v, [0.0, 0.0, 0.0, 2.0, 6.0]);
        for x in [-30.0f32, -2.0, 0.0, 0.5, 2.0, 30.0] {
            let swish = f64::from(x) / (1.0 + (-f64::from(x)).exp());
            let mut v = [x];
            apply(Some(Activation::Swish), &mut v);
            assert!((f64::from(v[0]) - swish).abs() < 1e-6, "swish({x})");
            assert!(
                (f64::from(sigmoid(x)) - 1.0 / (1.0 + (-f64::from(x)).exp())).abs() < 1e-7,
                "sigmoid({x})"
            );
        }
        assert!(sigmoid(-200.0) >= 0.0 && sigmoid(200.0) == 1.0);
    }
}
