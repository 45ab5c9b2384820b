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

/// The activations on 16 AVX-512 lanes. Only two ports execute 512-bit arithmetic, so the sigmoid is
/// written for the fewest instructions: `x` clamped to [-88, 88] (where f32's sigmoid is already 0 or 1),
/// `e = exp(-x)` as a one-constant range reduction with round-to-nearest by adding and subtracting
/// 1.5 * 2^23, a degree-5 minimax polynomial and `scalef` for the power of two, then `1 / (1 + e)` by the
/// hardware reciprocal estimate plus one Newton step (the divide unit was the bottleneck of every
/// swish-heavy pass). 17 instructions for 16 sigmoids, swish included.
#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    use super::ROUND;
    use effnet_arch::variant::Activation;
    use std::arch::x86_64::*;

    /// Minimax coefficients of `e^t` on `[-ln2/2, ln2/2]`, degree 5 down to 1 (the constant term is 1):
    /// XNNPACK's `p5` set (hex floats 0x1.0F9F9Cp-7 ... 0x1.FFFFF6p-1).
    const EXP_POLY: [f32; 5] = [
        8.289_291e-3,
        4.189_782_2e-2,
        0.166_676_52,
        0.499_991_5,
        0.999_999_7,
    ];
    /// Beyond this magnitude f32's sigmoid is 0 (a subnormal below -87.3) or 1, and `e^-x` stays finite.
    const LIMIT: f32 = 88.0;

    /// `1 / (1 + e^-x)` per lane.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn sigmoid(x: __m512) -> __m512 {
        sigmoid_from(at_least_minus_limit(x))
    }

    /// `max(x, -LIMIT)`, NaN kept (`max` returns its second operand when either is NaN).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn at_least_minus_limit(x: __m512) -> __m512 {
        _mm512_max_ps(_mm512_set1_ps(-LIMIT), x)
    }

    /// The sigmoid of `x >= -LIMIT` (or NaN). Swish multiplies it by that `x` rather than the unclamped
    /// one, so far below -88 it gives -0 rather than `x` times a subnormal.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn sigmoid_from(x: __m512) -> __m512 {
        let one = _mm512_set1_ps(1.0);
        // NaN passes through `min` as through `max`.
        let x = _mm512_min_ps(_mm512_set1_ps(LIMIT), x);
        // -x = n ln2 + t with n an integer and |t| <= ln2 / 2.
        let biased = _mm512_fmadd_ps(
            x,
            _mm512_set1_ps(-std::f32::consts::LOG2_E),
            _mm512_set1_ps(ROUND),
        );
        let n = _mm512_sub_ps(biased, _mm512_set1_ps(ROUND));
        let t = _mm512_fnmsub_ps(n, _mm512_set1_ps(std::f32::consts::LN_2), x);
        let mut p = _mm512_set1_ps(EXP_POLY[0]);
        for c in &EXP_POLY[1..] {
            p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(*c));
        }
        let e = _mm512_scalef_ps(_mm512_fmadd_ps(p, t, one), n);
        let d = _mm512_add_ps(one, e);
        let r = _mm512_rcp14_ps(d);
        // One Newton step: r + r * (1 - d * r).
        _mm512_fmadd_ps(_mm512_fnmadd_ps(d, r, one), r, r)
    }

    /// `x * sigmoid(x)` per lane.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn swish(x: __m512) -> __m512 {
        let x = at_least_minus_limit(x);
        _mm512_mul_ps(x, sigmoid_from(x))
    }

    /// `min(max(x, 0), 6)` per lane, NaN kept.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn relu6(x: __m512) -> __m512 {
        // Constants first: `max` and `min` return their second operand when either is NaN.
        _mm512_min_ps(_mm512_set1_ps(6.0), _mm512_max_ps(_mm512_setzero_ps(), x))
    }

    /// `activation(x)` per lane.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn apply(activation: Option<Activation>, x: __m512) -> __m512 {
        match activation {
            None => x,
            Some(Activation::Swish) => swish(x),
            Some(Activation::Relu6) => relu6(x),
            Some(Activation::Sigmoid) => sigmoid(x),
        }
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

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_activations_match_their_definitions() {
        use std::arch::x86_64::{_mm512_loadu_ps, _mm512_storeu_ps};
        if !is_x86_feature_detected!("avx512f") {
            return;
        }
        let mut xs: Vec<f32> = (-1000..=1000).map(|i| i as f32 * 0.09).collect();
        xs.extend([
            -1e30,
            -1000.0,
            -88.5,
            -87.0,
            87.0,
            88.5,
            1000.0,
            1e30,
            f32::MIN,
            f32::MAX,
        ]);
        xs.extend([-0.0, 1e-30, -1e-30, f32::EPSILON, f32::NAN]);
        xs.resize(xs.len().next_multiple_of(16), 0.0);
        for chunk in xs.chunks_exact(16) {
            for activation in [Activation::Swish, Activation::Sigmoid, Activation::Relu6] {
                let mut got = [0f32; 16];
                // SAFETY: AVX-512F was detected; the pointers address 16 floats each.
                unsafe {
                    let v = avx512::apply(Some(activation), _mm512_loadu_ps(chunk.as_ptr()));
                    _mm512_storeu_ps(got.as_mut_ptr(), v);
                }
                for (&x, g) in chunk.iter().zip(got) {
                    let x64 = f64::from(x);
                    let s = 1.0 / (1.0 + (-x64).exp());
                    let want = match activation {
                        Activation::Swish => x64 * s,
                        Activation::Sigmoid => s,
                        Activation::Relu6 => x64.clamp(0.0, 6.0),
                    };
                    if x.is_nan() {
                        assert!(g.is_nan(), "{activation:?}(NaN) = {g}");
                        continue;
                    }
                    let err = (f64::from(g) - want).abs() / want.abs().max(1.0);
                    assert!(err < 1e-6, "{activation:?}({x}) = {g}, want {want}");
                }
            }
        }
    }
}
