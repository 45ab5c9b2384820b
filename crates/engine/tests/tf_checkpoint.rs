//! A checkpoint TensorFlow wrote (`tools/tf_checkpoint_fixture.py`: variables named as the official
//! `efficientnet_model.py` names them, with moving averages, RMSProp slots and a step counter beside them)
//! read by effnet's own tensor-bundle reader: the logits equal TensorFlow's own, computed from the moving
//! averages, within 1e-4; a damaged data file or index is refused, naming the file.

mod common;

use common::{hash_input, root};
use effnet_arch::variant::network_by_name_or_blocks;
use effnet_engine::Engine;
use effnet_weights::{load, Layout, LoadOptions};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixture() -> (PathBuf, Value) {
    let dir = root().join("fixtures/tf_checkpoint");
    let expected = std::fs::read_to_string(dir.join("expected.json")).unwrap();
    (dir, serde_json::from_str(&expected).unwrap())
}

fn options(expected: &Value) -> LoadOptions {
    let model = network_by_name_or_blocks(expected["blocks"].as_str().unwrap()).unwrap();
    LoadOptions {
        model: Some(model),
        ..LoadOptions::default()
    }
}

#[test]
fn tensorflows_checkpoint_gives_tensorflows_logits() {
    let (dir, expected) = fixture();
    // The folder (through its `checkpoint` state file), the prefix and the index name the same checkpoint.
    for path in [
        dir.clone(),
        dir.join("model.ckpt"),
        dir.join("model.ckpt.index"),
    ] {
        let weights = load(&path, &options(&expected)).unwrap();
        assert!(
            matches!(weights.layout, Layout::Tf { .. }),
            "TF variable names"
        );
        assert_eq!(weights.config.num_classes, 10);
        assert_eq!(weights.config.bn_eps, 1e-3);
        let engine = Engine::from_weights(weights);
        let res = expected["input"]["resolution"].as_u64().unwrap() as usize;
        let got = engine.logits(&hash_input(res)).unwrap();
        let want: Vec<f32> = serde_json::from_value(expected["logits"].clone()).unwrap();
        let diff = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            diff <= 1e-4,
            "{}: max |logit diff| from TensorFlow {diff:e}",
            path.display()
        );
    }
}

/// Something done to a checkpoint's files.
type Damage = Box<dyn Fn(&Path)>;

/// A copy of the fixture checkpoint in a scratch folder, with `damage` applied to its files.
fn damaged(name: &str, damage: impl Fn(&Path)) -> PathBuf {
    let (dir, _) = fixture();
    let copy = std::env::temp_dir().join(format!("effnet-tf-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&copy);
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
    }
    damage(&copy);
    copy
}

#[test]
fn damaged_checkpoints_are_refused_with_the_file_named() {
    let (_, expected) = fixture();
    // One flipped bit every `every` bytes (so that tensors effnet reads are hit, not only optimizer slots).
    let flip = |file: &Path, every: usize| {
        let mut bytes = std::fs::read(file).unwrap();
        for at in (every / 2..bytes.len()).step_by(every) {
            bytes[at] ^= 0x40;
        }
        std::fs::write(file, bytes).unwrap();
    };
    let cases: [(&str, Damage, &str); 4] = [
        (
            "data",
            Box::new(move |d: &Path| flip(&d.join("model.ckpt.data-00000-of-00001"), 4096)),
            "checksum",
        ),
        (
            "index",
            Box::new(move |d: &Path| flip(&d.join("model.ckpt.index"), 1024)),
            "model.ckpt.index",
        ),
        (
            "cut",
            Box::new(|d: &Path| {
                let file = d.join("model.ckpt.data-00000-of-00001");
                let bytes = std::fs::read(&file).unwrap();
                std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
            }),
            "beyond the end",
        ),
        (
            "magic",
            Box::new(|d: &Path| {
                let file = d.join("model.ckpt.index");
                let bytes = std::fs::read(&file).unwrap();
                std::fs::write(&file, &bytes[..bytes.len() - 3]).unwrap();
            }),
            "magic",
        ),
    ];
    for (name, damage, says) in cases {
        let copy = damaged(name, damage);
        let err = match load(&copy, &options(&expected)) {
            Ok(_) => panic!("{name}: the damaged checkpoint loaded"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(says) && err.contains(&copy.display().to_string()),
            "{name}: {err}"
        );
        std::fs::remove_dir_all(&copy).unwrap();
    }
}
