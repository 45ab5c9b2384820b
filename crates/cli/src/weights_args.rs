//! Command-line options that say which weights to load and how to interpret them.

use crate::model_args::{base_config, parse_padding};
use anyhow::{Context, Result};
use clap::Args;
use effnet_arch::Padding;
use effnet_hub::{Fetched, Progress, WeightsName};
use effnet_weights::{load, Layout, LoadOptions, LoadedWeights};
use std::path::{Path, PathBuf};

/// Which weights file, and what to assume about it.
#[derive(Debug, Clone, Args)]
pub struct WeightsArgs {
    /// Weights: a file (safetensors, PyTorch .pth), a folder with a timm config.json and its weights,
    /// `hf:ORG/NAME[@REVISION]` (Hugging Face hub) or `torchvision:efficientnet_bN[.ENUM]`.
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

/// Shows a download as a progress bar on stderr (hidden when stderr is not a terminal).
struct DownloadBar(std::sync::Mutex<Option<indicatif::ProgressBar>>);

impl Progress for DownloadBar {
    fn start(&self, what: &str, total: Option<u64>, done: u64) {
        let bar = match total {
            Some(total) => indicatif::ProgressBar::new(total),
            None => indicatif::ProgressBar::no_length(),
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}, eta {eta}",
            )
            .expect("valid template"),
        );
        bar.set_message(format!("downloading {what}"));
        bar.set_position(done);
        *self.0.lock().expect("not poisoned") = Some(bar);
    }

    fn advance(&self, bytes: u64) {
        if let Some(bar) = &*self.0.lock().expect("not poisoned") {
            bar.inc(bytes);
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.0.lock().expect("not poisoned").take() {
            bar.finish_and_clear();
        }
    }
}

/// Finds the weights `--weights` names: a file as it is, or a hub / torchvision name or timm folder
/// resolved (downloaded into the cache when needed) with what the name says about the network.
pub fn fetch_weights(path: &Path) -> Result<Fetched> {
    let name = match path.to_str() {
        Some(text) => WeightsName::parse(text)?,
        None => WeightsName::Path(path.to_path_buf()),
    };
    Ok(effnet_hub::fetch(
        &name,
        &DownloadBar(std::sync::Mutex::new(None)),
    )?)
}

impl WeightsOptions {
    /// Loads `path` (a file or a name, see [`fetch_weights`]) into the canonical layout; the flags win over
    /// what the name says.
    pub fn load(&self, path: &Path) -> Result<LoadedWeights> {
        self.load_named(&fetch_weights(path)?)
    }

    /// Loads weights [`fetch_weights`] found, with the labels and provenance the name brings where the
    /// file has none.
    pub fn load_named(&self, fetched: &Fetched) -> Result<LoadedWeights> {
        let mut weights = self.load_fetched(fetched)?;
        if weights.labels.is_empty() {
            weights.labels = fetched.labels.clone();
        }
        if weights.provenance.source.is_empty() {
            weights.provenance.source = fetched.source.clone();
            weights.provenance.license = fetched.license.clone();
        }
        Ok(weights)
    }

    /// `--padding` and `--bn-eps`, checked.
    pub fn conventions(&self) -> Result<(Option<Padding>, Option<f64>)> {
        let padding = self.padding.as_deref().map(parse_padding).transpose()?;
        if let Some(eps) = self.bn_eps {
            anyhow::ensure!(
                eps > 0.0 && eps < 1.0,
                "--bn-eps must be in (0, 1), got {eps}"
            );
        }
        Ok((padding, self.bn_eps))
    }

    /// Loads fetched weights, the flags overriding what the fetch found.
    fn load_fetched(&self, fetched: &Fetched) -> Result<LoadedWeights> {
        let path = fetched.file.as_path();
        let layout = match &self.layout {
            Some(name) => Some(Layout::from_name(name).with_context(|| {
                format!("unknown layout `{name}`: use effnet, timm, torchvision, lukemelas or tf")
            })?),
            None => None,
        };
        let (padding, bn_eps) = self.conventions()?;
        let model = self
            .model
            .as_deref()
            .map(|m| base_config(Some(m)))
            .transpose()?;
        let named = fetched.model.as_ref();
        let options = LoadOptions {
            padding: padding.or(named.map(|m| m.padding)),
            bn_eps: bn_eps.or(named.map(|m| m.bn_eps)),
            model: model.or(fetched.model.clone()),
            layout: layout.or(fetched.layout.clone()),
        };
        Ok(load(path, &options)?)
    }
}
