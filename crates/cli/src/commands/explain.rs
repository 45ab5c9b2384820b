//! `effnet explain`: Grad-CAM / Grad-CAM++ maps of images, written as overlays and raw `.npy` maps.

use crate::inference::PreprocessArgs;
use crate::output::{npy_f32, print_json};
use crate::weights_args::WeightsArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use effnet_data::image_files;
use effnet_data::preprocess::decode;
use effnet_data::ranking::class_labels;
use effnet_explain::report::{explain_image, Request};
use effnet_explain::{png_bytes, ClassReport, Classes, Explainer, Layer, Method, Quadrants};
use effnet_weights::atomic::write_atomically;
use serde::Serialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The longest side of an overlay: large photos are drawn scaled down to it.
pub const OVERLAY_SIDE: u32 = 1024;

/// Arguments of `effnet explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    weights: WeightsArgs,
    /// Images, or folders searched recursively for images.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Folder for the overlays (`NAME_CLASS.png`) and maps (`NAME_CLASS.npy`); created if missing.
    #[arg(long)]
    out: PathBuf,
    /// Explain these classes (comma-separated) instead of the most probable.
    #[arg(long, value_delimiter = ',', conflicts_with = "top")]
    class: Vec<usize>,
    /// Explain the N most probable classes.
    #[arg(long, default_value_t = 1)]
    top: usize,
    /// The layer: `head` (the head convolution's output) or `stage:N` (stage N's output; 0 is the stem).
    #[arg(long, default_value = "head")]
    layer: String,
    /// `gradcam` or `gradcam++`.
    #[arg(long, default_value = "gradcam")]
    method: String,
    #[command(flatten)]
    preprocess: PreprocessArgs,
}

/// One image and class, as `--json` lists them.
#[derive(Debug, Serialize)]
pub struct ExplainedClass {
    /// The image.
    pub file: String,
    /// Class index.
    pub class: usize,
    /// Class name.
    pub label: String,
    /// Softmax probability.
    pub prob: f64,
    /// Where the map peaks, `[y, x]` as fractions of the image's height and width.
    pub peak: [f64; 2],
    /// The map's share in each quadrant of the image.
    pub mass: Quadrants,
    /// The overlay written.
    pub overlay: String,
    /// The raw map written (float32 `[height, width]`).
    pub map: String,
}

/// Parses `--layer` and `--method`.
pub fn layer_and_method(layer: &str, method: &str) -> Result<(Layer, Method)> {
    let layer = Layer::from_name(layer)
        .with_context(|| format!("unknown layer `{layer}`: use head or stage:N"))?;
    let method = Method::from_name(method)
        .with_context(|| format!("unknown method `{method}`: use gradcam or gradcam++"))?;
    Ok((layer, method))
}

/// Output names: the file stems, with `-2`, `-3`, ... where two inputs share one.
fn output_stems(files: &[PathBuf]) -> Vec<String> {
    let mut used = HashSet::new();
    files
        .iter()
        .map(|f| {
            let stem = f
                .file_stem()
                .map_or("image".into(), |s| s.to_string_lossy().into_owned());
            let mut name = stem.clone();
            let mut n = 1;
            while !used.insert(name.clone()) {
                n += 1;
                name = format!("{stem}-{n}");
            }
            name
        })
        .collect()
}

/// Writes one class's overlay and map into `out` as `NAME_CLASS.{png,npy}`.
fn write_class(out: &Path, file: &Path, stem: &str, r: &ClassReport) -> Result<ExplainedClass> {
    let overlay = out.join(format!("{stem}_{}.png", r.class));
    let map = out.join(format!("{stem}_{}.npy", r.class));
    write_atomically(&overlay, &png_bytes(&r.overlay)?)?;
    let shape = [r.map.height as u64, r.map.width as u64];
    write_atomically(&map, &npy_f32(&shape, r.map.values.iter().copied())?)?;
    Ok(ExplainedClass {
        file: file.display().to_string(),
        class: r.class,
        label: r.label.clone(),
        prob: r.prob,
        peak: r.peak,
        mass: r.mass,
        overlay: overlay.display().to_string(),
        map: map.display().to_string(),
    })
}

/// Runs `effnet explain`.
pub fn run(args: &ExplainArgs, json: bool) -> Result<()> {
    let (layer, method) = layer_and_method(&args.layer, &args.method)?;
    anyhow::ensure!(args.top >= 1, "--top must be at least 1");
    let files = image_files(&args.inputs)?;
    let weights = args.weights.load()?;
    let (preprocessing, resolution) = args.preprocess.preprocessing(&weights.config)?;
    let labels = class_labels(&weights.labels, weights.config.num_classes as usize);
    let explainer = Explainer::new(&weights.plan, &weights.tensors)?;
    drop(weights);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("{}: cannot create the folder", args.out.display()))?;
    let request = Request {
        preprocessing,
        resolution,
        layer,
        method,
        classes: if args.class.is_empty() {
            Classes::Top(args.top)
        } else {
            Classes::Given(args.class.clone())
        },
        overlay_side: OVERLAY_SIDE,
    };
    let (mut listed, mut failed) = (Vec::new(), 0);
    for (file, stem) in files.iter().zip(output_stems(&files)) {
        let explained = decode(file)
            .map_err(anyhow::Error::from)
            .and_then(|image| {
                explain_image(&explainer, &image, &labels, &request)
                    .with_context(|| file.display().to_string())
            })
            .and_then(|reports| {
                reports
                    .classes
                    .iter()
                    .map(|r| write_class(&args.out, file, &stem, r))
                    .collect::<Result<Vec<_>>>()
            });
        match explained {
            Ok(classes) => {
                if !json {
                    for c in &classes {
                        println!(
                            "{}  {:4} {:6.2}%  {}  -> {}",
                            c.file,
                            c.class,
                            c.prob * 100.0,
                            c.label,
                            c.overlay
                        );
                    }
                }
                listed.extend(classes);
            }
            Err(e) => {
                failed += 1;
                eprintln!("effnet: warning: skipped {e:#}");
            }
        }
    }
    if json {
        print_json(&listed)?;
    }
    if failed > 0 {
        bail!(
            "{failed} of {} images could not be explained (see the warnings above)",
            files.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_stems_get_numbers() {
        let files = ["a/x.png", "b/x.jpg", "y.png", "c/x.png"].map(PathBuf::from);
        assert_eq!(output_stems(&files), ["x", "x-2", "y", "x-3"]);
    }

    #[test]
    fn layers_and_methods_parse_with_clear_errors() {
        assert!(layer_and_method("stage:2", "gradcam++").is_ok());
        let err = layer_and_method("neck", "gradcam").unwrap_err();
        assert!(err.to_string().contains("unknown layer `neck`"), "{err}");
        let err = layer_and_method("head", "cam").unwrap_err();
        assert!(err.to_string().contains("unknown method `cam`"), "{err}");
    }
}
