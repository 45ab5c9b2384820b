//! `effnet patches`: a labelled dataset from a few large images (one class per image), cut into square
//! patches; the top rows give `OUT/train/`, the bottom rows `OUT/val/`, so the two never share pixels.

use anyhow::Result;
use clap::Args;
use effnet_data::patches::{cut_dataset, PatchGrid};
use std::path::PathBuf;

/// Arguments of `effnet patches`.
#[derive(Debug, Args)]
pub struct PatchesArgs {
    /// Images, one per class (the class is the file name without extension).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Output folder (gets train/ and val/).
    #[arg(long)]
    out: PathBuf,
    /// Patch side in pixels.
    #[arg(long, default_value_t = 64)]
    size: u32,
    /// Distance between patches in pixels.
    #[arg(long, default_value_t = 32)]
    stride: u32,
    /// Share of each image's rows, from the top, used for training.
    #[arg(long, default_value_t = 0.5)]
    train_rows: f64,
}

/// Runs `effnet patches`.
pub fn run(args: &PatchesArgs) -> Result<()> {
    let grid = PatchGrid {
        size: args.size,
        stride: args.stride,
        train_rows: args.train_rows,
    };
    let (train, val) = cut_dataset(&args.images, &grid, &args.out)?;
    println!(
        "training patches in {}, validation patches in {}",
        train.display(),
        val.display()
    );
    Ok(())
}
