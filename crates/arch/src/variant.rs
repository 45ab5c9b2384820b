//! The named networks (B0..B8, L2, Lite0..4) and the configuration every network is resolved from.

use crate::error::{ArchError, Result};
use crate::padding::Padding;
use crate::preprocess::Preprocessing;
use crate::spec::{decode_blocks, BlockArgs, B0_BLOCKS, LITE_BLOCKS};
use serde::Serialize;

/// Non-linearity used by a network's convolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// `x * sigmoid(x)` (SiLU), the B-series activation.
    Swish,
    /// `min(max(x, 0), 6)`, the Lite activation.
    Relu6,
    /// `1 / (1 + exp(-x))`, the squeeze-excite gate.
    Sigmoid,
}

impl Activation {
    /// Parses [`Activation::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        [Activation::Swish, Activation::Relu6, Activation::Sigmoid]
            .into_iter()
            .find(|a| a.name() == name)
    }

    /// The name used in metadata and tables.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Swish => "swish",
            Activation::Relu6 => "relu6",
            Activation::Sigmoid => "sigmoid",
        }
    }
}

/// The unscaled network that width, depth and resolution multipliers are applied to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BaseNetwork {
    /// The stages, as TF block strings decode them.
    pub blocks: Vec<BlockArgs>,
    /// Stem output filters before width scaling.
    pub stem_filters: u32,
    /// Head filters before width scaling.
    pub head_filters: u32,
    /// Resolution the base network was designed for.
    pub resolution: u32,
    /// Activation of every convolution that has one.
    pub activation: Activation,
    /// Lite rule: stem and head are not width-scaled and the first and last stages are not depth-scaled.
    pub fix_head_stem: bool,
}

impl BaseNetwork {
    /// EfficientNet-B0, the base of the B-series.
    pub fn b0() -> Self {
        Self::from_blocks(B0_BLOCKS, Activation::Swish, false)
            .expect("the shipped B0 spec is valid")
    }

    /// The Lite base: B0 without SE, ReLU6, fixed stem and head.
    pub fn lite() -> Self {
        Self::from_blocks(LITE_BLOCKS, Activation::Relu6, true)
            .expect("the shipped Lite spec is valid")
    }

    /// A base network from block strings with B0's stem (32), head (1280) and resolution (224).
    pub fn from_blocks(text: &str, activation: Activation, fix_head_stem: bool) -> Result<Self> {
        let base = Self {
            blocks: decode_blocks(text)?,
            stem_filters: 32,
            head_filters: 1280,
            resolution: 224,
            activation,
            fix_head_stem,
        };
        base.validate()?;
        Ok(base)
    }

    /// Checks that the stages chain: the first takes the stem's filters and each next the previous one's.
    pub fn validate(&self) -> Result<()> {
        let mut previous = self.stem_filters;
        for (i, block) in self.blocks.iter().enumerate() {
            if block.input_filters != previous {
                return Err(ArchError::BadSpec(format!(
                    "stage {i} (`{block}`) takes i{} but the layer before it gives {previous} filters",
                    block.input_filters
                )));
            }
            previous = block.output_filters;
        }
        Ok(())
    }
}

/// The family a named variant belongs to, which fixes its base network and preprocessing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// EfficientNet B0..B8 and L2: swish, squeeze-excite, ImageNet normalisation.
    EfficientNet,
    /// EfficientNet-Lite0..4: ReLU6, no SE, fixed stem/head, 127/128 normalisation.
    Lite,
}

/// A published network: its scaling coefficients and the numbers it must reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Variant {
    /// Short name (`b0`, `lite3`, `l2`).
    pub name: &'static str,
    /// Family (base network and preprocessing).
    pub family: Family,
    /// Width multiplier.
    pub width: f64,
    /// Depth multiplier.
    pub depth: f64,
    /// Native input resolution.
    pub resolution: u32,
    /// Dropout before the classifier.
    pub dropout: f64,
    /// Published parameter count (torchvision / timm metadata).
    pub published_params: u64,
    /// Published ImageNet top-1 (%), with where it comes from.
    pub published_top1: Option<(f64, &'static str)>,
}

const AA: &str = "TF AutoAugment checkpoint (paper v5 Table 2)";

/// Every named variant (TF `efficientnet_params`, `efficientnet_lite_params`).
pub const VARIANTS: &[Variant] = &[
    b("b0", 1.0, 1.0, 224, 0.2, 5_288_548, Some((77.1, AA))),
    b("b1", 1.0, 1.1, 240, 0.2, 7_794_184, Some((79.1, AA))),
    b("b2", 1.1, 1.2, 260, 0.3, 9_109_994, Some((80.1, AA))),
    b("b3", 1.2, 1.4, 300, 0.3, 12_233_232, Some((81.6, AA))),
    b("b4", 1.4, 1.8, 380, 0.4, 19_341_616, Some((82.9, AA))),
    b("b5", 1.6, 2.2, 456, 0.4, 30_389_784, Some((83.6, AA))),
    b("b6", 1.8, 2.6, 528, 0.5, 43_040_704, Some((84.0, AA))),
    b("b7", 2.0, 3.1, 600, 0.5, 66_347_960, Some((84.3, AA))),
    b(
        "b8",
        2.2,
        3.6,
        672,
        0.5,
        87_413_142,
        Some((85.5, "TF AdvProp+AA checkpoint")),
    ),
    b(
        "l2",
        4.3,
        5.3,
        800,
        0.5,
        480_309_308,
        Some((88.4, "TF NoisyStudent+RA checkpoint")),
    ),
    lite("lite0", 1.0, 1.0, 224, 0.2, 4_652_008, 75.1),
    lite("lite1", 1.0, 1.1, 240, 0.2, 5_416_680, 76.7),
    lite("lite2", 1.1, 1.2, 260, 0.3, 6_092_072, 77.6),
    lite("lite3", 1.2, 1.4, 280, 0.3, 8_197_096, 79.8),
    lite("lite4", 1.4, 1.8, 300, 0.3, 13_006_568, 81.5),
];

const fn b(
    name: &'static str,
    width: f64,
    depth: f64,
    resolution: u32,
    dropout: f64,
    published_params: u64,
    published_top1: Option<(f64, &'static str)>,
) -> Variant {
    Variant {
        name,
        family: Family::EfficientNet,
        width,
        depth,
        resolution,
        dropout,
        published_params,
        published_top1,
    }
}

const fn lite(
    name: &'static str,
    width: f64,
    depth: f64,
    resolution: u32,
    dropout: f64,
    params: u64,
    top1: f64,
) -> Variant {
    Variant {
        name,
        family: Family::Lite,
        width,
        depth,
        resolution,
        dropout,
        published_params: params,
        published_top1: Some((top1, "TF Lite README, float")),
    }
}

/// A named variant (`b0`, `lite2`, ...) or a custom base from comma-separated TF block strings (B0's stem,
/// head, swish and resolution around them).
pub fn network_by_name_or_blocks(text: &str) -> Result<NetworkConfig> {
    if text.contains('_') {
        let mut config = Variant::by_name("b0")?.config();
        config.base = BaseNetwork::from_blocks(text, Activation::Swish, false)?;
        config.name = "custom".into();
        return Ok(config);
    }
    Ok(Variant::by_name(text)?.config())
}

/// The names accepted by [`Variant::by_name`], in table order.
pub fn known_names() -> Vec<&'static str> {
    VARIANTS.iter().map(|v| v.name).collect()
}

impl Variant {
    /// Looks a variant up by name; accepts `b0`, `B0`, `efficientnet-b0`, `efficientnet_b0`, `tf_efficientnet_b0`,
    /// `efficientnet-lite0`.
    pub fn by_name(name: &str) -> Result<&'static Variant> {
        let lower = name.trim().to_ascii_lowercase();
        let short = lower
            .trim_start_matches("tf_")
            .trim_start_matches("efficientnet")
            .trim_start_matches(['-', '_']);
        VARIANTS
            .iter()
            .find(|v| v.name == short)
            .ok_or_else(|| ArchError::UnknownModel(name.to_string()))
    }

    /// The configuration this variant resolves from, with 1000 classes and TF-SAME padding.
    pub fn config(&self) -> NetworkConfig {
        let (base, preprocessing) = match self.family {
            Family::EfficientNet => (BaseNetwork::b0(), Preprocessing::imagenet(self.resolution)),
            Family::Lite => (BaseNetwork::lite(), Preprocessing::lite(self.resolution)),
        };
        NetworkConfig {
            name: self.name.to_string(),
            base,
            width: self.width,
            depth: self.depth,
            resolution: self.resolution,
            dropout: self.dropout,
            drop_path_rate: DEFAULT_DROP_PATH_RATE,
            num_classes: 1000,
            padding: Padding::TfSame,
            bn_eps: TF_BN_EPS,
            preprocessing,
        }
    }
}

/// The official drop-connect rate (TF `survival_prob = 0.8`).
pub const DEFAULT_DROP_PATH_RATE: f64 = 0.2;
/// The TF batch-norm epsilon.
pub const TF_BN_EPS: f64 = 1e-3;

/// Everything needed to resolve a network: base, multipliers, resolution, head and runtime conventions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetworkConfig {
    /// Display name (`b3`, `b0-phi1.500`, ...).
    pub name: String,
    /// The unscaled network.
    pub base: BaseNetwork,
    /// Width multiplier applied to filters.
    pub width: f64,
    /// Depth multiplier applied to stage repeats.
    pub depth: f64,
    /// Input resolution (square).
    pub resolution: u32,
    /// Dropout before the classifier.
    pub dropout: f64,
    /// Maximum drop-path rate (the last block gets `rate * (n-1)/n`).
    pub drop_path_rate: f64,
    /// Classifier outputs.
    pub num_classes: u32,
    /// Padding convention of the weights.
    pub padding: Padding,
    /// Batch-norm epsilon of the weights.
    pub bn_eps: f64,
    /// Evaluation preprocessing.
    pub preprocessing: Preprocessing,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_forgiving_and_unknown_names_list_the_known_ones() {
        for name in [
            "b3",
            "B3",
            "efficientnet-b3",
            "efficientnet_b3",
            "tf_efficientnet_b3",
        ] {
            assert_eq!(Variant::by_name(name).unwrap().name, "b3");
        }
        assert_eq!(
            Variant::by_name("efficientnet-lite2").unwrap().name,
            "lite2"
        );
        let err = Variant::by_name("b9").unwrap_err().to_string();
        assert!(
            err.contains("unknown model `b9`") && err.contains("lite4"),
            "{err}"
        );
    }

    #[test]
    fn shipped_bases_chain_and_broken_ones_are_named() {
        BaseNetwork::b0().validate().unwrap();
        BaseNetwork::lite().validate().unwrap();
        let err = BaseNetwork::from_blocks(
            "r1_k3_s11_e1_i32_o16,r1_k3_s22_e6_i24_o24",
            Activation::Swish,
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("stage 1"), "{err}");
    }
}
