//! EfficientNet CPU inference: NHWC kernels with batch norm folded at load, 1x1 convolutions as GEMM,
//! TF "SAME" or symmetric padding computed per layer from the actual input size.

pub mod activation;
pub mod buffer;
pub mod channel_split;
#[cfg(target_arch = "x86_64")]
mod depthwise_span;
pub mod error;
pub mod fused;
pub mod kernels;
pub mod layers;
pub mod model;
pub(crate) mod panels;
pub(crate) mod pool;
#[cfg(target_arch = "x86_64")]
mod tile_asm;

pub use error::{EngineError, Result};
pub use kernels::FeatureMap;
pub use model::Engine;
