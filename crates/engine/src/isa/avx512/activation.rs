//! The activations on 16 AVX-512 lanes (AVX-512F and DQ, which every AVX-512 server CPU has). Only two
//! ports execute 512-bit arithmetic, so the sigmoid is written for the fewest instructions: `x` clamped
//! below at -88 (where f32's sigmoid is already 0, and `e^-x` stays finite), `e^-x = 2^v` for
//! `v = -x log2(e)` split by `reduce` into `floor(v)` and `f` in [0, 1), a degree-5 minimax polynomial
//! for `2^f` and `scalef` for the power of two (which also sends `v` far below -126 to 0, so no upper
//! clamp is needed), then `1 / (1 + e)` by the hardware reciprocal estimate plus one Newton step (the
//! divide unit was the bottleneck of every swish-heavy pass). 14 instructions for 16 swish values, two
//! fewer than a round-to-nearest reduction by constants with clamps on both sides. The rounded product
//! `v` is off by up to `|v| 2^-24`, 5e-6 relative in `e^-x` at x = -88, but the sigmoid's error is that
//! times `s (1 - s)`, which is tiny wherever `|x|` is large.

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

#[cfg(test)]
mod tests {
    use super::*;
    use effnet_arch::variant::Activation;

    #[test]
    fn avx512_activations_match_their_definitions() {
        use std::arch::x86_64::{_mm512_loadu_ps, _mm512_storeu_ps};
        if !super::super::detected() {
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
                // SAFETY: AVX-512 was detected; the pointers address 16 floats each.
                unsafe {
                    let x = _mm512_loadu_ps(chunk.as_ptr());
                    let v = match activation {
                        Activation::Swish => swish(x),
                        Activation::Sigmoid => sigmoid(x),
                        Activation::Relu6 => relu6(x),
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
