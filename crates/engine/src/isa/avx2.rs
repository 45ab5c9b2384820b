//! The AVX2 + FMA kernels (x86-64 CPUs without AVX-512: most laptops and many cloud machines): the
//! generic kernel bodies on pairs of 8-lane registers.
//!
//! With 16 vector registers, the GEMM tile is 6 pixels x 16 output channels (12 accumulators, two
//! weight registers and the broadcast input), the shape of the classic AVX2 SGEMM microkernel; the
//! depthwise block is 4 pixels x 16 channels (8 accumulators).

use crate::activation::{activate_lanes, impl_lanes};
use crate::depthwise::NoSpan;
use crate::isa::{kernel_table, Simd};
use crate::tile::SimdTile;
use effnet_arch::variant::Activation;
use std::arch::x86_64::*;

/// Whether this CPU has AVX2 and FMA.
pub(crate) fn detected() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// Two 8-lane AVX registers.
pub(crate) struct Avx2;

impl Simd for Avx2 {
    type Block = [__m256; 2];
    const WIDE: bool = false;
    const FMA: bool = true;

    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::Block {
        // SAFETY: the caller's contract: 16 readable floats, AVX available.
        unsafe { [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))] }
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::Block) {
        // SAFETY: the caller's contract: 16 writable floats, AVX available.
        unsafe {
            _mm256_storeu_ps(p, v[0]);
            _mm256_storeu_ps(p.add(8), v[1]);
        }
    }

    #[inline(always)]
    unsafe fn mul_add(a: Self::Block, b: Self::Block, acc: Self::Block) -> Self::Block {
        // SAFETY: the caller's contract: FMA available.
        unsafe {
            [
                _mm256_fmadd_ps(a[0], b[0], acc[0]),
                _mm256_fmadd_ps(a[1], b[1], acc[1]),
            ]
        }
    }

    #[inline(always)]
    unsafe fn mul_add_scalar(a: f32, b: Self::Block, acc: Self::Block) -> Self::Block {
        // SAFETY: the caller's contract: AVX and FMA available.
        unsafe { Self::mul_add([_mm256_set1_ps(a); 2], b, acc) }
    }

    #[inline(always)]
    unsafe fn add(a: Self::Block, b: Self::Block) -> Self::Block {
        // SAFETY: the caller's contract: AVX available.
        unsafe { [_mm256_add_ps(a[0], b[0]), _mm256_add_ps(a[1], b[1])] }
    }

    #[inline(always)]
    unsafe fn activate(activation: Option<Activation>, v: Self::Block) -> Self::Block {
        // SAFETY: the caller's contract: AVX2 and FMA available.
        unsafe {
            [
                activate_lanes(activation, v[0]),
                activate_lanes(activation, v[1]),
            ]
        }
    }

    #[inline(always)]
    unsafe fn prefetch(p: *const f32) {
        // SAFETY: a prefetch never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
    }
}

kernel_table!(
    tile: SimdTile<Avx2, 6>,
    simd: Avx2,
    span: NoSpan,
    #[target_feature(enable = "avx2,fma")]
);

// The activations' arithmetic on one 8-lane register (x86's `max` and `min` return their second
// operand when either is NaN, as `Lanes` asks).
impl_lanes!(
    __m256,
    splat: _mm256_set1_ps,
    add: _mm256_add_ps,
    sub: _mm256_sub_ps,
    mul: _mm256_mul_ps,
    div: _mm256_div_ps,
    max: _mm256_max_ps,
    min: _mm256_min_ps,
    mul_add: |a, b, c| _mm256_fmadd_ps(a, b, c),
    pow2: |n| {
        let biased = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
        _mm256_castsi256_ps(_mm256_slli_epi32::<23>(biased))
    }
);
