//! Probabilities from logits and the classes ranked by them, as `predict` reports them.

use serde::Serialize;

/// One ranked class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranked {
    /// Class index.
    pub class: usize,
    /// Class name.
    pub label: String,
    /// Softmax probability.
    pub prob: f64,
}

/// Softmax in f64 (shifted by the maximum, so large logits do not overflow).
pub fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = logits.iter().map(|&l| f64::from(l - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The `k` most probable classes (at most as many as there are), most probable first.
pub fn top_k(logits: &[f32], labels: &[String], k: usize) -> Vec<Ranked> {
    let probs = softmax(logits);
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    order
        .into_iter()
        .take(k)
        .map(|c| Ranked {
            class: c,
            label: labels
                .get(c)
                .cloned()
                .unwrap_or_else(|| format!("class {c}")),
            prob: probs[c],
        })
        .collect()
}

/// Class names: the weights' own, ImageNet's for 1000 classes, or `class N`.
pub fn class_labels(own: &[String], classes: usize) -> Vec<String> {
    if own.len() == classes {
        own.to_vec()
    } else if classes == 1000 {
        crate::imagenet_labels()
            .into_iter()
            .map(String::from)
            .collect()
    } else {
        (0..classes).map(|i| format!("class {i}")).collect()
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
    fn top_k_ranks_and_stops_at_the_class_count() {
        let labels: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let top = top_k(&[0.0, 2.0, 1.0], &labels, 5);
        let classes: Vec<usize> = top.iter().map(|r| r.class).collect();
        assert_eq!(classes, [1, 2, 0]);
        assert_eq!(top[0].label, "b");
    }

    #[test]
    fn labels_fall_back_to_imagenet_then_to_numbers() {
        assert_eq!(class_labels(&[], 1000)[967], "espresso");
        assert_eq!(class_labels(&["a".into(), "b".into()], 2), ["a", "b"]);
        assert_eq!(class_labels(&[], 3)[2], "class 2");
    }
}
