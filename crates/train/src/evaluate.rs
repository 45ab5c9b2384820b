//! Evaluation on a labelled image set through the fast inference engine: the weights' own evaluation
//! preprocessing, then accuracy, top-5, cross-entropy, per-class accuracy and the confusion matrix.

use effnet_arch::preprocess::Preprocessing;
use effnet_data::{load_image, Sample};
use effnet_engine::{Engine, FeatureMap};
use rayon::prelude::*;
use serde::Serialize;
use std::path::PathBuf;

/// Images decoded and classified together.
const CHUNK: usize = 64;

/// The result of an evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    /// Class names.
    pub classes: Vec<String>,
    /// Images evaluated (unreadable ones excluded).
    pub images: usize,
    /// Top-1 accuracy.
    pub accuracy: f64,
    /// Top-5 accuracy (top-k with k = classes when there are fewer than 5).
    pub top5: f64,
    /// Mean cross-entropy.
    pub loss: f64,
    /// Accuracy of each class (`NaN`-free: 0 for a class without images).
    pub per_class: Vec<f64>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
    /// Images that could not be read, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

fn log_softmax_at(logits: &[f32], index: usize) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let sum: f64 = logits.iter().map(|&v| f64::from(v - max).exp()).sum();
    f64::from(logits[index] - max) - sum.ln()
}

/// Classifies every sample with `engine` (its classes must match `classes`) and scores the result.
pub fn evaluate(
    engine: &Engine,
    samples: &[Sample],
    classes: &[String],
    preprocessing: &Preprocessing,
    resolution: u32,
) -> Evaluation {
    let n_classes = classes.len();
    let k = n_classes.min(5);
    let mut confusion = vec![vec![0usize; n_classes]; n_classes];
    let (mut top5_hits, mut loss, mut images) = (0usize, 0f64, 0usize);
    let mut skipped = Vec::new();
    for chunk in samples.chunks(CHUNK) {
        let decoded: Vec<_> = chunk
            .par_iter()
            .map(|s| load_image(&s.path, preprocessing, resolution))
            .collect();
        let mut maps = Vec::new();
        let mut labels = Vec::new();
        for (sample, result) in chunk.iter().zip(decoded) {
            match result {
                Ok(img) => {
                    maps.push(FeatureMap::new(&img.data, img.height, img.width, 3));
                    labels.push(sample.label);
                }
                Err(e) => skipped.push((sample.path.clone(), e.to_string())),
            }
        }
        for (logits, &label) in engine.logits_batch(&maps).into_iter().zip(&labels) {
            let logits = logits.expect("the image has the engine's channel count");
            let mut order: Vec<usize> = (0..logits.len()).collect();
            order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
            confusion[label][order[0]] += 1;
            top5_hits += usize::from(order[..k].contains(&label));
            loss -= log_softmax_at(&logits, label);
            images += 1;
        }
    }
    let correct: usize = (0..n_classes).map(|c| confusion[c][c]).sum();
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Evaluation {
        classes: classes.to_vec(),
        images,
        accuracy: ratio(correct, images),
        top5: ratio(top5_hits, images),
        loss: if images == 0 {
            0.0
        } else {
            loss / images as f64
        },
        per_class: (0..n_classes)
            .map(|c| ratio(confusion[c][c], confusion[c].iter().sum()))
            .collect(),
        confusion,
        skipped,
    }
}
