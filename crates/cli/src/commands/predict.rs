//! `effnet predict`: top-k ImageNet (or custom) classes for images and folders.

use crate::inference::InputArgs;
use crate::output::print_json;
use crate::weights_args::WeightsArgs;
use anyhow::{bail, Result};
use clap::Args;
use effnet_data::ranking::{class_labels, top_k, Ranked};
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
                let top = top_k(&logits, &labels, k);
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
