//! Command-line options that say which weights to load and how to interpret them.

use crate::model_args::base_config;
use anyhow::{Context, Result};
use clap::Args;
use effnet_arch::Padding;
use effnet_weights::{load, Layout, LoadOptions, LoadedWeights};
use std::path::{Path, PathBuf};

/// Which weights file, and what to assume about it.
#[derive(Debug, Clone, Args)]
pub struct WeightsArgs {
    /// Weights file: safetensors (effnet or foreign), PyTorch .pth (zip or legacy).
    #[arg(long)]
    pub weights: PathBuf,
    #[command(flatten)]
    pub options: WeightsOptions,
}

impl WeightsArgs {
    /// Loads the weights into the canonical layout.
    pub fn load(&self) -> Result<LoadedWeights> {
        self.options.load(&self.weights)
    }
}

/// What to assume about a weights file where it cannot tell.
#[derive(Debug, Clone, Args)]
pub struct WeightsOptions {
    /// The network the weights belong to (default: from metadata, or detected from the tensor shapes).
    #[arg(long)]
    pub model: Option<String>,
    /// Key layout: effnet, timm, torchvision, lukemelas or tf (default: detected from the keys).
    #[arg(long)]
    pub layout: Option<String>,
    /// Padding the weights were trained with: tf-same or symmetric (default: metadata or layout convention).
    #[arg(long)]
    pub padding: Option<String>,
    /// Batch-norm epsilon the weights were trained with (default: metadata or layout convention).
    #[arg(long)]
    pub bn_eps: Option<f64>,
}

impl WeightsOptions {
    /// Loads `path` into the canonical layout.
    pub fn load(&self, path: &Path) -> Result<LoadedWeights> {
        let layout = match &self.layout {
            Some(name) => Some(Layout::from_name(name).with_context(|| {
                format!("unknown layout `{name}`: use effnet, timm, torchvision, lukemelas or tf")
            })?),
            None => None,
        };
        let padding =
            match &self.padding {
                Some(name) => Some(Padding::from_name(name).with_context(|| {
                    format!("unknown padding `{name}`: use tf-same or symmetric")
                })?),
                None => None,
            };
        if let Some(eps) = self.bn_eps {
            anyhow::ensure!(
                eps > 0.0 && eps < 1.0,
                "--bn-eps must be in (0, 1), got {eps}"
            );
        }
        let model = self
            .model
            .as_deref()
            .map(|m| base_config(Some(m)))
            .transpose()?;
        let options = LoadOptions {
            model,
            layout,
            padding,
            bn_eps: self.bn_eps,
        };
        Ok(load(path, &options)?)
    }
}
