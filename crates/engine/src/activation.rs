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

/// Evaluates `$body` with `$f` bound to the AVX-512 function of `$activation` (the identity for none): one
/// copy of `$body` per activation, so a store loop inside it never branches on the activation. Shared by
/// the GEMM tile and the depthwise kernels.
#[cfg(target_arch = "x86_64")]
macro_rules! with_avx512_activation {
    ($activation:expr, |$f:ident| $body:expr) => {{
        use effnet_arch::variant::Activation;
        use $crate::activation::avx512;
        match $activation {
            None => {
                let $f = |y: std::arch::x86_64::__m512| y;
                $body
            }
            Some(Activation::Swish) => {
                let $f = |y| avx512::swish(y);
                $body
            }
            Some(Activation::Relu6) => {
                let $f = |y| avx512::relu6(y);
                $body
            }
            Some(Activation::Sigmoid) => {
                let $f = |y| avx512::sigmoid(y);
                $body
            }
        }
    }};
}
#[cfg(target_arch = "x86_64")]
pub(crate) use with_avx512_activation;

/// The activations on 16 AVX-512 lanes (AVX-512F and DQ, which every AVX-512 server CPU has). Only two
/// ports execute 512-bit arithmetic, so the sigmoid is written for the fewest instructions: `x` clamped
/// below at -88 (where f32's sigmoid is already 0, and `e^-x` stays finite), `e^-x = 2^v` for
/// `v = -x log2(e)` split by `reduce` into `floor(v)` and `f` in [0, 1), a degree-5 minimax polynomial
/// for `2^f` and `scalef` for the power of two (which also sends `v` far below -126 to 0, so no upper
/// clamp is needed), then `1 / (1 + e)` by the hardware reciprocal estimate plus one Newton step (the
/// divide unit was the bottleneck of every swish-heavy pass). 14 instructions for 16 swish values, two
/// fewer than a round-to-nearest reduction by constants with clamps on both sides. The rounded product
/// `v` is off by up to `|v| 2^-24`, 5e-6 relative in `e^-x` at x = -88, but the sigmoid's error is that
/// times `s (1 - s)`, which is tiny wherever `|x|` is large.
#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    use std::arch::x86_64::*;

    /// Coefficients of `2^f` on `[0, 1)`, degree 5 down to 1 (the constant term is 1): a minimax fit of
    /// the relative error (1.6e-7 evaluated in f32), from `tools/exp2_poly.py`.
    const EXP2_POLY: [f32; 5] = [
        1.867_144_5e-3,
        9.017e-3,
        5.579_993_5e-2,
        0.240_164_44,
        0.693_151_3,
    ];
    /// Below minus this f32's sigmoid is 0 (a subnormal below -87.3); at it, `e^-x` is still finite.
    const LIMIT: f32 = 88.0;

    /// `1 / (1 + e^-x)` per lane.
    ///
    /// # Safety
    /// The CPU must support AVX-512F and DQ.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    pub fn sigmoid(x: __m512) -> __m512 {
        sigmoid_from(at_least_minus_limit(x))
    }

    /// Whether this CPU runs these functions (and the kernels that inline them).
    pub fn detected() -> bool {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512dq")
    }

    /// `max(x, -LIMIT)`, NaN kept (`max` returns its second operand when either is NaN).
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn at_least_minus_limit(x: __m512) -> __m512 {
        _mm512_max_ps(_mm512_set1_ps(-LIMIT), x)
    }

    /// The sigmoid of `x >= -LIMIT` (or NaN). Swish multiplies it by that `x` rather than the unclamped
    /// one, so far below -88 it gives -0 rather than `x` times a subnormal.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn sigmoid_from(x: __m512) -> __m512 {
        let one = _mm512_set1_ps(1.0);
        // e^-x = 2^v = 2^floor(v) * 2^f; `reduce` with rounding down gives f = v - floor(v) (0 for
        // infinite v, whose `scalef` gives 0 or infinity), and `scalef` takes the floor of `v` itself.
        let v = _mm512_mul_ps(x, _mm512_set1_ps(-std::f32::consts::LOG2_E));
        let f = _mm512_reduce_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(v);
        let mut p = _mm512_set1_ps(EXP2_POLY[0]);
        for c in &EXP2_POLY[1..] {
            p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(*c));
        }
        let e = _mm512_scalef_ps(_mm512_fmadd_ps(p, f, one), v);
        let d = _mm512_add_ps(one, e);
        let r = _mm512_rcp14_ps(d);
        // One Newton step: r + r * (1 - d * r).
        _mm512_fmadd_ps(_mm512_fnmadd_ps(d, r, one), r, r)
    }

    /// `x * sigmoid(x)` per lane.
    ///
    /// # Safety
    /// The CPU must support AVX-512F and DQ.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    pub fn swish(x: __m512) -> __m512 {
        let x = at_least_minus_limit(x);
        _mm512_mul_ps(x, sigmoid_from(x))
    }

    /// `min(max(x, 0), 6)` per lane, NaN kept.
    ///
    /// # Safety
    /// The CPU must support AVX-512F and DQ.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    pub fn relu6(x: __m512) -> __m512 {
        // Constants first: `max` and `min` return their second operand when either is NaN.
        _mm512_min_ps(_mm512_set1_ps(6.0), _mm512_max_ps(_mm512_setzero_ps(), x))
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
        if !avx512::detected() {
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
            f32::NEG_INFINITY,
            f32::INFINITY,
        ]);
        xs.extend([-0.0, 1e-30, -1e-30, f32::EPSILON, f32::NAN]);
        xs.resize(xs.len().next_multiple_of(16), 0.0);
        for chunk in xs.chunks_exact(16) {
            for activation in [Activation::Swish, Activation::Sigmoid, Activation::Relu6] {
                let mut got = [0f32; 16];
                // SAFETY: AVX-512F and DQ were detected; the pointers address 16 floats each.
                unsafe {
                    let x = _mm512_loadu_ps(chunk.as_ptr());
                    let v = match activation {
                        Activation::Swish => avx512::swish(x),
                        Activation::Sigmoid => avx512::sigmoid(x),
                        Activation::Relu6 => avx512::relu6(x),
                    };
                    _mm512_storeu_ps(got.as_mut_ptr(), v);
                }
                for (&x, g) in chunk.iter().zip(got) {
                    let x64 = f64::from(x);
                    let s = 1.0 / (1.0 + (-x64).exp());
                    let want = match activation {
                        // Swish's limit at -infinity is 0 (where `x * s` is -inf * 0).
                        Activation::Swish if x == f32::NEG_INFINITY => 0.0,
                        Activation::Swish => x64 * s,
                        Activation::Sigmoid => s,
                        Activation::Relu6 => x64.clamp(0.0, 6.0),
                    };
                    if x.is_nan() {
                        assert!(g.is_nan(), "{activation:?}(NaN) = {g}");
                        continue;
                    }
                    if want.is_infinite() {
                        assert_eq!(f64::from(g), want, "{activation:?}({x})");
                        continue;
                    }
                    let err = (f64::from(g) - want).abs() / want.abs().max(1.0);
                    assert!(err < 1e-6, "{activation:?}({x}) = {g}, want {want}");
                }
            }
        }
    }
}
