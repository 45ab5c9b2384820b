//! The weights effnet knows by name (`effnet weights list`): pytorch-image-models' EfficientNet and Lite
//! repositories on the Hugging Face hub (`hf_hub_id='timm/'` in `timm/models/efficientnet.py`),
//! torchvision's enums, and the official TF checkpoint archives (download and extract one, then pass its
//! folder as `--weights`), with the evaluation size and the published ImageNet top-1 where there is one.

use crate::torchvision::WEIGHTS;
use serde::Serialize;

/// One known weights name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KnownWeights {
    /// What `--weights` takes.
    pub name: String,
    /// The effnet network.
    pub model: String,
    /// Evaluation resolution (timm's test size where it has one).
    pub resolution: u32,
    /// ImageNet top-1 as published, in percent.
    pub top1: Option<f64>,
    /// The weights' licence.
    pub license: &'static str,
}

/// timm repositories: (repository, effnet network, evaluation size, published top-1). Top-1 values are
/// timm's `results-imagenet.csv` where the reference notes carry them.
const TIMM: &[(&str, &str, u32, Option<f64>)] = &[
    ("timm/efficientnet_b0.ra_in1k", "b0", 224, Some(77.698)),
    ("timm/efficientnet_b1.ft_in1k", "b1", 256, None),
    ("timm/efficientnet_b2.ra_in1k", "b2", 288, None),
    ("timm/efficientnet_b3.ra2_in1k", "b3", 320, Some(82.296)),
    ("timm/efficientnet_b4.ra2_in1k", "b4", 384, Some(83.468)),
    ("timm/efficientnet_b5.sw_in12k_ft_in1k", "b5", 448, None),
    ("timm/efficientnet_lite0.ra_in1k", "lite0", 224, None),
    ("timm/tf_efficientnet_b0.aa_in1k", "b0", 224, Some(76.882)),
    ("timm/tf_efficientnet_b1.aa_in1k", "b1", 240, None),
    ("timm/tf_efficientnet_b2.aa_in1k", "b2", 260, None),
    ("timm/tf_efficientnet_b3.aa_in1k", "b3", 300, None),
    ("timm/tf_efficientnet_b4.aa_in1k", "b4", 380, None),
    ("timm/tf_efficientnet_b5.aa_in1k", "b5", 456, None),
    ("timm/tf_efficientnet_b6.aa_in1k", "b6", 528, None),
    ("timm/tf_efficientnet_b7.aa_in1k", "b7", 600, Some(84.424)),
    ("timm/tf_efficientnet_b0.ap_in1k", "b0", 224, None),
    ("timm/tf_efficientnet_b1.ap_in1k", "b1", 240, None),
    ("timm/tf_efficientnet_b2.ap_in1k", "b2", 260, None),
    ("timm/tf_efficientnet_b3.ap_in1k", "b3", 300, None),
    ("timm/tf_efficientnet_b4.ap_in1k", "b4", 380, None),
    ("timm/tf_efficientnet_b5.ap_in1k", "b5", 456, None),
    ("timm/tf_efficientnet_b6.ap_in1k", "b6", 528, None),
    ("timm/tf_efficientnet_b7.ap_in1k", "b7", 600, None),
    ("timm/tf_efficientnet_b8.ap_in1k", "b8", 672, Some(85.358)),
    ("timm/tf_efficientnet_b5.ra_in1k", "b5", 456, None),
    ("timm/tf_efficientnet_b7.ra_in1k", "b7", 600, None),
    ("timm/tf_efficientnet_b8.ra_in1k", "b8", 672, None),
    ("timm/tf_efficientnet_b0.ns_jft_in1k", "b0", 224, None),
    ("timm/tf_efficientnet_b1.ns_jft_in1k", "b1", 240, None),
    ("timm/tf_efficientnet_b2.ns_jft_in1k", "b2", 260, None),
    ("timm/tf_efficientnet_b3.ns_jft_in1k", "b3", 300, None),
    ("timm/tf_efficientnet_b4.ns_jft_in1k", "b4", 380, None),
    ("timm/tf_efficientnet_b5.ns_jft_in1k", "b5", 456, None),
    ("timm/tf_efficientnet_b6.ns_jft_in1k", "b6", 528, None),
    (
        "timm/tf_efficientnet_b7.ns_jft_in1k",
        "b7",
        600,
        Some(86.850),
    ),
    ("timm/tf_efficientnet_l2.ns_jft_in1k_475", "l2", 475, None),
    (
        "timm/tf_efficientnet_l2.ns_jft_in1k",
        "l2",
        800,
        Some(88.360),
    ),
    ("timm/tf_efficientnet_lite0.in1k", "lite0", 224, None),
    ("timm/tf_efficientnet_lite1.in1k", "lite1", 240, None),
    ("timm/tf_efficientnet_lite2.in1k", "lite2", 260, None),
    ("timm/tf_efficientnet_lite3.in1k", "lite3", 300, None),
    ("timm/tf_efficientnet_lite4.in1k", "lite4", 380, None),
];

/// The official TF checkpoint archives (`tensorflow/tpu` `models/official/efficientnet/README.md` and
/// `lite/README.md`): (folder under the bucket, archive name, effnet network, top-1 in the README).
const TF_ARCHIVES: &[(&str, &str, &str, f64)] = &[
    ("ckpts", "efficientnet-b0", "b0", 76.8),
    ("ckpts", "efficientnet-b1", "b1", 78.8),
    ("ckpts", "efficientnet-b2", "b2", 79.8),
    ("ckpts", "efficientnet-b3", "b3", 81.0),
    ("ckpts", "efficientnet-b4", "b4", 82.6),
    ("ckpts", "efficientnet-b5", "b5", 83.2),
    ("ckptsaug", "efficientnet-b0", "b0", 77.3),
    ("ckptsaug", "efficientnet-b1", "b1", 79.2),
    ("ckptsaug", "efficientnet-b2", "b2", 80.3),
    ("ckptsaug", "efficientnet-b3", "b3", 81.7),
    ("ckptsaug", "efficientnet-b4", "b4", 83.0),
    ("ckptsaug", "efficientnet-b5", "b5", 83.7),
    ("ckptsaug", "efficientnet-b6", "b6", 84.2),
    ("ckptsaug", "efficientnet-b7", "b7", 84.5),
    ("randaug", "efficientnet-b5-randaug", "b5", 83.9),
    ("randaug", "efficientnet-b7-randaug", "b7", 85.0),
    ("randaug", "efficientnet-b8-randaug", "b8", 85.4),
    ("advprop", "efficientnet-b0", "b0", 77.6),
    ("advprop", "efficientnet-b1", "b1", 79.6),
    ("advprop", "efficientnet-b2", "b2", 80.5),
    ("advprop", "efficientnet-b3", "b3", 81.9),
    ("advprop", "efficientnet-b4", "b4", 83.3),
    ("advprop", "efficientnet-b5", "b5", 84.3),
    ("advprop", "efficientnet-b6", "b6", 84.8),
    ("advprop", "efficientnet-b7", "b7", 85.2),
    ("advprop", "efficientnet-b8", "b8", 85.5),
    ("lite", "efficientnet-lite0", "lite0", 75.1),
    ("lite", "efficientnet-lite1", "lite1", 76.7),
    ("lite", "efficientnet-lite2", "lite2", 77.6),
];

/// Where the official TF checkpoint archives are published.
const TF_BUCKET: &str = "https://storage.googleapis.com/cloud-tpu-checkpoints/efficientnet";

/// Every known name: the hub repositories, torchvision's enums, then the TF archives.
pub fn known_weights() -> Vec<KnownWeights> {
    let hub = TIMM
        .iter()
        .map(|&(repo, model, resolution, top1)| KnownWeights {
            name: format!("hf:{repo}"),
            model: model.into(),
            resolution,
            top1,
            license: "Apache-2.0",
        });
    let torchvision = WEIGHTS.iter().map(|w| KnownWeights {
        name: format!("torchvision:{}.{}", w.model, w.member),
        model: w.model.trim_start_matches("efficientnet_").into(),
        resolution: w.crop,
        top1: Some(w.top1),
        license: "Apache-2.0",
    });
    let tf = TF_ARCHIVES
        .iter()
        .map(|&(folder, archive, model, top1)| KnownWeights {
            name: format!("{TF_BUCKET}/{folder}/{archive}.tar.gz"),
            model: model.into(),
            resolution: effnet_arch::Variant::by_name(model).map_or(0, |v| v.resolution),
            top1: Some(top1),
            license: "Apache-2.0",
        });
    hub.chain(torchvision).chain(tf).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timm::architecture;

    #[test]
    fn every_hub_name_is_an_architecture_effnet_runs() {
        for w in known_weights().iter().filter(|w| w.name.starts_with("hf:")) {
            let arch = w.name["hf:timm/".len()..].split('.').next().unwrap();
            let (variant, _, _) = architecture(arch).unwrap();
            assert_eq!(variant, w.model, "{}", w.name);
        }
    }
}
