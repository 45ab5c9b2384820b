//! How a network expects its input image: resize method, centre-crop fraction and normalisation.

use serde::Serialize;

/// Resampling filter used for the evaluation resize.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    /// Catmull-Rom bicubic (a = -0.5), the B-series default.
    Bicubic,
    /// Bilinear, the TF default for Lite and EdgeTPU.
    Bilinear,
}

impl Interpolation {
    /// Parses `bicubic` / `bilinear`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "bicubic" => Some(Self::Bicubic),
            "bilinear" => Some(Self::Bilinear),
            _ => None,
        }
    }
}

/// How the evaluation crop and resize are placed: TF's rule or one of pytorch-image-models' `crop_mode`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CropMode {
    /// The official TF code: a square of `crop_pct` of the short side (TF's rounding), resized to the
    /// resolution; `crop_pct = 1` keeps the whole image, squashed to a square.
    #[default]
    Tf,
    /// timm `center`: the short side resized to `floor(resolution / crop_pct)`, then the centre
    /// `resolution` square (torchvision's `Resize` + `CenterCrop`).
    Center,
    /// timm `squash`: both sides resized to `floor(resolution / crop_pct)` (aspect not kept), then the centre
    /// square.
    Squash,
    /// timm `border`: the long side resized to `floor(resolution / crop_pct)`, then padded with the mean
    /// colour (or cropped) to the centre square.
    Border,
}

impl CropMode {
    /// Parses `tf`, `center`, `squash` or `border`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "tf" => Some(Self::Tf),
            "center" => Some(Self::Center),
            "squash" => Some(Self::Squash),
            "border" => Some(Self::Border),
            _ => None,
        }
    }

    /// The name used in metadata and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tf => "tf",
            Self::Center => "center",
            Self::Squash => "squash",
            Self::Border => "border",
        }
    }
}

/// Evaluation preprocessing: a centre crop of `crop_pct` placed by `crop_mode`, a resize to the resolution,
/// then `(pixel / 255 - mean) / std` per RGB channel.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Preprocessing {
    /// Per-channel mean in [0, 1] units.
    pub mean: [f32; 3],
    /// Per-channel standard deviation in [0, 1] units.
    pub std: [f32; 3],
    /// Fraction of the short side kept by the centre crop (1.0 keeps everything).
    pub crop_pct: f64,
    /// Resize filter.
    pub interpolation: Interpolation,
    /// How the crop and resize are placed.
    pub crop_mode: CropMode,
}

/// ImageNet mean (TF `MEAN_RGB / 255`).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet standard deviation (TF `STDDEV_RGB / 255`).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

impl Preprocessing {
    /// The official B-series evaluation: ImageNet mean/std, crop `res / (res + 32)`, bicubic.
    pub fn imagenet(resolution: u32) -> Self {
        Self {
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            crop_pct: tf_crop_pct(resolution),
            interpolation: Interpolation::Bicubic,
            crop_mode: CropMode::Tf,
        }
    }

    /// The official Lite/EdgeTPU evaluation: `(pixel - 127) / 128`, crop `res / (res + 32)`, bilinear.
    pub fn lite(resolution: u32) -> Self {
        Self {
            mean: [127.0 / 255.0; 3],
            std: [128.0 / 255.0; 3],
            crop_pct: tf_crop_pct(resolution),
            interpolation: Interpolation::Bilinear,
            crop_mode: CropMode::Tf,
        }
    }

    /// AdvProp checkpoints: inputs in [-1, 1] (`pixel * 2 / 255 - 1`).
    pub fn advprop(resolution: u32) -> Self {
        Self {
            mean: [0.5; 3],
            std: [0.5; 3],
            crop_pct: tf_crop_pct(resolution),
            interpolation: Interpolation::Bicubic,
            crop_mode: CropMode::Tf,
        }
    }

    /// The same preprocessing with a named normalisation: `imagenet` (mean/std), `lite` (`(x - 127) / 128`) or
    /// `inception` / `advprop` (`x * 2 / 255 - 1`).
    pub fn with_normalization(self, name: &str) -> Option<Self> {
        let other = match name {
            "imagenet" => Self::imagenet(224),
            "lite" => Self::lite(224),
            "inception" | "advprop" => Self::advprop(224),
            _ => return None,
        };
        Some(Self {
            mean: other.mean,
            std: other.std,
            ..self
        })
    }

    /// The same preprocessing evaluated at another resolution: TF's crop fraction follows its rule
    /// (`res / (res + 32)`); timm's crop modes keep their fraction, as timm does when the size changes.
    pub fn at_resolution(self, resolution: u32) -> Self {
        match self.crop_mode {
            CropMode::Tf => Self {
                crop_pct: tf_crop_pct(resolution),
                ..self
            },
            _ => self,
        }
    }
}

/// TF's evaluation crop: `res / (res + CROP_PADDING)` with the constant padding 32 used for all published results.
pub fn tf_crop_pct(resolution: u32) -> f64 {
    f64::from(resolution) / f64::from(resolution + 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_fractions_match_timm_tf_configs() {
        // timm tf_efficientnet crop_pct for B0..B7 (efficientnet-facts.md §3), to 3 decimals.
        for (res, pct) in [
            (224, 0.875),
            (240, 0.882),
            (260, 0.890),
            (300, 0.904),
            (380, 0.922),
            (456, 0.934),
            (528, 0.942),
            (600, 0.949),
        ] {
            assert!(
                (tf_crop_pct(res) - pct).abs() < 1e-3,
                "{res}: {}",
                tf_crop_pct(res)
            );
        }
    }

    #[test]
    fn named_normalisations_keep_crop_and_filter() {
        let p = Preprocessing::imagenet(300)
            .with_normalization("advprop")
            .unwrap();
        assert_eq!(
            (p.mean, p.std, p.crop_pct),
            ([0.5; 3], [0.5; 3], tf_crop_pct(300))
        );
        assert!(
            (255.0 / 255.0 - p.mean[0]) / p.std[0] == 1.0 && (0.0 - p.mean[0]) / p.std[0] == -1.0
        );
        assert!(Preprocessing::lite(224)
            .with_normalization("sepia")
            .is_none());
    }

    #[test]
    fn lite_normalisation_is_minus_127_over_128() {
        let p = Preprocessing::lite(224);
        let px = 200.0_f32;
        let normalised = (px / 255.0 - p.mean[0]) / p.std[0];
        assert!((normalised - (px - 127.0) / 128.0).abs() < 1e-6);
    }
}
