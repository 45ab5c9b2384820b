//! The AVX-512 kernels (x86-64 server CPUs: Intel Skylake-SP and later, AMD Zen 4 and later): a GEMM
//! tile of 12 pixels x 32 channels with its inner loop in assembly, the generic depthwise blocks on
//! 16-lane registers two channel blocks at a time, unrolled 5 x 5 rows, and swish and sigmoid in 14
//! instructions, all applying their epilogue in registers.

pub(crate) mod activation;
mod depthwise_span;
mod tile;
mod tile_asm;

use crate::isa::{kernel_table, Simd};
use depthwise_span::Span5x5;
use effnet_arch::variant::Activation;
use std::arch::x86_64::*;
use tile::Avx512Tile;

/// Whether this CPU runs these kernels: AVX-512 F, DQ, BW and VL (which every AVX-512 server CPU has),
/// AVX2 and FMA.
pub(crate) fn detected() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512dq")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
}

/// One 16-lane AVX-512 register: the block of the generic depthwise kernels on AVX-512, two channel
/// blocks per call (eight independent accumulators, and after them eight independent activations,
/// keep both FMA units busy through the four-cycle latency, where four left half of them idle).
pub(crate) struct Avx512;

impl Simd for Avx512 {
    type Block = __m512;
    const WIDE: bool = true;
    const FMA: bool = true;

    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::Block {
        // SAFETY (every method): the caller's contract, AVX-512 available and the pointers valid.
        unsafe { _mm512_loadu_ps(p) }
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::Block) {
        unsafe { _mm512_storeu_ps(p, v) }
    }

    #[inline(always)]
    unsafe fn mul_add(a: Self::Block, b: Self::Block, acc: Self::Block) -> Self::Block {
        unsafe { _mm512_fmadd_ps(a, b, acc) }
    }

    #[inline(always)]
    unsafe fn mul_add_scalar(a: f32, b: Self::Block, acc: Self::Block) -> Self::Block {
        unsafe { _mm512_fmadd_ps(_mm512_set1_ps(a), b, acc) }
    }

    #[inline(always)]
    unsafe fn add(a: Self::Block, b: Self::Block) -> Self::Block {
        unsafe { _mm512_add_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn activate(activation: Option<Activation>, v: Self::Block) -> Self::Block {
        unsafe {
            match activation {
                None => v,
                Some(Activation::Swish) => activation::swish(v),
                Some(Activation::Relu6) => activation::relu6(v),
                Some(Activation::Sigmoid) => activation::sigmoid(v),
            }
        }
    }
}

kernel_table!(
    tile: Avx512Tile,
    simd: Avx512,
    span: Span5x5,
    #[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")]
);
