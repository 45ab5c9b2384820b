//! Multi-scale backbone features: the feature maps at the end of each reduction level, with
//! pytorch-image-models' `features_only` semantics (`_efficientnet_builder.py`), so that a detector or a
//! segmenter built on timm's `feature_info` can swap in an effnet backbone.
//!
//! A level ends at the last block of a stage whose next stage starts with a stride (or at the last stage).
//! Its "bottleneck" map is that block's output; its "expansion" map is the input of that block's projection
//! (the expanded, squeeze-excited depthwise output). When the first block already has a stride, the stem's
//! output is level 0, as in timm.

use crate::plan::Plan;
use serde::Serialize;

/// Where in the last block of a level the map is taken (timm's `feature_location`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FeatureLocation {
    /// The block's output (timm's default, `''` / `'bottleneck'`).
    #[default]
    Bottleneck,
    /// The input of the block's projection convolution, after squeeze-excite (timm's `'expansion'`).
    Expansion,
}

impl FeatureLocation {
    /// Parses `bottleneck` or `expansion`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "bottleneck" => Some(Self::Bottleneck),
            "expansion" => Some(Self::Expansion),
            _ => None,
        }
    }
}

/// The tensor of the plan a feature level is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "block")]
pub enum FeatureTap {
    /// The stem's output (after its batch norm and activation).
    Stem,
    /// The output of the block with this global index.
    BlockOutput(usize),
    /// The input of the projection of the block with this global index.
    BeforeProject(usize),
}

/// One feature level, described as timm's `feature_info` entries are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FeatureLevel {
    /// Position in the list of levels (what `--out-indices` selects).
    pub index: usize,
    /// timm's stage number: 0 for the stem, `s + 1` for the stage with 0-based index `s`.
    pub stage: usize,
    /// Total stride of the map relative to the input.
    pub reduction: u32,
    /// Channels of the map.
    pub num_chs: u32,
    /// The module timm takes the map from (`blocks.6`, `blocks.1.1.conv_pwl`, `bn1`).
    pub module: String,
    /// Height and width of the map at the plan's resolution.
    pub size: u32,
    /// Which of the plan's tensors the map is.
    pub tap: FeatureTap,
}

impl Plan {
    /// The feature levels of this network, in order of increasing reduction.
    pub fn feature_levels(&self, location: FeatureLocation) -> Vec<FeatureLevel> {
        let mut levels = Vec::new();
        if self.blocks.first().is_some_and(|b| b.depthwise.stride > 1) {
            levels.push(FeatureLevel {
                index: 0,
                stage: 0,
                reduction: self.stem.stride,
                num_chs: self.stem.out_channels,
                module: "bn1".into(),
                size: self.stem.output_size,
                tap: FeatureTap::Stem,
            });
        }
        let mut reduction = self.stem.stride;
        for (s, stage) in self.stages.iter().enumerate() {
            reduction *= stage.stride;
            let ends_level = self.stages.get(s + 1).is_none_or(|next| next.stride > 1);
            let Some(last) = stage.blocks.clone().last().map(|i| &self.blocks[i]) else {
                continue;
            };
            if !ends_level {
                continue;
            }
            let (module, num_chs, size, tap) = match location {
                FeatureLocation::Bottleneck => (
                    format!("blocks.{s}"),
                    last.out_channels(),
                    last.project.output_size,
                    FeatureTap::BlockOutput(last.index),
                ),
                FeatureLocation::Expansion => {
                    // timm's depthwise-separable block (no expansion) names its projection `conv_pw`.
                    let leaf = if last.expand.is_some() {
                        "conv_pwl"
                    } else {
                        "conv_pw"
                    };
                    (
                        format!("blocks.{s}.{}.{leaf}", last.index_in_stage),
                        last.mid_channels(),
                        last.depthwise.output_size,
                        FeatureTap::BeforeProject(last.index),
                    )
                }
            };
            levels.push(FeatureLevel {
                index: levels.len(),
                stage: s + 1,
                reduction,
                num_chs,
                module,
                size,
                tap,
            });
        }
        levels
    }
}

/// The levels numbered `indices` among `all` (every level when `indices` is empty), in the order asked;
/// an unknown or repeated index is an error that says which.
pub fn select_levels(all: &[FeatureLevel], indices: &[usize]) -> Result<Vec<FeatureLevel>, String> {
    if indices.is_empty() {
        return Ok(all.to_vec());
    }
    let mut levels: Vec<FeatureLevel> = Vec::new();
    for &i in indices {
        let level = all.get(i).ok_or_else(|| {
            format!(
                "feature level {i} does not exist: the network has levels 0..={}",
                all.len().saturating_sub(1)
            )
        })?;
        if levels.iter().any(|l| l.index == i) {
            return Err(format!("feature level {i} is asked for twice"));
        }
        levels.push(level.clone());
    }
    Ok(levels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{resolve, Variant};

    fn levels(name: &str, location: FeatureLocation) -> Vec<(u32, u32, String)> {
        let plan = resolve(&Variant::by_name(name).unwrap().config()).unwrap();
        plan.feature_levels(location)
            .into_iter()
            .map(|l| (l.reduction, l.num_chs, l.module))
            .collect()
    }

    #[test]
    fn selection_keeps_the_order_asked_and_refuses_unknown_or_repeated_levels() {
        let plan = resolve(&Variant::by_name("b0").unwrap().config()).unwrap();
        let all = plan.feature_levels(FeatureLocation::Bottleneck);
        assert_eq!(select_levels(&all, &[]).unwrap(), all);
        let picked = select_levels(&all, &[3, 1]).unwrap();
        assert_eq!((picked[0].index, picked[1].index), (3, 1));
        assert!(select_levels(&all, &[5])
            .unwrap_err()
            .contains("levels 0..=4"));
        assert!(select_levels(&all, &[2, 2]).unwrap_err().contains("twice"));
    }

    #[test]
    fn b0_levels_match_timm_feature_info() {
        // timm: efficientnet_b0(features_only=True).feature_info.channels() == [16, 24, 40, 112, 320],
        // reduction() == [2, 4, 8, 16, 32], module_name() == ['blocks.0', .., 'blocks.4', 'blocks.6'].
        let got = levels("b0", FeatureLocation::Bottleneck);
        let want = [
            (2, 16, "blocks.0"),
            (4, 24, "blocks.1"),
            (8, 40, "blocks.2"),
            (16, 112, "blocks.4"),
            (32, 320, "blocks.6"),
        ];
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert_eq!((g.0, g.1, g.2.as_str()), w);
        }
    }

    #[test]
    fn b3_expansion_levels_match_timm_feature_info() {
        // timm's builder for efficientnet_b3(features_only=True, feature_location='expansion'): the
        // projection input of each level's last block (B3's stage 0 has two blocks, the second 24 -> 24).
        let got = levels("b3", FeatureLocation::Expansion);
        let want = [
            (2, 24, "blocks.0.1.conv_pw"),
            (4, 192, "blocks.1.2.conv_pwl"),
            (8, 288, "blocks.2.2.conv_pwl"),
            (16, 816, "blocks.4.4.conv_pwl"),
            (32, 2304, "blocks.6.1.conv_pwl"),
        ];
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert_eq!((g.0, g.1, g.2.as_str()), w);
        }
    }
}
