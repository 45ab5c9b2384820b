//! Activations written so the compiler vectorises them: `exp` is a range reduction plus a degree-6
//! polynomial (relative error about 1e-7) instead of a libm call, which keeps swish and sigmoid in SIMD
//! registers. We write our own because libm's `expf` is scalar and was 30% of B0's inference time.

use effnet_arch::variant::Activation;

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// Adding and subtracting 1.5 * 2^23 rounds to the nearest integer in f32 arithmetic.
const ROUND: f32 = 12_582_912.0;

/// One register of f32 lanes (or one f32), with the arithmetic the activations are written in: the
/// same [`exp_lanes`] and [`activate_lanes`] run on f32 scalars (which the compiler vectorises over
/// slices), AVX2 and NEON registers. `max` and `min` return their second operand when either is NaN,
/// as x86's instructions do, so the clamps put the constant first and keep NaN.
pub(crate) trait Lanes: Copy {
    /// Every lane `v`.
    ///
    /// # Safety
    /// The instruction set of the register type must be available (the same for every method).
    unsafe fn splat(v: f32) -> Self;
    /// `a + b`.
    unsafe fn add(a: Self, b: Self) -> Self;
    /// `a - b`.
    unsafe fn sub(a: Self, b: Self) -> Self;
    /// `a * b`.
    unsafe fn mul(a: Self, b: Self) -> Self;
    /// `a * b + c`, fused where the instruction set has FMA.
    unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self;
    /// `a / b`.
    unsafe fn div(a: Self, b: Self) -> Self;
    /// `a` if greater, else `b`.
    unsafe fn max(a: Self, b: Self) -> Self;
    /// `a` if smaller, else `b`.
    unsafe fn min(a: Self, b: Self) -> Self;
    /// `2^n` for integral `n` in [-126, 127].
    unsafe fn pow2(n: Self) -> Self;
}

impl Lanes for f32 {
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        v
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        a + b
    }
    #[inline(always)]
    unsafe fn sub(a: Self, b: Self) -> Self {
        a - b
    }
    #[inline(always)]
    unsafe fn mul(a: Self, b: Self) -> Self {
        a * b
    }
    // Unfused: without FMA in the baseline, `mul_add` would be a library call.
    #[inline(always)]
    unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self {
        a * b + c
    }
    #[inline(always)]
    unsafe fn div(a: Self, b: Self) -> Self {
        a / b
    }
    #[inline(always)]
    unsafe fn max(a: Self, b: Self) -> Self {
        if a > b {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    unsafe fn min(a: Self, b: Self) -> Self {
        if a < b {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    unsafe fn pow2(n: Self) -> Self {
        // SAFETY: the caller keeps `n` integral within [-126, 127], so the conversion is exact.
        let n = unsafe { n.to_int_unchecked::<i32>() };
        f32::from_bits(((n + 127) as u32) << 23)
    }
}

/// Implements [`Lanes`] for a register type from its intrinsics: the binary operations by name,
/// `mul_add` and `pow2` as expressions (their operand orders and conversions differ between
/// instruction sets).
macro_rules! impl_lanes {
    ($t:ty, splat: $splat:path, add: $add:path, sub: $sub:path, mul: $mul:path, div: $div:path,
     max: $max:path, min: $min:path, mul_add: |$a:ident, $b:ident, $c:ident| $mul_add:expr,
     pow2: |$n:ident| $pow2:expr) => {
        // SAFETY (every method): the caller's contract, the register type's instruction set available.
        impl $crate::activation::Lanes for $t {
            #[inline(always)]
            unsafe fn splat(v: f32) -> Self {
                unsafe { $splat(v) }
            }
            #[inline(always)]
            unsafe fn add(a: Self, b: Self) -> Self {
                unsafe { $add(a, b) }
            }
            #[inline(always)]
            unsafe fn sub(a: Self, b: Self) -> Self {
                unsafe { $sub(a, b) }
            }
            #[inline(always)]
            unsafe fn mul(a: Self, b: Self) -> Self {
                unsafe { $mul(a, b) }
            }
            #[inline(always)]
            unsafe fn mul_add($a: Self, $b: Self, $c: Self) -> Self {
                unsafe { $mul_add }
            }
            #[inline(always)]
            unsafe fn div(a: Self, b: Self) -> Self {
                unsafe { $div(a, b) }
            }
            #[inline(always)]
            unsafe fn max(a: Self, b: Self) -> Self {
                unsafe { $max(a, b) }
            }
            #[inline(always)]
            unsafe fn min(a: Self, b: Self) -> Self {
                unsafe { $min(a, b) }
            }
            #[inline(always)]
            unsafe fn pow2($n: Self) -> Self {
                unsafe { $pow2 }
            }
        }
    };
}
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) use impl_lanes;

/// `e^x` per lane, clamped to the finite range (NaN kept): `x = n ln 2 + r` with `n` rounded to the
/// nearest integer, a degree-6 polynomial for `e^r`, and `2^n` from the exponent bits.
///
/// # Safety
/// The instruction set of `L` must be available.
#[inline(always)]
pub(crate) unsafe fn exp_lanes<L: Lanes>(x: L) -> L {
    // SAFETY: the caller's instruction set.
    unsafe {
        let x = L::min(L::splat(88.0), L::max(L::splat(-87.0), x));
        let round = L::splat(ROUND);
        let n = L::sub(L::mul_add(x, L::splat(LOG2E), round), round);
        let r = L::sub(
            L::sub(x, L::mul(n, L::splat(LN2_HI))),
            L::mul(n, L::splat(LN2_LO)),
        );
        let mut p = L::splat(1.0 / 720.0);
        for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = L::mul_add(p, r, L::splat(c));
        }
        L::mul(p, L::pow2(n))
    }
}

/// `activation` per lane (the identity for none).
///
/// # Safety
/// The instruction set of `L` must be available.
#[inline(always)]
pub(crate) unsafe fn activate_lanes<L: Lanes>(activation: Option<Activation>, x: L) -> L {
    // SAFETY: the caller's instruction set. (No closures here or in the callers: a closure does not
    // take the target features of the function it is written in, so its intrinsics would not inline.)
    unsafe {
        match activation {
            None => x,
            Some(Activation::Swish) => L::mul(x, sigmoid_lanes(x)),
            Some(Activation::Relu6) => L::min(L::splat(6.0), L::max(L::splat(0.0), x)),
            Some(Activation::Sigmoid) => sigmoid_lanes(x),
        }
    }
}

/// `1 / (1 + e^-x)` per lane.
///
/// # Safety
/// The instruction set of `L` must be available.
#[inline(always)]
unsafe fn sigmoid_lanes<L: Lanes>(x: L) -> L {
    // SAFETY: the caller's instruction set.
    unsafe {
        let e = exp_lanes(L::sub(L::splat(0.0), x));
        L::div(L::splat(1.0), L::add(L::splat(1.0), e))
    }
}

/// `activation` as a number, for kernels that take it as a const generic parameter (see
/// [`with_activation_code`]): their activation is then chosen at compile time, outside their loops.
pub(crate) const fn activation_code(activation: Option<Activation>) -> u8 {
    match activation {
        None => 0,
        Some(Activation::Swish) => 1,
        Some(Activation::Relu6) => 2,
        Some(Activation::Sigmoid) => 3,
    }
}

/// The activation of [`activation_code`] `code`.
pub(crate) const fn activation_of(code: u8) -> Option<Activation> {
    match code {
        1 => Some(Activation::Swish),
        2 => Some(Activation::Relu6),
        3 => Some(Activation::Sigmoid),
        _ => None,
    }
}

/// Evaluates `$body` with the constant `$code` bound to the [`activation_code`] of `$activation`: one
/// copy of `$body` per activation, so a kernel instantiated with it never matches on the activation in
/// its loops. (A macro, not a closure: a closure would not take the caller's target features.)
macro_rules! with_activation_code {
    ($activation:expr, |$code:ident| $body:expr) => {
        match $crate::activation::activation_code($activation) {
            0 => {
                const $code: u8 = 0;
                $body
            }
            1 => {
                const $code: u8 = 1;
                $body
            }
            2 => {
                const $code: u8 = 2;
                $body
            }
            _ => {
                const $code: u8 = 3;
                $body
            }
        }
    };
}
pub(crate) use with_activation_code;

/// `e^x` for f32, vectorisable; clamped to the finite range.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // SAFETY: f32 arithmetic needs no instruction set.
    unsafe { exp_lanes(x) }
}

/// `1 / (1 + e^-x)`.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    // SAFETY: f32 arithmetic needs no instruction set.
    unsafe { activate_lanes(Some(Activation::Sigmoid), x) }
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
