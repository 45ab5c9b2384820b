//! torchvision's published EfficientNet weights: the URL and evaluation transform of every weights enum
//! (`torchvision/models/efficientnet.py`), downloaded like `torch.hub.load_state_dict_from_url` does, into
//! `$TORCH_HOME/hub/checkpoints/` under the file's own name, and checked against the sha256 prefix in that
//! name.

use crate::http::Download;
use crate::{Fetched, HubError, Progress, Result};
use effnet_arch::preprocess::{
    CropMode, Interpolation, Preprocessing, IMAGENET_MEAN, IMAGENET_STD,
};
use effnet_arch::variant::Variant;
use effnet_weights::load::sha256_file;
use effnet_weights::Layout;
use std::path::PathBuf;

/// Where torchvision's files are published.
const BASE_URL: &str = "https://download.pytorch.org/models";
/// Replaces torchvision's download host (`https://download.pytorch.org/models`): for the test suite's local server only.
pub const BASE_URL_VARIABLE: &str = "EFFNET_TORCHVISION_URL";

/// One torchvision weights enum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TorchvisionWeights {
    /// Builder name (`efficientnet_b0`).
    pub model: &'static str,
    /// Enum member (`IMAGENET1K_V1`).
    pub member: &'static str,
    /// Whether it is the builder's `DEFAULT`.
    pub default: bool,
    /// The file name on torchvision's host; the hex after the last `-` is a sha256 prefix.
    pub file: &'static str,
    /// `ImageClassification`'s `crop_size` (the network's resolution).
    pub crop: u32,
    /// `resize_size`: the short side before the centre crop.
    pub resize: u32,
    /// Resize filter.
    pub interpolation: Interpolation,
    /// ImageNet top-1 in torchvision's metadata.
    pub top1: f64,
}

const fn entry(
    model: &'static str,
    member: &'static str,
    default: bool,
    file: &'static str,
    (crop, resize): (u32, u32),
    interpolation: Interpolation,
    top1: f64,
) -> TorchvisionWeights {
    TorchvisionWeights {
        model,
        member,
        default,
        file,
        crop,
        resize,
        interpolation,
        top1,
    }
}

use Interpolation::{Bicubic, Bilinear};

/// Every torchvision EfficientNet (V1) weights enum.
pub const WEIGHTS: &[TorchvisionWeights] = &[
    entry(
        "efficientnet_b0",
        "IMAGENET1K_V1",
        true,
        "efficientnet_b0_rwightman-3dd342df.pth",
        (224, 256),
        Bicubic,
        77.692,
    ),
    entry(
        "efficientnet_b1",
        "IMAGENET1K_V1",
        false,
        "efficientnet_b1_rwightman-533bc792.pth",
        (240, 256),
        Bicubic,
        78.642,
    ),
    entry(
        "efficientnet_b1",
        "IMAGENET1K_V2",
        true,
        "efficientnet_b1-c27df63c.pth",
        (240, 255),
        Bilinear,
        79.838,
    ),
    entry(
        "efficientnet_b2",
        "IMAGENET1K_V1",
        true,
        "efficientnet_b2_rwightman-bcdf34b7.pth",
        (288, 288),
        Bicubic,
        80.608,
    ),
    entry(
        "efficientnet_b3",
        "IMAGENET1K_V1",
        true,
        "efficientnet_b3_rwightman-cf984f9c.pth",
        (300, 320),
        Bicubic,
        82.008,
    ),
    entry(
        "efficientnet_b4",
        "IMAGENET1K_V1",
        true,
        "efficientnet_b4_rwightman-7eb33cd5.pth",
        (380, 384),
        Bicubic,
        83.384,
    ),
    entry(
        "efficientnet_b5",
        "IMAGENET1K_V1",
        true,
        "efficientnet_b5_lukemelas-b6417697.pth",
        (456, 456),
        Bicubic,
        83.444,
    ),
    entry(
        "efficientnet_b6",
        "IMAGENET1K_V1",
        true,
        "efficientnet_b6_lukemelas-c76e70fd.pth",
        (528, 528),
        Bicubic,
        84.008,
    ),
    entry(
        "efficientnet_b7",
        "IMAGENET1K_V1",
        true,
        "efficientnet_b7_lukemelas-dcc49843.pth",
        (600, 600),
        Bicubic,
        84.122,
    ),
];

impl TorchvisionWeights {
    /// Looks up `efficientnet_bN` (the default enum) or `efficientnet_bN.MEMBER`.
    pub fn by_name(name: &str) -> Result<&'static Self> {
        let (model, member) = match name.split_once('.') {
            Some((m, e)) => (m, Some(e)),
            None => (name, None),
        };
        WEIGHTS
            .iter()
            .find(|w| w.model == model && member.map_or(w.default, |e| e == w.member))
            .ok_or_else(|| {
                let known: Vec<String> = WEIGHTS
                    .iter()
                    .map(|w| format!("{}.{}", w.model, w.member))
                    .collect();
                HubError::BadName(format!(
                    "torchvision:{name} is not a torchvision EfficientNet weights enum; known: {}",
                    known.join(", ")
                ))
            })
    }

    /// The sha256 prefix in the file name.
    pub fn hash_prefix(&self) -> &'static str {
        let stem = self.file.trim_end_matches(".pth");
        stem.rsplit('-').next().unwrap_or("")
    }

    /// The preprocessing of the enum's `ImageClassification` transform: the short side resized to
    /// `resize`, the centre `crop` square, ImageNet mean and std.
    pub fn preprocessing(&self) -> Preprocessing {
        Preprocessing {
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            crop_pct: f64::from(self.crop) / f64::from(self.resize),
            interpolation: self.interpolation,
            crop_mode: CropMode::Center,
        }
    }
}

/// torch's cache root: `TORCH_HOME`, else `$XDG_CACHE_HOME/torch` (`~/.cache/torch`).
pub fn torch_home() -> PathBuf {
    std::env::var_os("TORCH_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::hf::user_cache().join("torch"))
}

/// The weights of a torchvision enum, from torch's checkpoint cache, downloaded there when missing.
pub fn fetch(name: &str, progress: &dyn Progress) -> Result<Fetched> {
    let weights = TorchvisionWeights::by_name(name)?;
    let folder = torch_home().join("hub").join("checkpoints");
    let file = folder.join(weights.file);
    if !file.is_file() {
        if crate::hf::HfSettings::from_env().offline {
            return Err(HubError::NotCached(format!(
                "torchvision:{name} is not in the cache ({}) and HF_HUB_OFFLINE is set",
                file.display()
            )));
        }
        std::fs::create_dir_all(&folder).map_err(|e| HubError::io(&folder, e))?;
        let base = std::env::var(BASE_URL_VARIABLE).unwrap_or_else(|_| BASE_URL.to_string());
        let url = format!("{}/{}", base.trim_end_matches('/'), weights.file);
        let partial = folder.join(format!("{}.partial", weights.file));
        Download {
            url: &url,
            token: None,
            partial: &partial,
            size: None,
            what: weights.file,
            hint: "; check the connection or proxies",
        }
        .run(progress)?;
        let hash = sha256_file(&partial).map_err(|e| HubError::io(&partial, e))?;
        if !hash.starts_with(weights.hash_prefix()) {
            let _ = std::fs::remove_file(&partial);
            return Err(HubError::Corrupt(format!(
                "{url}: sha256 {hash} does not start with the published {}; removed the download",
                weights.hash_prefix()
            )));
        }
        std::fs::rename(&partial, &file).map_err(|e| HubError::io(&file, e))?;
    }
    let variant = weights.model.trim_start_matches("efficientnet_");
    let mut config = Variant::by_name(variant)
        .map_err(|e| HubError::BadName(e.to_string()))?
        .config();
    // torchvision pads symmetrically; its B5..B7 (ported from EfficientNet-PyTorch) keep TF's epsilon.
    (config.padding, config.bn_eps) =
        Layout::Torchvision.default_conventions(variant, weights.file);
    config.resolution = weights.crop;
    config.preprocessing = weights.preprocessing();
    Ok(Fetched {
        file,
        model: Some(config),
        layout: Some(Layout::Torchvision),
        labels: Vec::new(),
        source: format!(
            "torchvision {}.{} ({BASE_URL}/{})",
            weights.model, weights.member, weights.file
        ),
        license: "Apache-2.0 (ported from pytorch-image-models or EfficientNet-PyTorch)".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_resolve_to_their_defaults_and_preprocessing() {
        let b1 = TorchvisionWeights::by_name("efficientnet_b1").unwrap();
        assert_eq!((b1.member, b1.hash_prefix()), ("IMAGENET1K_V2", "c27df63c"));
        let v1 = TorchvisionWeights::by_name("efficientnet_b1.IMAGENET1K_V1").unwrap();
        assert_eq!(v1.hash_prefix(), "533bc792");
        // timm's scale size floor(crop / crop_pct) must give back torchvision's resize size.
        for w in WEIGHTS {
            let p = w.preprocessing();
            assert_eq!(
                (f64::from(w.crop) / p.crop_pct).floor() as u32,
                w.resize,
                "{}",
                w.file
            );
        }
        assert!(TorchvisionWeights::by_name("efficientnet_b9").is_err());
    }
}
