//! The portable kernels: the generic kernel bodies on plain arrays of 16 floats, compiled for the target's
//! baseline features (SSE2 on x86-64, NEON on aarch64), on every architecture. They are the twins that
//! the hand-written kernels are tested beside, and what runs where no other instruction set does.

use crate::activation::apply;
use crate::depthwise::NoSpan;
use crate::isa::{kernel_table, Simd};
use crate::tile::SimdTile;
use effnet_arch::variant::Activation;

/// Sixteen floats in an array; the compiler maps the lane loops onto whatever vector registers the
/// baseline has.
pub(crate) struct Portable;

impl Simd for Portable {
    type Block = [f32; 16];
    const WIDE: bool = false;
    const FMA: bool = false;

    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::Block {
        // SAFETY: the caller's contract: 16 readable floats.
        unsafe { p.cast::<[f32; 16]>().read_unaligned() }
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::Block) {
        // SAFETY: the caller's contract: 16 writable floats.
        unsafe { p.cast::<[f32; 16]>().write_unaligned(v) }
    }

    #[inline(always)]
    unsafe fn mul_add(a: Self::Block, b: Self::Block, acc: Self::Block) -> Self::Block {
        std::array::from_fn(|i| a[i] * b[i] + acc[i])
    }

    #[inline(always)]
    unsafe fn mul_add_scalar(a: f32, b: Self::Block, acc: Self::Block) -> Self::Block {
        std::array::from_fn(|i| a * b[i] + acc[i])
    }

    #[inline(always)]
    unsafe fn add(a: Self::Block, b: Self::Block) -> Self::Block {
        std::array::from_fn(|i| a[i] + b[i])
    }

    #[inline(always)]
    unsafe fn activate(activation: Option<Activation>, v: Self::Block) -> Self::Block {
        let mut v = v;
        apply(activation, &mut v);
        v
    }
}

// Tiles of 4 pixels x 16 accumulators: with SSE2's 16 registers more pixels would spill.
kernel_table!(
    tile: SimdTile<Portable, 4>,
    simd: Portable,
    span: NoSpan
);
