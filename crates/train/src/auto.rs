//! `--recipe auto`: the official recipe with the settings that depend on the data and the run's length
//! chosen for them, after EfficientNetV2's adaptive regularisation (weaker augmentation for smaller images)
//! and the length of the run (batch-norm statistics and the weight average must settle well within it).
//! Every choice comes with its reason, and every flag still overrides it.
//!
//! The choices are a pure function of [`DataFacts`], so they can be tested at their edges.

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
}

/// One choice and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Choice {
    /// What is chosen.
    pub setting: &'static str,
    /// The flag that overrides it.
    pub flag: &'static str,
    /// The value chosen.
    pub value: String,
    /// Why.
    pub reason: String,
}

/// ImageNet's random-resized crop keeps at least 8% of the area at 224 px.
const IMAGENET_MIN_CROP: f64 = 0.08;
/// The smallest crop never keeps more than this (some scale augmentation always remains).
const MOST_MIN_CROP: f64 = 0.7;
/// Runs at least this many steps keep a moving average of the weights.
const EMA_STEPS: usize = 1000;
/// RandAugment starts at this effective size, with V2's magnitude 5, growing to 15 at 300 px.
const RAND_AUGMENT_FROM: u32 = 128;

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
    // The running statistics average over about 1 / (1 - m) steps: a tenth of the run, between TF's 0.99
    // and 0.9.
    let bn_momentum = (1.0 - 10.0 / steps.max(1) as f64).clamp(0.9, 0.99);
    let bn_momentum = (bn_momentum * 1000.0).round() / 1000.0;
    let ema = (steps >= EMA_STEPS).then_some(0.9999);
    let rand_augment = (size >= RAND_AUGMENT_FROM)
        .then(|| (5.0 + 10.0 * f64::from(size - RAND_AUGMENT_FROM) / 172.0).min(15.0))
        .map(|m| m.round());
    let source = match facts.source_side {
        Some(side) if side < facts.img_size => {
            format!("the images are {side} px, smaller than the training size")
        }
        _ => format!("training at {} px", facts.img_size),
    };
    let choices = vec![
        Choice {
            setting: "smallest crop",
            flag: "--min-crop",
            value: format!("{min_crop}"),
            reason: format!(
                "{source}: the smallest random crop keeps {:.0}% of the area (ImageNet's 8% is for 224 px; smaller images have less to crop away)",
                100.0 * min_crop
            ),
        },
        Choice {
            setting: "batch-norm momentum",
            flag: "--bn-momentum",
            value: format!("{bn_momentum}"),
            reason: format!(
                "{steps} optimizer steps: batch-norm statistics average over about {:.0} steps, at most a tenth of the run",
                1.0 / (1.0 - bn_momentum)
            ),
        },
        Choice {
            setting: "weight average",
            flag: "--ema / --no-ema",
            value: ema.map_or("off".into(), |d| format!("{d}")),
            reason: if ema.is_some() {
                format!("{steps} steps: long enough for a moving average of the weights to help")
            } else {
                format!("{steps} steps: too short for a moving average of the weights (from {EMA_STEPS})")
            },
        },
        Choice {
            setting: "RandAugment",
            flag: "--rand-augment",
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
            setting: "horizontal flips",
            flag: "--no-flip",
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
        },
        choices,
    )
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
        }
    }

    #[test]
    fn imagenet_scale_runs_get_the_official_settings() {
        let (s, _) = auto_settings(&facts(224, Some(400), 1_281_167, 350));
        assert_eq!(
            (s.min_crop, s.bn_momentum, s.ema),
            (0.08, 0.99, Some(0.9999))
        );
        // 5 + 10 * (224 - 128) / 172 = 10.6.
        assert_eq!(s.rand_augment, Some(11.0));
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
        // 44 steps x 15 epochs = 660: 1 - 10/660.
        assert_eq!(
            auto_settings(&facts(32, None, 1437, 15)).0.bn_momentum,
            0.985
        );
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
        let flags: Vec<&str> = choices.iter().map(|c| c.flag).collect();
        assert_eq!(
            flags,
            [
                "--min-crop",
                "--bn-momentum",
                "--ema / --no-ema",
                "--rand-augment",
                "--no-flip"
            ]
        );
        assert!(choices[4].reason.contains("orientation"));
    }
}
