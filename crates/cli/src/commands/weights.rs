//! `effnet weights list` (the names `--weights` knows) and `effnet weights cache` (what the local caches
//! hold, and pruning them).

use crate::output::{bytes, decimal, print_json, table};
use anyhow::Result;
use clap::{Args, Subcommand};
use effnet_hub::cache::{entries, prune};
use effnet_hub::hf::HfSettings;
use effnet_hub::known::known_weights;

/// Arguments of `effnet weights`.
#[derive(Debug, Args)]
pub struct WeightsArgs {
    #[command(subcommand)]
    command: WeightsCommand,
}

#[derive(Debug, Subcommand)]
enum WeightsCommand {
    /// The weights known by name, with their resolution, published top-1 and licence.
    List,
    /// What the Hugging Face and torch caches hold.
    Cache {
        /// Remove interrupted downloads and files no snapshot uses.
        #[arg(long)]
        prune: bool,
    },
}

/// Runs `effnet weights`.
pub fn run(args: &WeightsArgs, json: bool) -> Result<()> {
    match args.command {
        WeightsCommand::List => {
            let known = known_weights();
            if json {
                return print_json(&known);
            }
            let mut t = table(&["weights", "model", "resolution", "top-1 %", "licence"]);
            for w in &known {
                t.add_row(vec![
                    w.name.clone(),
                    w.model.clone(),
                    w.resolution.to_string(),
                    w.top1.map_or("–".into(), decimal),
                    w.license.to_string(),
                ]);
            }
            println!("{t}");
            Ok(())
        }
        WeightsCommand::Cache { prune: remove } => {
            let settings = HfSettings::from_env();
            let freed = if remove {
                Some(prune(&settings)?)
            } else {
                None
            };
            let cached = entries(&settings);
            if json {
                return print_json(&serde_json::json!({
                    "hub_cache": settings.cache, "entries": cached, "freed_bytes": freed,
                }));
            }
            let mut t = table(&["name", "size", "snapshots", "partial", "path"]);
            for e in &cached {
                t.add_row(vec![
                    e.name.clone(),
                    bytes(e.bytes),
                    e.snapshots.len().to_string(),
                    bytes(e.partial_bytes),
                    e.path.display().to_string(),
                ]);
            }
            println!("{t}");
            if let Some(freed) = freed {
                println!("pruned {}", bytes(freed));
            }
            Ok(())
        }
    }
}
