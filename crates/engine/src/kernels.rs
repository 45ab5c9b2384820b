//! The engine's layers as functions on feature maps, for programs that run them one at a time (tests,
//! benchmarks): each is defined in the module of its job and runs the kernel table's kernels.

pub use crate::dense::conv_dense;
pub use crate::depthwise::{depthwise, depthwise_and_mean};
pub use crate::feature_map::{Exec, FeatureMap};
pub use crate::pointwise::{pointwise, pointwise_gated};
pub use crate::reduce::global_average;
pub use crate::vector::{linear, linear_batch, se_gate, squeeze_excite};
