//! Fused CPU training kernels for EfficientNet's hot layers, registered with burn as a backend
//! extension: 1x1 convolutions as one GEMM per image, depthwise convolutions with explicit padding, and
//! training-mode batch norm fused with swish, each with its own backward pass.
//!
//! burn's CPU backend runs these layers through generic paths (a transposed convolution for every
//! depthwise input gradient, a per-channel loop for its weight gradient, batch norm as ten tensor
//! operations with layout copies, scalar `exp` in swish) that made a training step several times
//! slower than PyTorch's. The model takes these kernels on the CPU backend and burn's own operations
//! on any other device.

pub mod batch_norm;
pub mod depthwise;
mod extension;
pub mod pointwise;

pub use extension::{batch_norm_train, depthwise_conv, pointwise_conv, supports, BatchNormTrain};

#[cfg(test)]
mod tests;
