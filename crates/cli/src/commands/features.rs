//! `effnet features`: multi-scale feature maps of images (pytorch-image-models' `features_only` levels),
//! for detection and segmentation heads.

use crate::feature_args::FeatureArgs;
use crate::inference::InputArgs;
use crate::output::check_output_file;
use crate::weights_args::WeightsArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use effnet_arch::features::FeatureLevel;
use effnet_data::image_files;
use effnet_engine::FeatureMap;
use effnet_weights::atomic::write_atomically;
use effnet_weights::safetensors_io::write_safetensors;
use effnet_weights::Tensor;
use npyz::WriterBuilder;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Arguments of `effnet features`.
#[derive(Debug, Args)]
pub struct FeaturesArgs {
    #[command(flatten)]
    weights: WeightsArgs,
    #[command(flatten)]
    input: InputArgs,
    #[command(flatten)]
    levels: FeatureArgs,
    /// Output: a `.safetensors` file (one NHWC tensor per image and level, `image{i}.feature_{level}`), or
    /// an existing folder (one `feature_{level}.npy` of shape [images, height, width, channels] per level,
    /// with `files.txt` and `feature_info.json`).
    #[arg(long)]
    out: PathBuf,
}

/// The feature maps of one image, one per level asked for.
type Maps = Vec<FeatureMap>;

/// One level of every image as a `[images, height, width, channels]` float32 `.npy`.
fn npy(images: &[(String, Maps)], level: usize) -> Result<Vec<u8>> {
    let first = &images[0].1[level];
    let shape = [
        images.len() as u64,
        first.height as u64,
        first.width as u64,
        first.channels as u64,
    ];
    let mut bytes = Vec::new();
    let mut writer = npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .shape(&shape)
        .writer(&mut bytes)
        .begin_nd()?;
    writer.extend(
        images
            .iter()
            .flat_map(|(_, maps)| maps[level].data.iter().copied()),
    )?;
    writer.finish()?;
    Ok(bytes)
}

/// Runs `effnet features`.
pub fn run(args: &FeaturesArgs, json: bool) -> Result<()> {
    crate::memory::map_large_allocations();
    let to_folder = args.out.is_dir();
    if !to_folder {
        if args.out.extension().and_then(|e| e.to_str()) != Some("safetensors") {
            bail!(
                "{}: --out must be a .safetensors file or an existing folder",
                args.out.display()
            );
        }
        check_output_file(&args.out)?;
    }
    let location = args.levels.location()?;
    let weights = args.weights.load()?;
    let engine = effnet_engine::Engine::from_weights(weights);
    let all = engine.feature_levels(location);
    let levels = args.levels.select(all)?;
    // Every image's maps are held until the end: check they fit before decoding any.
    let (_, resolution) = args.input.preprocess.preprocessing(engine.config())?;
    let mut network = engine.config().clone();
    network.resolution = resolution;
    let at_resolution = effnet_arch::resolve(&network)?.feature_levels(location);
    let per_image: u64 = levels
        .iter()
        .map(|l| {
            let side = u64::from(at_resolution[l.index].size);
            side * side * u64::from(l.num_chs) * 4
        })
        .sum();
    let files = image_files(&args.input.inputs)?.len() as u64;
    let what = format!("the feature maps of {files} images at {resolution} px");
    effnet_data::system::ensure_memory(&what, files * per_image).map_err(anyhow::Error::msg)?;

    let indices: Vec<usize> = levels.iter().map(|l| l.index).collect();
    let (mut images, mut failed) = (Vec::<(String, Maps)>::new(), 0usize);
    args.input.run_with(
        &engine,
        |batch| {
            batch
                .iter()
                .map(|image| engine.features(image, &indices, location))
                .collect()
        },
        |outcome| {
            match outcome.features {
                Ok(maps) => images.push((outcome.file.display().to_string(), maps)),
                Err(e) => {
                    failed += 1;
                    eprintln!("effnet: warning: skipped {e:#}");
                }
            }
            Ok(())
        },
    )?;
    if images.is_empty() {
        bail!("no image could be read, nothing written");
    }
    let files: Vec<&str> = images.iter().map(|(f, _)| f.as_str()).collect();
    let info = serde_json::to_string(&levels).context("encoding feature_info")?;
    if to_folder {
        write_folder(&args.out, &images, &levels, &files, &info)?;
    } else {
        let mut tensors = BTreeMap::new();
        for (i, (_, maps)) in images.iter().enumerate() {
            for (level, map) in levels.iter().zip(maps) {
                let shape = vec![map.height, map.width, map.channels];
                tensors.insert(
                    format!("image{i}.feature_{}", level.index),
                    Tensor::new(shape, map.data.to_vec()),
                );
            }
        }
        let metadata: HashMap<String, String> = [
            ("files", serde_json::to_string(&files)?),
            ("feature_info", info),
            ("model", engine.config().name.clone()),
            ("resolution", resolution.to_string()),
            ("layout", "nhwc".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        write_safetensors(&args.out, &tensors, metadata)?;
    }
    let shapes: Vec<[usize; 3]> = images[0]
        .1
        .iter()
        .map(|m| [m.height, m.width, m.channels])
        .collect();
    let summary = serde_json::json!({
        "out": args.out, "images": images.len(), "failed": failed, "levels": levels, "shapes": shapes,
    });
    if json {
        println!("{summary}");
    } else {
        let described: Vec<String> = levels
            .iter()
            .zip(&shapes)
            .map(|(l, s)| format!("stride {}: {}x{}x{}", l.reduction, s[0], s[1], s[2]))
            .collect();
        println!(
            "wrote {} levels of {} images to {} ({})",
            levels.len(),
            images.len(),
            args.out.display(),
            described.join(", ")
        );
    }
    if failed > 0 {
        bail!("{failed} images could not be read (see the warnings above)");
    }
    Ok(())
}

/// One `.npy` per level, the file list and `feature_info.json`, each written atomically.
fn write_folder(
    out: &Path,
    images: &[(String, Maps)],
    levels: &[FeatureLevel],
    files: &[&str],
    info: &str,
) -> Result<()> {
    for (i, level) in levels.iter().enumerate() {
        let path: PathBuf = out.join(format!("feature_{}.npy", level.index));
        write_atomically(&path, &npy(images, i)?)?;
    }
    let list: String = files.iter().map(|f| format!("{f}\n")).collect();
    write_atomically(&out.join("files.txt"), list.as_bytes())?;
    write_atomically(&out.join("feature_info.json"), info.as_bytes())?;
    Ok(())
}
