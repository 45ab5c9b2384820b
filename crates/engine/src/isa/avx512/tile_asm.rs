//! The inner loop of the GEMM's two-register register tile (9 to 12 pixels x 32 output channels), in
//! assembly.
//!
//! Each step of the loop loads a row of the panel (two registers), broadcasts one input of each pixel and
//! issues two FMAs per pixel. Compiled from intrinsics, every one of those broadcasts had its own
//! address: the pixels are a run-time stride apart, so the compiler kept a chain of integer adds, about
//! one per pixel per step, beside the 24 FMAs, and those compete for the ports that execute 512-bit
//! arithmetic. Here four base pointers, `3 * stride` apart, and the stride itself address all twelve
//! pixels through the scaled-index forms (`base`, `base + stride`, `+ 2 stride`, `+ 4 stride`,
//! `+ 8 stride`), so a step has six integer instructions (four base pointers, the panel pointer and the
//! counter) whatever the number of pixels. Timed in alternation with the compiled loop in one process,
//! 1x1 convolutions with 112 to 192 inputs went from 100-102 to 107 GMAC/s on one core (about 92% of
//! its FMA peak, 116 GMAC/s in a loop of nothing but FMAs), and B0 took 0.98x the time.

use super::tile::PREFETCH_ROWS;
use crate::panels::PANEL;
use std::arch::asm;
use std::arch::x86_64::__m512;

// The loop holds a panel row in two registers (`zmm24`, `zmm25`).
const _: () = assert!(PANEL == 32, "a panel row is two AVX-512 registers");

/// Bytes of one panel row.
const PANEL_ROW_BYTES: usize = PANEL * std::mem::size_of::<f32>();
/// How far ahead of the row being read the loop prefetches the panel, in bytes.
const PREFETCH_BYTES: usize = PREFETCH_ROWS * PANEL_ROW_BYTES;

/// `acc[p] += x[p] * w` over `steps` consecutive inputs of `R` pixels (9 to 12), the 32 columns of a
/// panel: pixel `p`'s inputs are the `steps` floats from `x + p * pixel`, and row `i` of the panel is at
/// `w + 32 * i`. Prefetches the panel [`PREFETCH_ROWS`] rows ahead, as the compiled loop does.
///
/// # Safety
/// The CPU must support AVX-512F; `steps` must be at least 1; those inputs and panel rows must be
/// readable; `acc` must point to `R` pairs of registers.
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) unsafe fn k_steps<const R: usize>(
    acc: *mut [__m512; 2],
    x: *const f32,
    pixel: usize,
    w: *const f32,
    steps: usize,
) {
    // SAFETY: forwarded; each arm's `R` matches the pixels it addresses.
    unsafe {
        match R {
            12 => k_steps_12(acc, x, pixel, w, steps),
            11 => k_steps_11(acc, x, pixel, w, steps),
            10 => k_steps_10(acc, x, pixel, w, steps),
            9 => k_steps_9(acc, x, pixel, w, steps),
            _ => unreachable!("the assembly tile has 9 to 12 pixels"),
        }
    }
}

/// One pixel's part of a step: its input broadcast from `$addr` (a memory operand over the base
/// pointers `b0`, `b3`, `b6`, `b9` and the stride `s`), times both panel registers, into the pixel's two
/// accumulators.
macro_rules! pixel_step {
    ($addr:literal, $lo:tt, $hi:tt) => {
        concat!(
            "vbroadcastss zmm26, dword ptr ",
            $addr,
            "\n",
            "vfmadd231ps ",
            $lo,
            ", zmm26, zmm24\n",
            "vfmadd231ps ",
            $hi,
            ", zmm26, zmm25\n"
        )
    };
}

/// Defines `$name`, the loop for the pixels listed (each with its address and its two accumulator
/// registers), as [`k_steps`] describes.
macro_rules! k_steps_for {
    ($name:ident: $(($p:literal, $addr:literal, $lo:tt, $hi:tt)),+) => {
        /// [`k_steps`] for this many pixels.
        ///
        /// # Safety
        /// As [`k_steps`].
        #[target_feature(enable = "avx512f")]
        #[inline]
        unsafe fn $name(
            acc: *mut [__m512; 2],
            x: *const f32,
            pixel: usize,
            w: *const f32,
            steps: usize,
        ) {
            let stride = pixel * std::mem::size_of::<f32>();
            let b0 = x as usize;
            // SAFETY: the caller's contract: the inputs and panel rows the loop reads are readable and
            // `acc` holds a pair of registers for every pixel listed.
            unsafe {
                asm!(
                    "2:",
                    "vmovups zmm24, zmmword ptr [{w}]",
                    "vmovups zmm25, zmmword ptr [{w} + 64]",
                    "prefetcht0 byte ptr [{w} + {ahead}]",
                    "prefetcht0 byte ptr [{w} + {ahead} + 64]",
                    $(pixel_step!($addr, $lo, $hi),)+
                    "add {b0}, 4",
                    "add {b3}, 4",
                    "add {b6}, 4",
                    "add {b9}, 4",
                    "add {w}, {row}",
                    "dec {n}",
                    "jnz 2b",
                    b0 = inout(reg) b0 => _,
                    b3 = inout(reg) b0 + 3 * stride => _,
                    b6 = inout(reg) b0 + 6 * stride => _,
                    b9 = inout(reg) b0 + 9 * stride => _,
                    s = in(reg) stride,
                    w = inout(reg) w => _,
                    n = inout(reg) steps => _,
                    row = const PANEL_ROW_BYTES,
                    ahead = const PREFETCH_BYTES,
                    $(inout($lo) (*acc.add($p))[0], inout($hi) (*acc.add($p))[1],)+
                    out("zmm24") _,
                    out("zmm25") _,
                    out("zmm26") _,
                    options(nostack, readonly),
                );
            }
        }
    };
}

/// Defines one [`k_steps_for`] function per name, the first for the pixels in the first list and each next
/// one for one pixel more, taken in turn from the second list.
macro_rules! k_steps_fns {
    ([$name:ident $(, $names:ident)*] [$($done:tt),+] [$($next:tt),*]) => {
        k_steps_for!($name: $($done),+);
        k_steps_fns!(@rest [$($names),*] [$($done),+] [$($next),*]);
    };
    (@rest [] [$($done:tt),+] []) => {};
    (@rest [$name:ident $(, $names:ident)*] [$($done:tt),+] [$next:tt $(, $more:tt)*]) => {
        k_steps_fns!([$name $(, $names)*] [$($done),+, $next] [$($more),*]);
    };
}

// Pixel, the address of its input, its two accumulators.
k_steps_fns!(
    [k_steps_9, k_steps_10, k_steps_11, k_steps_12]
    [
        (0, "[{b0}]", "zmm0", "zmm1"),
        (1, "[{b0} + {s}]", "zmm2", "zmm3"),
        (2, "[{b0} + {s}*2]", "zmm4", "zmm5"),
        (3, "[{b3}]", "zmm6", "zmm7"),
        (4, "[{b0} + {s}*4]", "zmm8", "zmm9"),
        (5, "[{b3} + {s}*2]", "zmm10", "zmm11"),
        (6, "[{b6}]", "zmm12", "zmm13"),
        (7, "[{b3} + {s}*4]", "zmm14", "zmm15"),
        (8, "[{b0} + {s}*8]", "zmm16", "zmm17")
    ]
    [
        (9, "[{b9}]", "zmm18", "zmm19"),
        (10, "[{b6} + {s}*4]", "zmm20", "zmm21"),
        (11, "[{b3} + {s}*8]", "zmm22", "zmm23")
    ]
);
