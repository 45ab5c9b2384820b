//! Everything a training run needs to be repeated or resumed, with the two recipes as defaults: the
//! official one for training from scratch and a fine-tuning one for pretrained weights on small datasets.

use crate::mixing::Mixing;
use crate::optim::OptimizerKind;
use crate::schedule::Decay;
use effnet_arch::{NetworkConfig, Padding};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Which defaults a run starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Recipe {
    /// The paper's ImageNet recipe: TF-style RMSProp, 0.016 per 256 images, 5 warmup epochs then x0.97
    /// every 2.4 epochs, weight decay 1e-5, label smoothing 0.1, EMA 0.9999.
    Official,
    /// Fine-tuning pretrained weights on a small dataset: AdamW at 1e-3 for 32 images per step (scaled by
    /// the square root of the batch), one warmup epoch, cosine to zero, weight decay 0.01, label smoothing
    /// 0.1, no EMA.
    Finetune,
    /// The official recipe with the settings that depend on the data and the run's length chosen for
    /// them (see [`crate::auto`]): the default from scratch.
    Auto,
}

/// RandAugment's `(n, m)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RandAugmentConfig {
    /// Ops per image.
    pub n: u32,
    /// Magnitude 0–10.
    pub m: f64,
}

/// A whole training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Training images, one folder per class.
    pub data: PathBuf,
    /// Validation images with the same classes; `None` splits `val_fraction` off `data`.
    pub val: Option<PathBuf>,
    /// Share of each class held out when there is no validation folder.
    pub val_fraction: f64,
    /// The network (its `num_classes` is set from the data), stored as effnet's weight metadata map.
    #[serde(with = "network_as_metadata", default)]
    pub network: Option<NetworkConfig>,
    /// Pretrained weights (backbone kept, new classifier), or `None` to train from scratch.
    pub weights: Option<PathBuf>,
    /// Padding and batch-norm epsilon of the pretrained weights when their name says (a hub or
    /// torchvision name); otherwise the file's metadata or its layout's convention decide.
    #[serde(default)]
    pub weights_conventions: Option<(Padding, f64)>,
    /// The defaults this run started from.
    pub recipe: Recipe,
    /// Epochs.
    pub epochs: usize,
    /// Images per optimizer step.
    pub batch: usize,
    /// Training (and evaluation) resolution.
    pub img_size: u32,
    /// Seed of initialisation, data order, augmentation, dropout and drop-path.
    pub seed: u64,
    /// Optimizer.
    pub optimizer: OptimizerKind,
    /// Peak learning rate.
    pub lr: f64,
    /// Warmup epochs.
    pub warmup_epochs: f64,
    /// Decay after warmup.
    pub decay: Decay,
    /// Weight decay on kernels.
    pub weight_decay: f64,
    /// Label smoothing.
    pub label_smoothing: f64,
    /// Batch-norm momentum in TF's convention (0.99: each batch moves the running statistics by 1%).
    pub bn_momentum: f64,
    /// EMA decay (`None`: no EMA).
    pub ema: Option<f64>,
    /// Epochs with the backbone frozen (only the classifier trains); `epochs` or more freezes it throughout.
    pub freeze_epochs: usize,
    /// Smallest crop area of the random-resized crop.
    pub min_crop: f64,
    /// Horizontal flip probability.
    pub flip: f64,
    /// RandAugment, if any.
    pub rand_augment: Option<RandAugmentConfig>,
    /// Dropout before the classifier, replacing the network's own.
    #[serde(default)]
    pub dropout: Option<f64>,
    /// Drop-path rate of the last block (earlier blocks get less), replacing the network's own.
    #[serde(default)]
    pub drop_path: Option<f64>,
    /// Mixup and CutMix of the images within each batch.
    #[serde(default)]
    pub mixing: Mixing,
    /// Threads decoding and augmenting images.
    pub workers: usize,
    /// Where the network trains.
    #[serde(default)]
    pub accelerator: crate::trainer::Accelerator,
}

impl TrainConfig {
    /// The defaults of `recipe` for a run on `data` with `batch` images per step and `epochs` epochs.
    pub fn recipe(
        recipe: Recipe,
        data: PathBuf,
        epochs: usize,
        batch: usize,
        img_size: u32,
    ) -> Self {
        let per_256 = batch as f64 / 256.0;
        let (optimizer, lr, warmup, decay, weight_decay, ema) = match recipe {
            Recipe::Official | Recipe::Auto => (
                OptimizerKind::Rmsprop,
                0.016 * per_256,
                5.0,
                Decay::Exponential {
                    rate: 0.97,
                    every_epochs: 2.4,
                },
                1e-5,
                Some(0.9999),
            ),
            Recipe::Finetune => (
                OptimizerKind::Adamw,
                // AdamW is not linear in the batch: 1e-3 at 32 images is the usual fine-tuning rate.
                1e-3 * (batch as f64 / 32.0).sqrt(),
                1.0,
                Decay::Cosine,
                0.01,
                None,
            ),
        };
        Self {
            data,
            val: None,
            val_fraction: 0.2,
            network: None,
            weights: None,
            weights_conventions: None,
            recipe,
            epochs,
            batch,
            img_size,
            seed: 0,
            optimizer,
            lr,
            // A short run keeps at most a fifth of itself for warmup.
            warmup_epochs: f64::min(warmup, epochs as f64 / 5.0),
            decay,
            weight_decay,
            label_smoothing: 0.1,
            bn_momentum: crate::model::TF_BN_MOMENTUM,
            ema,
            freeze_epochs: 0,
            min_crop: 0.08,
            flip: 0.5,
            rand_augment: None,
            dropout: None,
            drop_path: None,
            mixing: Mixing::default(),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            accelerator: crate::trainer::Accelerator::Cpu,
        }
    }
}

/// (De)serialises a network configuration as the string map effnet stores in weight files, so a run's
/// `config.json` describes its network in the same words as its checkpoints.
mod network_as_metadata {
    use effnet_arch::NetworkConfig;
    use effnet_weights::{Provenance, WeightMetadata};
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::HashMap;
    use std::path::Path;

    pub fn serialize<S: Serializer>(
        network: &Option<NetworkConfig>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        network
            .as_ref()
            .map(|config| {
                WeightMetadata {
                    config: config.clone(),
                    labels: Vec::new(),
                    provenance: Provenance::default(),
                }
                .to_map()
                .into_iter()
                .collect::<std::collections::BTreeMap<_, _>>()
            })
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NetworkConfig>, D::Error> {
        let Some(map) = Option::<HashMap<String, String>>::deserialize(d)? else {
            return Ok(None);
        };
        let metadata = WeightMetadata::from_map(Path::new("config.json"), &map)
            .map_err(D::Error::custom)?
            .ok_or_else(|| D::Error::custom("the network description lacks effnet.format"))?;
        Ok(Some(metadata.config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use effnet_arch::scaling::compound;
    use effnet_arch::{Coefficients, Variant};

    #[test]
    fn the_settings_round_trip_through_json_with_their_network() {
        let mut config = TrainConfig::recipe(Recipe::Official, "data".into(), 7, 16, 48);
        let base = Variant::by_name("b0").unwrap().config();
        config.network = Some(compound(&base, -2.5, Coefficients::default()).unwrap());
        config.rand_augment = Some(RandAugmentConfig { n: 2, m: 9.0 });
        let text = serde_json::to_string(&config).unwrap();
        let back: TrainConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, config);
    }
}
