//! The batch pipeline shared by `predict` and `embed`: images are decoded and preprocessed in parallel,
//! run through the engine batch by batch with a progress bar, and a bad image is reported and skipped
//! instead of stopping the run.

use crate::model_args::check_resolution;
use anyhow::{Context, Result};
use clap::Args;
use effnet_arch::preprocess::{Interpolation, Preprocessing};
use effnet_arch::NetworkConfig;
use effnet_data::{image_files, load_image};
use effnet_engine::{Engine, FeatureMap};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use std::path::PathBuf;

/// Input and preprocessing options.
#[derive(Debug, Clone, Args)]
pub struct InputArgs {
    /// Images, or folders searched recursively for images.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    #[command(flatten)]
    pub preprocess: PreprocessArgs,
    /// Images per batch.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
}

/// Overrides of the weights' evaluation preprocessing.
#[derive(Debug, Clone, Args)]
pub struct PreprocessArgs {
    /// Input resolution (default: the weights').
    #[arg(long)]
    pub resolution: Option<u32>,
    /// Centre-crop fraction of the short side before resizing; 1.0 keeps the whole image (default: the weights').
    #[arg(long)]
    pub crop_pct: Option<f64>,
    /// Resize filter: bicubic or bilinear (default: the weights').
    #[arg(long)]
    pub interpolation: Option<String>,
    /// Normalisation: imagenet, lite or inception/advprop (default: the weights').
    #[arg(long)]
    pub normalization: Option<String>,
}

/// Applies a named normalisation, with a clear error for unknown names.
pub fn normalization(pre: Preprocessing, name: &str) -> Result<Preprocessing> {
    pre.with_normalization(name).with_context(|| {
        format!("unknown normalization `{name}`: use imagenet, lite, inception or advprop")
    })
}

/// The result for one input file.
pub struct ImageOutcome<T = Vec<f32>> {
    /// The file.
    pub file: PathBuf,
    /// Pooled features (or what the run computes), or why the file failed.
    pub features: Result<T>,
}

impl PreprocessArgs {
    /// Preprocessing and resolution: the weights' defaults with the flags applied.
    pub fn preprocessing(&self, config: &NetworkConfig) -> Result<(Preprocessing, u32)> {
        if let Some(resolution) = self.resolution {
            check_resolution(resolution)?;
        }
        let resolution = self.resolution.unwrap_or(config.resolution);
        let mut pre = if resolution == config.resolution {
            config.preprocessing
        } else {
            config.preprocessing.at_resolution(resolution)
        };
        if let Some(pct) = self.crop_pct {
            anyhow::ensure!(
                pct > 0.0 && pct <= 1.0,
                "--crop-pct must be in (0, 1], got {pct}"
            );
            pre.crop_pct = pct;
        }
        if let Some(name) = &self.normalization {
            pre = normalization(pre, name)?;
        }
        if let Some(name) = &self.interpolation {
            pre.interpolation = Interpolation::from_name(name).with_context(|| {
                format!("unknown interpolation `{name}`: use bicubic or bilinear")
            })?;
        }
        Ok((pre, resolution))
    }
}

impl InputArgs {
    /// Runs every input image through the engine's pooled feature extractor, calling `each` in input order.
    pub fn run(&self, engine: &Engine, each: impl FnMut(ImageOutcome) -> Result<()>) -> Result<()> {
        self.run_with(engine, |images| engine.pooled_features_batch(images), each)
    }

    /// Runs `compute` on every batch of input images (decoded and preprocessed for `engine`), calling
    /// `each` with every image's result in input order.
    pub fn run_with<T>(
        &self,
        engine: &Engine,
        compute: impl Fn(&[FeatureMap]) -> Vec<effnet_engine::Result<T>>,
        mut each: impl FnMut(ImageOutcome<T>) -> Result<()>,
    ) -> Result<()> {
        anyhow::ensure!(self.batch >= 1, "--batch must be at least 1");
        let (pre, resolution) = self.preprocess.preprocessing(engine.config())?;
        let mut network = engine.config().clone();
        network.resolution = resolution;
        let needed = effnet_arch::account(&effnet_arch::resolve(&network)?)
            .inference_batch_memory_bytes(self.batch as u64);
        let what = format!("inference at {resolution} px, batch {}", self.batch);
        effnet_data::system::ensure_memory(&what, needed).map_err(anyhow::Error::msg)?;
        let files = image_files(&self.inputs)?;
        let bar = ProgressBar::new(files.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} images, {per_sec}, eta {eta}")
                .expect("valid template"),
        );
        if files.len() < 2 {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        for chunk in files.chunks(self.batch) {
            // Decode in parallel; the engine chooses how to thread the batch it is given.
            let decoded: Vec<Result<FeatureMap>> = chunk
                .par_iter()
                .map(|file| {
                    let img = load_image(file, &pre, resolution)?;
                    Ok(FeatureMap::new(&img.data, img.height, img.width, 3))
                })
                .collect();
            let mut images = Vec::new();
            let slots: Vec<Result<usize>> = decoded
                .into_iter()
                .map(|d| {
                    d.map(|image| {
                        images.push(image);
                        images.len() - 1
                    })
                })
                .collect();
            let mut features: Vec<Option<effnet_engine::Result<T>>> =
                compute(&images).into_iter().map(Some).collect();
            for (file, slot) in chunk.iter().zip(slots) {
                let features =
                    slot.and_then(|i| Ok(features[i].take().expect("one result per image")?));
                bar.inc(1);
                bar.suspend(|| {
                    each(ImageOutcome {
                        file: file.clone(),
                        features,
                    })
                })?;
            }
        }
        bar.finish_and_clear();
        Ok(())
    }
}
