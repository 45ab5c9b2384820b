//! The AVX-512 kernels (x86-64 server CPUs: Intel Skylake-SP and later, AMD Zen 4 and later): a GEMM
//! tile of 12 pixels x 32 channels with its inner loop in assembly, depthwise blocks of two 16-channel
//! registers with unrolled 5 x 5 rows, and swish and sigmoid in 14 instructions, all applying their
//! epilogue in registers.

pub mod activation;
mod depthwise;
mod depthwise_span;
mod tile;
mod tile_asm;

use crate::isa::kernel_table;
use depthwise::Avx512Blocks;
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

kernel_table!(
    tile: Avx512Tile,
    depthwise: Avx512Blocks,
    fma: true,
    #[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")]
);
