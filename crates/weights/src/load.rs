//! Loading any supported weights file into the canonical layout for a resolved network: format by content,
//! layout by keys (or `--layout`), network from effnet metadata, `--model`, or by trying every variant; every
//! tensor checked against the Plan, naming the first mismatch and the variant the file would fit.

use crate::error::{Result, WeightsError};
use crate::layout::{params, Layout, Param};
use crate::metadata::{Provenance, WeightMetadata};
use crate::pth::read_pth;
use crate::safetensors_io::{looks_like_safetensors, read_safetensors};
use crate::tensor::Tensor;
use crate::tf_checkpoint::{checkpoint_prefix, read_tf_checkpoint};
use effnet_arch::preprocess::Preprocessing;
use effnet_arch::variant::VARIANTS;
use effnet_arch::{resolve, NetworkConfig, Padding, Plan};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

/// What the caller knows or wants to override.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The network, if known (a named variant or custom configuration).
    pub model: Option<NetworkConfig>,
    /// The key layout, if auto-detection should be skipped.
    pub layout: Option<Layout>,
    /// Padding the weights were trained with, overriding metadata and layout defaults.
    pub padding: Option<Padding>,
    /// BN epsilon the weights were trained with, overriding metadata and layout defaults.
    pub bn_eps: Option<f64>,
}

/// Weights in the canonical layout, with the network they belong to.
#[derive(Debug, Clone)]
pub struct LoadedWeights {
    /// The network (padding, epsilon and preprocessing included).
    pub config: NetworkConfig,
    /// The resolved plan of `config`.
    pub plan: Plan,
    /// Canonical tensors.
    pub tensors: BTreeMap<String, Tensor>,
    /// The layout the file used.
    pub layout: Layout,
    /// Class labels from the metadata (empty if none).
    pub labels: Vec<String>,
    /// Provenance from the metadata (empty for foreign files).
    pub provenance: Provenance,
}

/// Reads the raw tensors and metadata of a file (or of a TensorFlow checkpoint: its prefix, its `.index`
/// or its folder), choosing the reader by content.
pub fn read_raw(path: &Path) -> Result<(BTreeMap<String, Tensor>, HashMap<String, String>)> {
    if let Some(prefix) = checkpoint_prefix(path) {
        return Ok((read_tf_checkpoint(&prefix)?, HashMap::new()));
    }
    let mut head = [0u8; 16];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| WeightsError::file(path, format!("cannot read: {e}")))?;
    if n == 0 {
        return Err(WeightsError::file(path, "the file is empty"));
    }
    // A damaged safetensors file no longer looks like one; its name still says what it should be.
    let named_safetensors = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    let (tensors, metadata) = if looks_like_safetensors(&head[..n]) || named_safetensors {
        let c = read_safetensors(path)?;
        (c.tensors, c.metadata)
    } else {
        (read_pth(path)?, HashMap::new())
    };
    // Checkpoints saved from DataParallel prefix every key with `module.`.
    let tensors = tensors
        .into_iter()
        .map(|(k, v)| (k.strip_prefix("module.").map(str::to_owned).unwrap_or(k), v))
        .collect();
    Ok((tensors, metadata))
}

/// sha256 of the weights at `path`, in hex: of the file, or of a TensorFlow checkpoint's index (which
/// records every tensor's checksum).
pub fn sha256_of_weights(path: &Path) -> Result<String> {
    match checkpoint_prefix(path) {
        Some(prefix) => sha256_file(&crate::tf_checkpoint::index_file(&prefix)),
        None => sha256_file(path),
    }
}

/// sha256 of a file, in hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| WeightsError::file(path, format!("cannot open: {e}")))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buffer)
            .map_err(|e| WeightsError::file(path, format!("cannot read: {e}")))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Why a file does not fit a plan: the first missing or misshapen tensor.
fn misfit(plan: &Plan, layout: &Layout, tensors: &BTreeMap<String, Tensor>) -> Option<String> {
    params(plan).iter().find_map(|p| {
        let key = layout.key(plan, p);
        match tensors.get(&key) {
            None => Some(format!(
                "lacks tensor `{key}` that {} needs",
                plan.config.name
            )),
            Some(t) => {
                let shape = layout.canonical_shape(p, &t.shape);
                (shape != p.shape).then(|| {
                    format!(
                        "tensor `{key}` has shape {shape:?} but {} needs {:?} ({})",
                        plan.config.name, p.shape, p.name
                    )
                })
            }
        }
    })
}

/// The classifier's output count according to the file, if it has one in this layout.
fn file_classes(layout: &Layout, tensors: &BTreeMap<String, Tensor>, probe: &Plan) -> Option<u32> {
    let p = params(probe)
        .into_iter()
        .find(|p: &Param| p.name == "classifier.weight")?;
    let t = tensors.get(&layout.key(probe, &p))?;
    u32::try_from(*layout.canonical_shape(&p, &t.shape).first()?).ok()
}

/// The named variants (with the file's class count) these tensors fit.
fn fitting_variants(layout: &Layout, tensors: &BTreeMap<String, Tensor>) -> Vec<NetworkConfig> {
    VARIANTS
        .iter()
        .filter_map(|v| {
            let mut config = v.config();
            let probe = resolve(&config).ok()?;
            config.num_classes = file_classes(layout, tensors, &probe)?;
            let plan = resolve(&config).ok()?;
            misfit(&plan, layout, tensors).is_none().then_some(config)
        })
        .collect()
}

/// Refuses a tensor holding NaN or infinity, naming it as the file does: such weights give NaN scores.
fn refuse_non_finite(
    path: &Path,
    layout: &Layout,
    plan: &Plan,
    tensors: &BTreeMap<String, Tensor>,
) -> Result<()> {
    let bad = params(plan).into_iter().find(|p| {
        tensors
            .get(&p.name)
            .is_some_and(|t| t.data.iter().any(|v| !v.is_finite()))
    });
    match bad {
        Some(p) => Err(WeightsError::mismatch(
            path,
            format!(
                "tensor `{}` holds NaN or infinite values",
                layout.key(plan, &p)
            ),
        )),
        None => Ok(()),
    }
}

/// Loads a weights file for inference or fine-tuning.
pub fn load(path: &Path, options: &LoadOptions) -> Result<LoadedWeights> {
    let (tensors, raw_metadata) = read_raw(path)?;
    let metadata = WeightMetadata::from_map(path, &raw_metadata)?;
    let layout = match &options.layout {
        Some(Layout::Tf { prefix }) if prefix.is_empty() => Layout::detect(tensors.keys().map(String::as_str))
            .filter(|l| matches!(l, Layout::Tf { .. }))
            .ok_or_else(|| WeightsError::mismatch(path, "--layout tf given but no key ends in `stem/conv2d/kernel`"))?,
        Some(layout) => layout.clone(),
        None => Layout::detect(tensors.keys().map(String::as_str)).ok_or_else(|| {
            let sample: Vec<&str> = tensors.keys().take(3).map(String::as_str).collect();
            WeightsError::mismatch(
                path,
                format!("unknown key layout (keys such as {sample:?} match none of effnet, timm, torchvision, lukemelas, tf); pass --layout"),
            )
        })?,
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut config = match (&options.model, &metadata) {
        (Some(model), _) => {
            let mut model = model.clone();
            if let Some(classes) = file_classes(&layout, &tensors, &resolve(&model)?) {
                model.num_classes = classes;
            }
            if metadata.is_none() {
                (model.padding, model.bn_eps) = layout.default_conventions(&model.name, &file_name);
            }
            model
        }
        (None, Some(m)) => m.config.clone(),
        (None, None) => {
            let mut config = fitting_variants(&layout, &tensors)
                .into_iter()
                .next()
                .ok_or_else(|| {
                    WeightsError::mismatch(
                        path,
                        format!(
                            "these {} weights fit none of the named models; pass --model",
                            layout.name()
                        ),
                    )
                })?;
            (config.padding, config.bn_eps) = layout.default_conventions(&config.name, &file_name);
            config
        }
    };
    if let Some(m) = &metadata {
        if options.model.is_some() {
            (config.padding, config.bn_eps, config.preprocessing) =
                (m.config.padding, m.config.bn_eps, m.config.preprocessing);
        }
    }
    // AdvProp checkpoints (published under `advprop/`) expect inputs in [-1, 1]; nothing else in them says so.
    let advprop = path
        .to_string_lossy()
        .to_ascii_lowercase()
        .contains("advprop");
    if metadata.is_none() && matches!(layout, Layout::Tf { .. }) && advprop {
        config.preprocessing = Preprocessing::advprop(config.resolution);
    }
    config.padding = options.padding.unwrap_or(config.padding);
    config.bn_eps = options.bn_eps.unwrap_or(config.bn_eps);
    let plan = resolve(&config)?;
    if let Some(reason) = misfit(&plan, &layout, &tensors) {
        let fits: Vec<String> = fitting_variants(&layout, &tensors)
            .into_iter()
            .map(|c| c.name)
            .collect();
        let hint = if fits.is_empty() {
            String::new()
        } else {
            format!("; the file fits {}", fits.join(", "))
        };
        return Err(WeightsError::mismatch(path, format!("{reason}{hint}")));
    }
    let all = params(&plan);
    let used: std::collections::HashSet<String> =
        all.iter().map(|p| layout.key(&plan, p)).collect();
    let unused: Vec<&String> = tensors
        .keys()
        .filter(|k| !used.contains(*k))
        .take(5)
        .collect();
    if !unused.is_empty() {
        return Err(WeightsError::mismatch(
            path,
            format!(
                "has tensors {} does not use, e.g. {unused:?}",
                plan.config.name
            ),
        ));
    }
    let mut tensors = tensors;
    let canonical: BTreeMap<String, Tensor> = all
        .iter()
        .map(|p| {
            let t = tensors
                .remove(&layout.key(&plan, p))
                .expect("checked by misfit");
            (p.name.clone(), layout.to_canonical(p, t))
        })
        .collect();
    refuse_non_finite(path, &layout, &plan, &canonical)?;
    let (labels, provenance) = metadata
        .map(|m| (m.labels, m.provenance))
        .unwrap_or_default();
    Ok(LoadedWeights {
        config,
        plan,
        tensors: canonical,
        layout,
        labels,
        provenance,
    })
}
