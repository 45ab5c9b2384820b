//! EfficientNet weights: readers for safetensors and PyTorch `.pth` (zip and legacy), the key layouts of
//! timm, torchvision, lukemelas and TF mapped onto one canonical layout, metadata stored with every file
//! effnet writes, and deterministic random weights.

pub mod atomic;
pub mod error;
pub mod fold;
pub mod layout;
pub mod load;
pub mod metadata;
pub mod pickle;
pub mod pth;
pub mod random;
pub mod safetensors_io;
pub mod tensor;
pub mod tf_checkpoint;

pub use error::{Result, WeightsError};
pub use layout::Layout;
pub use load::{load, LoadOptions, LoadedWeights};
pub use metadata::{Provenance, WeightMetadata};
pub use tensor::{Tensor, TensorSource};
