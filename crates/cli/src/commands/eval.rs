//! `effnet eval`: accuracy of weights on a folder of labelled images (DIR/class/*.jpg): top-1, top-5,
//! cross-entropy, per-class accuracy and the confusion matrix, optionally drawn as a PNG.

use crate::output::{print_json, table};
use crate::plot::plot_confusion;
use crate::weights_args::WeightsArgs;
use anyhow::{bail, Result};
use clap::Args;
use effnet_engine::Engine;
use effnet_train::evaluate::evaluate;
use effnet_train::trainer::labelled_images;
use std::path::PathBuf;

/// Arguments of `effnet eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Labelled images: one sub-folder per class, named as the weights' classes.
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    weights: WeightsArgs,
    /// Evaluation resolution (default: the weights').
    #[arg(long)]
    img_size: Option<u32>,
    /// Draw the confusion matrix to this PNG file.
    #[arg(long)]
    plot: Option<PathBuf>,
}

/// Runs `effnet eval`.
pub fn run(args: &EvalArgs, json: bool) -> Result<()> {
    crate::memory::map_large_allocations();
    let mut weights = args.weights.load()?;
    let (samples, classes) = labelled_images(&args.data)?;
    let outputs = weights.config.num_classes as usize;
    if !weights.labels.is_empty() && weights.labels != classes {
        bail!(
            "{}: the class folders [{}] differ from the classes of {} [{}]",
            args.data.display(),
            classes.join(", "),
            args.weights.weights.display(),
            weights.labels.join(", ")
        );
    }
    if classes.len() != outputs {
        bail!(
            "{}: {} class folders, but {} has {outputs} outputs",
            args.data.display(),
            classes.len(),
            args.weights.weights.display()
        );
    }
    if let Some(size) = args.img_size {
        weights.config.resolution = size;
        weights.plan = effnet_arch::resolve(&weights.config)?;
    }
    let needed = effnet_arch::account(&weights.plan).inference_memory_bytes();
    let what = format!("evaluation at {} px", weights.config.resolution);
    effnet_data::system::ensure_memory(&what, needed).map_err(anyhow::Error::msg)?;
    let engine = Engine::new(&weights.plan, weights.tensors);
    let result = evaluate(
        &engine,
        &samples,
        &classes,
        &weights.config.preprocessing,
        weights.config.resolution,
    );
    for (path, reason) in &result.skipped {
        eprintln!("effnet: warning: skipping {}: {reason}", path.display());
    }
    if let Some(path) = &args.plot {
        plot_confusion(path, &classes, &result.confusion)?;
    }
    if json {
        print_json(&result)?;
    } else {
        println!(
            "{} images, {} classes: top-1 {:.2}%, top-5 {:.2}%, loss {:.4}",
            result.images,
            classes.len(),
            100.0 * result.accuracy,
            100.0 * result.top5,
            result.loss
        );
        let mut header = vec!["true \\ predicted"];
        header.extend(classes.iter().map(String::as_str));
        header.push("accuracy");
        let mut t = table(&header);
        for (c, row) in result.confusion.iter().enumerate() {
            let mut cells = vec![classes[c].clone()];
            cells.extend(row.iter().map(usize::to_string));
            cells.push(format!("{:.1}%", 100.0 * result.per_class[c]));
            t.add_row(cells);
        }
        println!("{t}");
    }
    if !result.skipped.is_empty() {
        bail!("{} images could not be read", result.skipped.len());
    }
    Ok(())
}
