//! pytorch-image-models' `config.json` (what `timm.models.push_to_hf_hub` writes beside the weights) as an
//! effnet network: the architecture, the classes and their names, and the preprocessing of
//! `pretrained_cfg`, the test-time size and crop (`test_input_size`, `test_crop_pct`) when the config has
//! them, as `timm.data.resolve_data_config(use_test_size=True)` gives.

use crate::{HubError, Result};
use effnet_arch::preprocess::{CropMode, Interpolation, Preprocessing};
use effnet_arch::variant::{Variant, TF_BN_EPS};
use effnet_arch::{NetworkConfig, Padding};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The name of the config file in a timm repository.
pub const CONFIG_FILE: &str = "config.json";

/// timm's default crop fraction (`DEFAULT_CROP_PCT`).
const DEFAULT_CROP_PCT: f64 = 0.875;
/// PyTorch's batch-norm epsilon, which timm's own (non-`tf_`) EfficientNets use.
const TORCH_BN_EPS: f64 = 1e-5;

/// `pretrained_cfg`: how the weights were trained and are evaluated.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
pub struct PretrainedCfg {
    /// `[channels, height, width]` at training.
    pub input_size: Option<Vec<u32>>,
    /// `[channels, height, width]` for evaluation, when it differs.
    pub test_input_size: Option<Vec<u32>>,
    /// Crop fraction.
    pub crop_pct: Option<f64>,
    /// Crop fraction at the test size.
    pub test_crop_pct: Option<f64>,
    /// `center`, `squash` or `border`.
    pub crop_mode: Option<String>,
    /// `bicubic`, `bilinear`, ...
    pub interpolation: Option<String>,
    /// Per-channel mean on the 0-1 scale.
    pub mean: Option<Vec<f32>>,
    /// Per-channel std on the 0-1 scale.
    pub std: Option<Vec<f32>>,
    /// Classes of the classifier.
    pub num_classes: Option<u32>,
    /// The weights' licence.
    pub license: Option<String>,
}

/// A timm `config.json`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct TimmConfig {
    /// The model's name in timm (`efficientnet_b0`, `tf_efficientnet_lite0`, ...).
    pub architecture: String,
    /// Classes of the classifier.
    pub num_classes: Option<u32>,
    /// Class names (ImageNet synsets for the in1k weights).
    #[serde(default)]
    pub label_names: Vec<String>,
    /// A description per class name.
    #[serde(default)]
    pub label_descriptions: HashMap<String, String>,
    /// How the weights were trained and are evaluated.
    #[serde(default)]
    pub pretrained_cfg: Option<PretrainedCfg>,
    /// The file it was read from.
    #[serde(skip)]
    pub path: PathBuf,
}

impl TimmConfig {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| HubError::io(path, e))?;
        let mut config: TimmConfig = serde_json::from_str(&text).map_err(|e| HubError::Config {
            path: path.to_path_buf(),
            message: format!("not a timm config: {e}"),
        })?;
        config.path = path.to_path_buf();
        Ok(config)
    }

    fn error(&self, message: String) -> HubError {
        HubError::Config {
            path: self.path.clone(),
            message,
        }
    }

    /// The effnet network: the named variant with timm's padding convention (TF "SAME" and epsilon 1e-3 for
    /// the `tf_` ports, symmetric and 1e-5 for timm's own), the classes, and the evaluation preprocessing.
    pub fn network(&self) -> Result<NetworkConfig> {
        let (variant, padding, eps) =
            architecture(&self.architecture).map_err(|m| self.error(m))?;
        let mut config = Variant::by_name(variant)
            .map_err(|e| self.error(e.to_string()))?
            .config();
        (config.padding, config.bn_eps) = (padding, eps);
        let cfg = self.pretrained_cfg.clone().unwrap_or_default();
        if let Some(classes) = self.num_classes.or(cfg.num_classes) {
            if classes == 0 {
                return Err(self.error("num_classes is 0".into()));
            }
            config.num_classes = classes;
        }
        let side = |size: &Option<Vec<u32>>| -> Result<Option<u32>> {
            match size.as_deref() {
                None => Ok(None),
                Some([3, h, w]) if h == w => Ok(Some(*h)),
                Some(other) => Err(self.error(format!(
                    "input size {other:?}: effnet runs square RGB inputs ([3, s, s])"
                ))),
            }
        };
        let (train, test) = (side(&cfg.input_size)?, side(&cfg.test_input_size)?);
        if let Some(size) = test.or(train) {
            config.resolution = size;
        }
        let crop_pct = match test {
            Some(_) => cfg.test_crop_pct.or(cfg.crop_pct),
            None => cfg.crop_pct,
        }
        .unwrap_or(DEFAULT_CROP_PCT);
        if !(crop_pct > 0.0 && crop_pct <= 1.0) {
            return Err(self.error(format!("crop_pct {crop_pct} is not in (0, 1]")));
        }
        let triple =
            |values: &Option<Vec<f32>>, default: [f32; 3], what: &str| -> Result<[f32; 3]> {
                match values {
                    None => Ok(default),
                    Some(v) => <[f32; 3]>::try_from(v.as_slice())
                        .map_err(|_| self.error(format!("{what} needs three values, got {v:?}"))),
                }
            };
        let defaults = Preprocessing::imagenet(config.resolution);
        config.preprocessing = Preprocessing {
            mean: triple(&cfg.mean, defaults.mean, "mean")?,
            std: triple(&cfg.std, defaults.std, "std")?,
            crop_pct,
            interpolation: match cfg.interpolation.as_deref() {
                None | Some("bicubic") | Some("random") => Interpolation::Bicubic,
                Some("bilinear") => Interpolation::Bilinear,
                Some(other) => {
                    return Err(self.error(format!(
                        "interpolation `{other}` is not one effnet resizes with (bicubic, bilinear)"
                    )))
                }
            },
            crop_mode: match cfg.crop_mode.as_deref() {
                None | Some("center") => CropMode::Center,
                Some("squash") => CropMode::Squash,
                Some("border") => CropMode::Border,
                Some(other) => return Err(self.error(format!("unknown crop_mode `{other}`"))),
            },
        };
        Ok(config)
    }

    /// The weights' licence, from `pretrained_cfg`.
    pub fn license(&self) -> Option<&str> {
        self.pretrained_cfg.as_ref()?.license.as_deref()
    }

    /// Class names: each `label_names` entry's description when the config has one, else the name.
    pub fn labels(&self) -> Vec<String> {
        self.label_names
            .iter()
            .map(|n| self.label_descriptions.get(n).unwrap_or(n).clone())
            .collect()
    }
}

/// The effnet variant, padding and batch-norm epsilon of a timm architecture name.
pub fn architecture(name: &str) -> std::result::Result<(&'static str, Padding, f64), String> {
    let (tf, rest) = match name.strip_prefix("tf_") {
        Some(rest) => (true, rest),
        None => (false, name),
    };
    let variant = rest.strip_prefix("efficientnet_").and_then(|v| {
        effnet_arch::variant::known_names()
            .into_iter()
            .find(|known| *known == v)
    });
    match variant {
        Some(v) if tf => Ok((v, Padding::TfSame, TF_BN_EPS)),
        Some(v) => Ok((v, Padding::Symmetric, TORCH_BN_EPS)),
        None if name.contains("efficientnetv2") => Err(format!(
            "architecture `{name}` is an EfficientNetV2, which effnet does not run yet"
        )),
        None if name.contains("efficientnet") => Err(format!(
            "architecture `{name}` is an EfficientNet variant effnet does not run: it runs \
             efficientnet_b0..b8, l2 and lite0..4, and their tf_ ports"
        )),
        None => Err(format!("architecture `{name}` is not an EfficientNet")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architectures_map_to_variants_with_their_conventions() {
        assert_eq!(
            architecture("efficientnet_b0").unwrap(),
            ("b0", Padding::Symmetric, 1e-5)
        );
        assert_eq!(
            architecture("tf_efficientnet_b7").unwrap(),
            ("b7", Padding::TfSame, 1e-3)
        );
        assert_eq!(architecture("tf_efficientnet_lite4").unwrap().0, "lite4");
        assert!(architecture("resnet50")
            .unwrap_err()
            .contains("not an EfficientNet"));
        assert!(architecture("tf_efficientnetv2_s")
            .unwrap_err()
            .contains("EfficientNetV2"));
        assert!(architecture("efficientnet_es")
            .unwrap_err()
            .contains("does not run"));
    }
}
