//! `effnet predict`: top-k ImageNet (or custom) classes for images and folders.

use crate::inference::InputArgs;
use crate::output::print_json;
use crate::weights_args::WeightsArgs;
use anyhow::{bail, Result};
use clap::Args;
use effnet_data::imagenet_labels;
use serde::Serialize;

/// Arguments of `effnet predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    #[command(flatten)]
    weights: WeightsArgs,
    #[command(flatten)]
    input: InputArgs,
    /// How many classes to report per image.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Include the raw logits in the JSON output.
    #[arg(long)]
    logits: bool,
}

/// One ranked class.
#[derive(Debug, Serialize)]
struct Ranked {
    class: usize,
    label: String,
    prob: f64,
}

/// The prediction for one file (or why it failed).
#[derive(Debug, Serialize)]
struct Prediction {
    file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    top: Option<Vec<Ranked>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logits: Option<Vec<f32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Softmax in f64.
fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = logits.iter().map(|&l| f64::from(l - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// Class names: the weights' own, ImageNet's for 1000 classes, or `class N`.
pub fn class_labels(own: &[String], classes: usize) -> Vec<String> {
    if own.len() == classes {
        own.to_vec()
    } else if classes == 1000 {
        imagenet_labels().into_iter().map(String::from).collect()
    } else {
        (0..classes).map(|i| format!("class {i}")).collect()
    }
}

/// Runs `effnet predict`.
pub fn run(args: &PredictArgs, json: bool) -> Result<()> {
    crate::memory::map_large_allocations();
    let weights = args.weights.load()?;
    let labels = class_labels(&weights.labels, weights.config.num_classes as usize);
    let engine = effnet_engine::Engine::from_weights(weights);
    anyhow::ensure!(args.top_k >= 1, "--top-k must be at least 1");
    let k = args.top_k.min(labels.len());
    let (mut results, mut failed) = (Vec::new(), 0);
    args.input.run(&engine, |outcome| {
        let file = outcome.file.display().to_string();
        let prediction = match outcome.features {
            Ok(features) => {
                let logits = engine.classify(&features);
                let probs = softmax(&logits);
                let mut order: Vec<usize> = (0..probs.len()).collect();
                order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
                let top = order[..k]
                    .iter()
                    .map(|&c| Ranked {
                        class: c,
                        label: labels[c].clone(),
                        prob: probs[c],
                    })
                    .collect();
                Prediction {
                    file,
                    top: Some(top),
                    logits: args.logits.then_some(logits),
                    error: None,
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("effnet: warning: skipped {e:#}");
                Prediction {
                    file,
                    top: None,
                    logits: None,
                    error: Some(format!("{e:#}")),
                }
            }
        };
        if !json {
            print_prediction(&prediction);
        }
        results.push(prediction);
        Ok(())
    })?;
    if json {
        print_json(&results)?;
    }
    if failed > 0 {
        bail!(
            "{failed} of {} images could not be classified (see the warnings above)",
            results.len()
        );
    }
    Ok(())
}

fn print_prediction(p: &Prediction) {
    let Some(top) = &p.top else { return };
    println!("{}", p.file);
    for r in top {
        println!("  {:6.2}%  {:4}  {}", r.prob * 100.0, r.class, r.label);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_is_a_distribution_and_keeps_order() {
        let p = softmax(&[1.0, 3.0, 2.0, 10.0]);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(p[3] > 0.99 && p[1] > p[2] && p[2] > p[0]);
        let huge = softmax(&[0.0, 1000.0]);
        assert!(
            huge[1] == 1.0 && huge[0] == 0.0 && huge.iter().all(|v| v.is_finite()),
            "no overflow"
        );
    }

    #[test]
    fn labels_fall_back_to_imagenet_then_to_numbers() {
        assert_eq!(class_labels(&[], 1000)[967], "espresso");
        assert_eq!(class_labels(&["a".into(), "b".into()], 2), ["a", "b"]);
        assert_eq!(class_labels(&[], 3)[2], "class 2");
    }
}
