//! Weights written in each foreign layout (with TF's tensor orders for `tf`), saved as safetensors, come back
//! bit for bit in the canonical layout, with the layout detected from the keys alone.

use effnet_arch::plan::LayerOp;
use effnet_arch::{resolve, Variant};
use effnet_weights::layout::{params, Field, Layout};
use effnet_weights::random::random_weights;
use effnet_weights::safetensors_io::write_safetensors;
use effnet_weights::{load, LoadOptions, Tensor};
use std::collections::{BTreeMap, HashMap};

/// The inverse of `Layout::to_canonical` for TF: kernels back to HWIO, depthwise to [k,k,C,1], dense to [in,out].
fn to_tf(p: &effnet_weights::layout::Param, t: &Tensor) -> Tensor {
    match (p.field, p.layer.op) {
        (Field::Weight, LayerOp::Conv(c)) if c.is_depthwise() => t.permute(&[2, 3, 0, 1]),
        (Field::Weight, LayerOp::Conv(_)) => t.permute(&[2, 3, 1, 0]),
        (Field::Weight, LayerOp::Linear(_)) => t.permute(&[1, 0]),
        _ => t.clone(),
    }
}

#[test]
fn every_layout_round_trips_through_safetensors() {
    for model in ["b0", "lite0"] {
        let plan = resolve(&Variant::by_name(model).unwrap().config()).unwrap();
        let canonical = random_weights(&plan, 3);
        for layout in [
            Layout::Timm,
            Layout::Torchvision,
            Layout::Lukemelas,
            Layout::Tf {
                prefix: format!("efficientnet-{model}/"),
            },
        ] {
            let foreign: BTreeMap<String, Tensor> = params(&plan)
                .iter()
                .map(|p| {
                    let t = &canonical[&p.name];
                    let t = if matches!(layout, Layout::Tf { .. }) {
                        to_tf(p, t)
                    } else {
                        t.clone()
                    };
                    (layout.key(&plan, p), t)
                })
                .collect();
            let path = std::env::temp_dir().join(format!(
                "effnet-{model}-{}-{}.safetensors",
                layout.name(),
                std::process::id()
            ));
            write_safetensors(&path, &foreign, HashMap::new()).unwrap();
            let loaded = load(&path, &LoadOptions::default()).unwrap();
            assert_eq!(loaded.layout, layout, "{model}: detected layout");
            assert_eq!(
                loaded.config.name,
                model,
                "{model} {}: detected model",
                layout.name()
            );
            assert_eq!(
                loaded.tensors,
                canonical,
                "{model} {}: tensors",
                layout.name()
            );
            std::fs::remove_file(&path).unwrap();
        }
    }
}
