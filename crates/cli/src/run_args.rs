//! Command-line options shared by the commands that train: the labelled images, and the run folder that a
//! new run creates or an interrupted one continues from.

use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

/// Where the images are and where the run lives.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Training images: one sub-folder per class (DIR/class/*.jpg).
    #[arg(long, conflicts_with = "resume")]
    pub data: Option<PathBuf>,
    /// Validation images with the same classes (default: hold out --val-fraction of --data).
    #[arg(long)]
    pub val: Option<PathBuf>,
    /// Share of each class held out for validation when there is no --val folder.
    #[arg(long, default_value_t = 0.2)]
    pub val_fraction: f64,
    /// Output folder of a new run.
    #[arg(long, conflicts_with = "resume")]
    pub out: Option<PathBuf>,
    /// Continue the run in this folder where it stopped (its settings are read from it).
    #[arg(long)]
    pub resume: Option<PathBuf>,
}

impl RunArgs {
    /// The run folder and whether it is being resumed.
    pub fn folder(&self) -> Result<(PathBuf, bool)> {
        match (&self.resume, &self.out) {
            (Some(dir), _) => Ok((dir.clone(), true)),
            (None, Some(out)) => Ok((out.clone(), false)),
            (None, None) => bail!("give --out RUN for a new run, or --resume RUN to continue one"),
        }
    }

    /// The training images of a new run.
    pub fn data(&self) -> Result<PathBuf> {
        match &self.data {
            Some(d) => Ok(d.clone()),
            None => bail!("--data is required for a new run"),
        }
    }
}
