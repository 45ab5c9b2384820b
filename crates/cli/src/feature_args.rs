//! The options that choose multi-scale feature levels (`export --features`, `features`, `info --features`).

use anyhow::{Context, Result};
use clap::Args;
use effnet_arch::features::{select_levels, FeatureLevel, FeatureLocation};

/// Which feature levels, and where in each level's last block.
#[derive(Debug, Clone, Args)]
pub struct FeatureArgs {
    /// Feature levels (timm's `out_indices`, default all): 0..4 are the maps at stride 2, 4, 8, 16 and 32.
    #[arg(long = "out-indices", value_delimiter = ',')]
    pub indices: Vec<usize>,
    /// Where in each level's last block: bottleneck (its output) or expansion (its projection's input).
    #[arg(long, default_value = "bottleneck")]
    pub location: String,
}

impl FeatureArgs {
    /// The levels asked for among `all` (every one when none is named).
    pub fn select(&self, all: &[FeatureLevel]) -> Result<Vec<FeatureLevel>> {
        select_levels(all, &self.indices).map_err(anyhow::Error::msg)
    }

    /// The parsed `--location`.
    pub fn location(&self) -> Result<FeatureLocation> {
        FeatureLocation::from_name(&self.location).with_context(|| {
            format!(
                "unknown --location `{}`: use bottleneck or expansion",
                self.location
            )
        })
    }
}
