//! EfficientNet training on burn: the [`Plan`](effnet_arch::Plan) as a burn module, the official recipe
//! (TF-style RMSProp, warmup + exponential decay, EMA, label smoothing, drop-path), fine-tuning defaults,
//! image-folder datasets with augmentation, checkpoints that resume exactly, and evaluation.

pub mod allocator;
pub mod auto;
pub mod batches;
pub mod config;
pub mod ema;
pub mod error;
pub mod evaluate;
pub mod init;
pub mod kernels;
pub mod lr_find;
pub mod mixing;
pub mod model;
pub mod optim;
pub mod run;
pub mod schedule;
pub mod search;
pub mod trainer;

pub use config::{Recipe, TrainConfig};
pub use error::{Result, TrainError};
pub use evaluate::{evaluate, Evaluation};
pub use model::EfficientNet;
pub use run::RunDir;
pub use trainer::{train, Begin, Observer};
