//! `--recipe auto`: the official recipe with the settings that depend on the data and the run's length
//! chosen for them, after EfficientNetV2's adaptive regularisation (weaker augmentation for smaller images)
//! and the length of the run (batch-norm statistics and the weight average must settle well within it).
//! Every choice comes with its reason, and every flag still overrides it.
//!
//! The choices are a pure function of [`DataFacts`], so they can be tested at their edges.

use crate::config::{RandAugmentConfig, TrainConfig};
use crate::error::Result;
use crate::trainer::Datasets;
use effnet_arch::variant::DEFAULT_DROP_PATH_RATE;
use effnet_arch::Variant;
use effnet_data::Sample;
use serde::Serialize;

/// What the choices depend on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DataFacts {
    /// The training resolution.
    pub img_size: u32,
    /// The median short side of the training images (`None` when unknown).
    pub source_side: Option<u32>,
    /// Training images.
    pub train_images: usize,
    /// Epochs.
    pub epochs: usize,
    /// Images per step.
    pub batch: usize,
    /// Classes.
    pub classes: usize,
    /// The network's own dropout before the classifier.
    pub dropout: f64,
    /// The network's own drop-path rate.
    pub drop_path: f64,
    /// The network's own resolution.
    pub resolution: u32,
}

/// The settings chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AutoSettings {
    /// Smallest crop area of the random-resized crop.
    pub min_crop: f64,
    /// Batch-norm momentum (TF convention).
    pub bn_momentum: f64,
    /// The weight average's decay, or none.
    pub ema: Option<f64>,
    /// RandAugment's magnitude with 2 ops per image, or none.
    pub rand_augment: Option<f64>,
    /// Dropout before the classifier.
    pub dropout: f64,
    /// Mixup's alpha, or none.
    pub mixup: Option<f64>,
}

/// A setting `--recipe auto` chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Setting {
    /// The random-resized crop's smallest area.
    MinCrop,
    /// Batch-norm momentum.
    BnMomentum,
    /// The moving average of the weights.
    Ema,
    /// RandAugment.
    RandAugment,
    /// Dropout before the classifier.
    Dropout,
    /// Drop-path.
    DropPath,
    /// Mixup.
    Mixup,
    /// CutMix.
    Cutmix,
    /// Horizontal flips.
    Flip,
}

impl Setting {
    /// Its name for people.
    pub fn name(self) -> &'static str {
        match self {
            Self::MinCrop => "smallest crop",
            Self::BnMomentum => "batch-norm momentum",
            Self::Ema => "weight average",
            Self::RandAugment => "RandAugment",
            Self::Dropout => "dropout",
            Self::DropPath => "drop-path",
            Self::Mixup => "mixup",
            Self::Cutmix => "CutMix",
            Self::Flip => "horizontal flips",
        }
    }

    /// The `effnet train` flag that overrides it.
    pub fn flag(self) -> &'static str {
        match self {
            Self::MinCrop => "--min-crop",
            Self::BnMomentum => "--bn-momentum",
            Self::Ema => "--ema / --no-ema",
            Self::RandAugment => "--rand-augment",
            Self::Dropout => "--dropout",
            Self::DropPath => "--drop-path",
            Self::Mixup => "--mixup",
            Self::Cutmix => "--cutmix",
            Self::Flip => "--no-flip",
        }
    }
}

/// One choice and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Choice {
    /// What is chosen.
    pub setting: Setting,
    /// The value chosen.
    pub value: String,
    /// Why.
    pub reason: String,
}

/// ImageNet's random-resized crop keeps at least 8% of the area at 224 px.
const IMAGENET_MIN_CROP: f64 = 0.08;
/// The smallest crop never keeps more than this (some scale augmentation always remains).
const MOST_MIN_CROP: f64 = 0.7;
/// The batch-norm statistics average over at most `1 / BN_WINDOWS_PER_RUN` of the run: a tenth was
/// measurably too slow on the recipe benchmark's digits (`docs/recipes.md`).
const BN_WINDOWS_PER_RUN: f64 = 100.0;
/// Runs at least this many steps keep a moving average of the weights.
const EMA_STEPS: usize = 1000;
/// RandAugment starts at this effective size, with V2's magnitude 5, growing by 10 per 172 px (V2's 5 to
/// 15 from 128 to 300 px) up to effnet's largest magnitude, 10.
const RAND_AUGMENT_FROM: u32 = 128;
/// EfficientNetV2's progressive learning starts from this size with its weakest regularisation.
const SMALLEST_SIZE: u32 = 128;
/// Dropout at the smallest size (V2's start).
const SMALLEST_DROPOUT: f64 = 0.1;
/// The network's own dropout is reached at its resolution, and never below ImageNet's 224 px: a network
/// scaled down for small images still gets the weak regularisation small images need.
const FULL_DROPOUT_FROM: u32 = 224;
/// Mixup needs images at least this large ...
const MIXUP_FROM_SIZE: u32 = 256;
/// ... and this many images per class (V2 mixes only its larger networks on ImageNet-sized data).
const MIXUP_FROM_IMAGES_PER_CLASS: usize = 500;
/// Mixup's alpha when on (V2-M's).
const MIXUP_ALPHA: f64 = 0.2;

/// The resolution the images really have: the training size, or the images' own when they are smaller
/// (upscaling adds no detail to crop into).
fn effective_size(f: &DataFacts) -> u32 {
    f.source_side
        .map_or(f.img_size, |s| s.min(f.img_size))
        .max(1)
}

/// Optimizer steps of the run.
fn steps(f: &DataFacts) -> usize {
    f.epochs * (f.train_images / f.batch.max(1)).max(1)
}

/// The settings for `facts`, with the reasons.
pub fn auto_settings(facts: &DataFacts) -> (AutoSettings, Vec<Choice>) {
    let size = effective_size(facts);
    let steps = steps(facts);
    // The crop's smallest area grows as the images shrink, with the area's 1.5th power of the size
    // ratio: 8% at 224 px, 23% at 112, 58% at 56, and at most 70%.
    let ratio = 224.0 / f64::from(size);
    let min_crop = (IMAGENET_MIN_CROP * ratio.powf(1.5)).clamp(IMAGENET_MIN_CROP, MOST_MIN_CROP);
    let min_crop = (min_crop * 100.0).round() / 100.0;
    // The running statistics average over about 1 / (1 - m) steps: at most a hundredth of the run,
    // between PyTorch's 0.9 (in TF's convention) and TF's 0.99, which needs 10,000 steps.
    let bn_momentum = (1.0 - BN_WINDOWS_PER_RUN / steps.max(1) as f64).clamp(0.9, 0.99);
    let bn_momentum = (bn_momentum * 1000.0).round() / 1000.0;
    let ema = (steps >= EMA_STEPS).then_some(0.9999);
    let rand_augment = (size >= RAND_AUGMENT_FROM)
        .then(|| (5.0 + 10.0 * f64::from(size - RAND_AUGMENT_FROM) / 172.0).min(10.0))
        .map(|m| m.round());
    let dropout = dropout_for(size, facts);
    let per_class = facts.train_images / facts.classes.max(1);
    let mixup = (size >= MIXUP_FROM_SIZE && per_class >= MIXUP_FROM_IMAGES_PER_CLASS)
        .then_some(MIXUP_ALPHA);
    let source = match facts.source_side {
        Some(side) if side < facts.img_size => {
            format!("the images are {side} px, smaller than the training size")
        }
        _ => format!("training at {} px", facts.img_size),
    };
    let choices = vec![
        Choice {
            setting: Setting::MinCrop,
            value: format!("{min_crop}"),
            reason: format!(
                "{source}: the smallest random crop keeps {:.0}% of the area (ImageNet's 8% is for 224 px; smaller images have less to crop away)",
                100.0 * min_crop
            ),
        },
        Choice {
            setting: Setting::BnMomentum,
            value: format!("{bn_momentum}"),
            reason: format!(
                "{steps} optimizer steps: batch-norm statistics average over about {:.0} steps, at most a hundredth of the run",
                1.0 / (1.0 - bn_momentum)
            ),
        },
        Choice {
            setting: Setting::Ema,
            value: ema.map_or("off".into(), |d| format!("{d}")),
            reason: if ema.is_some() {
                format!("{steps} steps: long enough for a moving average of the weights to help")
            } else {
                format!("{steps} steps: too short for a moving average of the weights (from {EMA_STEPS})")
            },
        },
        Choice {
            setting: Setting::RandAugment,
            value: rand_augment.map_or("off".into(), |m| format!("2,{m}")),
            reason: match rand_augment {
                Some(_) => format!(
                    "{size} px: RandAugment with EfficientNetV2's magnitude for the size (5 at {RAND_AUGMENT_FROM} px to 15 at 300 px)"
                ),
                None => format!(
                    "{size} px: below {RAND_AUGMENT_FROM} px EfficientNetV2 keeps augmentation weak"
                ),
            },
        },
        Choice {
            setting: Setting::Dropout,
            value: format!("{dropout}"),
            reason: format!(
                "{size} px: EfficientNetV2 grows dropout from {SMALLEST_DROPOUT} at {SMALLEST_SIZE} px to the network's own ({}) at {} px",
                facts.dropout,
                facts.resolution.max(FULL_DROPOUT_FROM)
            ),
        },
        Choice {
            setting: Setting::DropPath,
            value: format!("{}", facts.drop_path),
            reason: "the network's own: EfficientNetV2 keeps it whatever the size".into(),
        },
        Choice {
            setting: Setting::Mixup,
            value: mixup.map_or("off".into(), |a| format!("{a}")),
            reason: format!(
                "{size} px, {per_class} images per class: mixup from {MIXUP_FROM_SIZE} px with {MIXUP_FROM_IMAGES_PER_CLASS} images per class, as EfficientNetV2 mixes only its larger networks on ImageNet"
            ),
        },
        Choice {
            setting: Setting::Cutmix,
            value: "off".into(),
            reason: "neither the official nor EfficientNetV2's recipe uses it".into(),
        },
        Choice {
            setting: Setting::Flip,
            value: "on".into(),
            reason: "effnet cannot know whether orientation matters for your classes".into(),
        },
    ];
    (
        AutoSettings {
            min_crop,
            bn_momentum,
            ema,
            rand_augment,
            dropout,
            mixup,
        },
        choices,
    )
}

/// Dropout at the effective `size`: [`SMALLEST_DROPOUT`] (or the network's own if less) up to
/// [`SMALLEST_SIZE`], the network's own from its resolution (or from [`FULL_DROPOUT_FROM`] for a network
/// made for smaller images), linear between.
fn dropout_for(size: u32, facts: &DataFacts) -> f64 {
    let smallest = SMALLEST_DROPOUT.min(facts.dropout);
    let full_from = facts.resolution.max(FULL_DROPOUT_FROM);
    let along =
        f64::from(size.saturating_sub(SMALLEST_SIZE)) / f64::from(full_from - SMALLEST_SIZE);
    let dropout = smallest + along.min(1.0) * (facts.dropout - smallest);
    (dropout * 1000.0).round() / 1000.0
}

/// The facts of `config`'s run on `data` (a run without its network's description, fine-tuning a file,
/// counts with B0's dropout and drop-path at the training resolution).
fn facts_of(config: &TrainConfig, data: &Datasets) -> DataFacts {
    let (dropout, drop_path, resolution) = match &config.network {
        Some(n) => (n.dropout, n.drop_path_rate, n.resolution),
        None => {
            let b0 = Variant::by_name("b0").expect("b0 is a built-in variant");
            (b0.dropout, DEFAULT_DROP_PATH_RATE, config.img_size)
        }
    };
    DataFacts {
        img_size: config.img_size,
        source_side: median_short_side(&data.train.samples, 256),
        train_images: data.train.samples.len(),
        epochs: config.epochs,
        batch: config.batch,
        classes: data.train.classes.len(),
        dropout,
        drop_path,
        resolution,
    }
}

/// Sets `config`'s settings to `--recipe auto`'s choices for its training images, except those `given`
/// says the user set; returns the choices applied.
pub fn choose(config: &mut TrainConfig, given: &dyn Fn(Setting) -> bool) -> Result<Vec<Choice>> {
    let data = Datasets::open(config)?;
    let (settings, choices) = auto_settings(&facts_of(config, &data));
    Ok(apply(config, &settings, choices, given))
}

/// Sets the settings of `config` that `choices` name to `settings`, except those `given` says the user
/// set; returns the choices applied.
fn apply(
    config: &mut TrainConfig,
    settings: &AutoSettings,
    choices: Vec<Choice>,
    given: &dyn Fn(Setting) -> bool,
) -> Vec<Choice> {
    let applied: Vec<Choice> = choices.into_iter().filter(|c| !given(c.setting)).collect();
    for choice in &applied {
        match choice.setting {
            Setting::MinCrop => config.min_crop = settings.min_crop,
            Setting::BnMomentum => config.bn_momentum = settings.bn_momentum,
            Setting::Ema => config.ema = settings.ema,
            Setting::RandAugment => {
                config.rand_augment = settings.rand_augment.map(|m| RandAugmentConfig { n: 2, m });
            }
            Setting::Dropout => config.dropout = Some(settings.dropout),
            Setting::Mixup => config.mixing.mixup = settings.mixup,
            // Drop-path stays the network's, CutMix off and flips on: what the recipe already has.
            Setting::DropPath | Setting::Cutmix | Setting::Flip => {}
        }
    }
    applied
}

/// The median short side of (up to `limit` of) `samples`, from their headers; `None` if none can be
/// read.
pub fn median_short_side(samples: &[Sample], limit: usize) -> Option<u32> {
    let step = (samples.len() / limit.max(1)).max(1);
    let mut sides: Vec<u32> = samples
        .iter()
        .step_by(step)
        .filter_map(|s| image::image_dimensions(&s.path).ok())
        .map(|(w, h)| w.min(h))
        .collect();
    if sides.is_empty() {
        return None;
    }
    sides.sort_unstable();
    Some(sides[sides.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(
        img_size: u32,
        source_side: Option<u32>,
        train_images: usize,
        epochs: usize,
    ) -> DataFacts {
        DataFacts {
            img_size,
            source_side,
            train_images,
            epochs,
            batch: 32,
            classes: 10,
            dropout: 0.2,
            drop_path: 0.2,
            resolution: 224,
        }
    }

    #[test]
    fn imagenet_scale_runs_get_the_official_settings() {
        let (s, _) = auto_settings(&facts(224, Some(400), 1_281_167, 350));
        assert_eq!(
            (s.min_crop, s.bn_momentum, s.ema),
            (0.08, 0.99, Some(0.9999))
        );
        // 5 + 10 * (224 - 128) / 172 = 10.6, at most 10.
        assert_eq!(s.rand_augment, Some(10.0));
        assert_eq!((s.dropout, s.mixup), (0.2, None));
    }

    #[test]
    fn dropout_grows_with_the_size_up_to_the_networks_own() {
        let at = |size, resolution| {
            let f = DataFacts {
                resolution,
                ..facts(size, None, 5000, 30)
            };
            auto_settings(&f).0.dropout
        };
        assert_eq!(at(32, 224), 0.1);
        assert_eq!(at(128, 224), 0.1);
        // Halfway from 128 to 224 px.
        assert_eq!(at(176, 224), 0.15);
        assert_eq!(at(224, 224), 0.2);
        assert_eq!(at(600, 224), 0.2);
        // A network made for larger images reaches its own at its resolution (B7's 0.5 at 600 px);
        // one made for smaller images at 224 px.
        let b7 = |size| {
            let f = DataFacts {
                resolution: 600,
                dropout: 0.5,
                ..facts(size, None, 5000, 30)
            };
            auto_settings(&f).0.dropout
        };
        assert_eq!((b7(128), b7(364), b7(600)), (0.1, 0.3, 0.5));
        assert_eq!((at(32, 32), at(176, 100), at(224, 100)), (0.1, 0.15, 0.2));
        // A network whose own dropout is below V2's start keeps its own.
        let low = DataFacts {
            dropout: 0.05,
            ..facts(32, None, 5000, 30)
        };
        assert_eq!(auto_settings(&low).0.dropout, 0.05);
    }

    #[test]
    fn mixup_only_for_large_images_with_many_per_class() {
        // 10 classes: 500 per class is 5000 images.
        let mixup = |size, images| auto_settings(&facts(size, None, images, 30)).0.mixup;
        assert_eq!(mixup(256, 5000), Some(0.2));
        assert_eq!(mixup(255, 5000), None);
        assert_eq!(mixup(256, 4999), None);
        // The images' own size counts.
        let (s, choices) = auto_settings(&facts(300, Some(200), 50_000, 30));
        assert_eq!(s.mixup, None);
        let mixup = choices
            .iter()
            .find(|c| c.setting == Setting::Mixup)
            .unwrap();
        assert!(
            mixup.reason.starts_with("200 px, 5000 images per class"),
            "{mixup:?}"
        );
    }

    #[test]
    fn small_images_keep_larger_crops_and_no_rand_augment() {
        let (s, choices) = auto_settings(&facts(32, Some(32), 1437, 15));
        assert_eq!(s.min_crop, 0.7);
        assert_eq!(s.rand_augment, None);
        assert!(choices[0].reason.contains("70%"), "{:?}", choices[0]);
        // 112 px: 0.08 * 2^1.5 = 0.226.
        assert_eq!(auto_settings(&facts(112, None, 5000, 30)).0.min_crop, 0.23);
        // Images smaller than the training size count at their own size.
        let (upscaled, choices) = auto_settings(&facts(224, Some(32), 5000, 30));
        assert_eq!(upscaled.min_crop, 0.7);
        assert!(
            choices[0].reason.contains("32 px, smaller"),
            "{:?}",
            choices[0]
        );
    }

    #[test]
    fn batch_norm_and_the_average_follow_the_run_length() {
        // 315 images, batch 32, 10 epochs: 90 steps, the fastest statistics.
        let (short, choices) = auto_settings(&facts(32, None, 315, 10));
        assert_eq!((short.bn_momentum, short.ema), (0.9, None));
        assert!(
            choices[1].reason.starts_with("90 optimizer steps"),
            "{:?}",
            choices[1]
        );
        // 44 steps x 15 epochs = 660: still 0.9 (1 - 100/660 is less).
        let momentum = |images, epochs| {
            auto_settings(&facts(32, None, images, epochs))
                .0
                .bn_momentum
        };
        assert_eq!(momentum(1437, 15), 0.9);
        // 1 - 100/steps from 1000 steps: 2000 steps give 0.95, and TF's 0.99 from 10,000.
        assert_eq!(momentum(3200, 10), 0.9);
        assert_eq!(momentum(3200, 20), 0.95);
        assert_eq!(momentum(32_000, 10), 0.99);
        assert_eq!(momentum(64_000, 10), 0.99);
        // The average starts at 1000 steps.
        assert_eq!(
            auto_settings(&facts(32, None, 3200, 10)).0.ema,
            Some(0.9999)
        );
        assert_eq!(auto_settings(&facts(32, None, 3199, 10)).0.ema, None);
    }

    #[test]
    fn the_choices_name_their_flags_and_flips_stay_on() {
        let (_, choices) = auto_settings(&facts(64, None, 1000, 5));
        let flags: Vec<&str> = choices.iter().map(|c| c.setting.flag()).collect();
        assert_eq!(
            flags,
            [
                "--min-crop",
                "--bn-momentum",
                "--ema / --no-ema",
                "--rand-augment",
                "--dropout",
                "--drop-path",
                "--mixup",
                "--cutmix",
                "--no-flip"
            ]
        );
        assert!(choices[8].reason.contains("orientation"));
    }
}
