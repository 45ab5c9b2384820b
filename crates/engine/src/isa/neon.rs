//! The NEON kernels of aarch64 (Apple Silicon, AWS Graviton, Raspberry Pi 4 and 5): the generic kernel
//! bodies on groups of four 4-lane registers.
//!
//! With 32 vector registers, the GEMM tile is 6 pixels x 16 output channels (24 accumulators, four
//! weight registers, and each pixel's input multiplied in by `fmla` by element); the depthwise block
//! is 4 pixels x 16 channels (16 accumulators). NEON is part of every aarch64 CPU, so it needs no
//! detection.

use crate::activation::{activate_lanes, impl_lanes};
use crate::depthwise::NoSpan;
use crate::isa::{kernel_table, Simd};
use crate::tile::SimdTile;
use effnet_arch::variant::Activation;
use std::arch::aarch64::*;

/// Four 4-lane NEON registers.
pub(crate) struct Neon;

impl Simd for Neon {
    type Block = [float32x4_t; 4];
    const WIDE: bool = false;
    const FMA: bool = true;

    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::Block {
        // SAFETY: the caller's contract: 16 readable floats.
        unsafe { std::array::from_fn(|i| vld1q_f32(p.add(4 * i))) }
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::Block) {
        for (i, v) in v.into_iter().enumerate() {
            // SAFETY: the caller's contract: 16 writable floats.
            unsafe { vst1q_f32(p.add(4 * i), v) };
        }
    }

    #[inline(always)]
    unsafe fn mul_add(a: Self::Block, b: Self::Block, acc: Self::Block) -> Self::Block {
        // SAFETY: NEON is part of every aarch64 CPU.
        std::array::from_fn(|i| unsafe { vfmaq_f32(acc[i], a[i], b[i]) })
    }

    #[inline(always)]
    unsafe fn mul_add_scalar(a: f32, b: Self::Block, acc: Self::Block) -> Self::Block {
        // SAFETY: NEON is part of every aarch64 CPU.
        std::array::from_fn(|i| unsafe { vfmaq_n_f32(acc[i], b[i], a) })
    }

    #[inline(always)]
    unsafe fn add(a: Self::Block, b: Self::Block) -> Self::Block {
        // SAFETY: NEON is part of every aarch64 CPU.
        std::array::from_fn(|i| unsafe { vaddq_f32(a[i], b[i]) })
    }

    #[inline(always)]
    unsafe fn activate(activation: Option<Activation>, v: Self::Block) -> Self::Block {
        let mut v = v;
        for x in v.iter_mut() {
            // SAFETY: NEON is part of every aarch64 CPU.
            *x = unsafe { activate_lanes(activation, *x) };
        }
        v
    }
}

// The activations' arithmetic on one 4-lane register. NEON's `max` and `min` return NaN when either
// operand is NaN, which keeps NaN as `Lanes` asks.
impl_lanes!(
    float32x4_t,
    splat: vdupq_n_f32,
    add: vaddq_f32,
    sub: vsubq_f32,
    mul: vmulq_f32,
    div: vdivq_f32,
    max: vmaxq_f32,
    min: vminq_f32,
    mul_add: |a, b, c| vfmaq_f32(c, a, b),
    pow2: |n| {
        let biased = vaddq_s32(vcvtnq_s32_f32(n), vdupq_n_s32(127));
        vreinterpretq_f32_s32(vshlq_n_s32::<23>(biased))
    }
);

kernel_table!(
    tile: SimdTile<Neon, 6>,
    simd: Neon,
    span: NoSpan,
    #[target_feature(enable = "neon")]
);
