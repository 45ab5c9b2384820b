//! EfficientNet CPU inference: NHWC kernels with batch norm folded at load, 1x1 convolutions as GEMM,
//! TF "SAME" or symmetric padding computed per layer from the actual input size. The kernels come from a
//! table chosen once for the CPU ([`isa`]): AVX-512, AVX2 + FMA, NEON, or portable Rust.

pub mod activation;
pub mod buffer;
pub mod channel_split;
mod dense;
mod depthwise;
pub mod error;
mod feature_map;
pub mod fused;
mod geometry;
pub mod isa;
pub mod kernels;
pub mod layers;
pub mod model;
pub(crate) mod panels;
mod pointwise;
pub(crate) mod pool;
mod reduce;
#[cfg(test)]
mod test_support;
mod tile;
mod vector;

pub use error::{EngineError, Result};
pub use feature_map::FeatureMap;
pub use isa::Isa;
pub use model::Engine;

/// Bytes of activation buffers inference has allocated so far in this process. They are kept for reuse,
/// so after the first batch of a network this stays the same from batch to batch.
pub fn activation_pool_bytes() -> usize {
    pool::allocated_bytes()
}
