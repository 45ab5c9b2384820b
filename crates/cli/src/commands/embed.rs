//! `effnet embed`: pooled features (the input of the classifier) for transfer learning and retrieval.

use crate::inference::InputArgs;
use crate::output::{check_output_file, folder_of, npy_f32};
use crate::weights_args::WeightsArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use effnet_weights::atomic::write_atomically;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Arguments of `effnet embed`.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    weights: WeightsArgs,
    #[command(flatten)]
    input: InputArgs,
    /// Output: `.npy` (float32 [images, features], with the file list beside it as `.txt`) or `.json`.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Serialize)]
struct Embedding {
    file: String,
    embedding: Vec<f32>,
}

/// Checks, before any work, that the outputs can be written: the folder exists, and a file list beside
/// the array is not some other file that would be overwritten (it may only replace a previous embed's list,
/// which has its array beside it).
fn check_outputs(out: &Path, list: Option<&PathBuf>) -> Result<()> {
    check_output_file(out)?;
    if let Some(list) = list.filter(|l| l.exists() && !out.exists()) {
        bail!(
            "{}: exists and is not the file list of an earlier {}; remove it or choose another --out",
            list.display(),
            out.display()
        );
    }
    Ok(())
}

/// An advisory lock on the folder of `out`, held until dropped (none where folders cannot be locked).
fn hold_folder(out: &Path) -> Option<std::fs::File> {
    let handle = std::fs::File::open(folder_of(out)).ok()?;
    handle.lock().ok()?;
    Some(handle)
}

/// Runs `effnet embed`.
pub fn run(args: &EmbedArgs, json_summary: bool) -> Result<()> {
    crate::memory::map_large_allocations();
    let extension = args.out.extension().and_then(|e| e.to_str()).unwrap_or("");
    if !matches!(extension, "npy" | "json") {
        bail!(
            "{}: the output must end in .npy or .json",
            args.out.display()
        );
    }
    let list_path = args.out.with_extension("txt");
    check_outputs(&args.out, (extension == "npy").then_some(&list_path))?;
    let weights = args.weights.load()?;
    let engine = effnet_engine::Engine::from_weights(weights);
    let (mut rows, mut failed) = (Vec::new(), 0usize);
    args.input.run(&engine, |outcome| {
        match outcome.features {
            Ok(embedding) => rows.push(Embedding {
                file: outcome.file.display().to_string(),
                embedding,
            }),
            Err(e) => {
                failed += 1;
                eprintln!("effnet: warning: skipped {e:#}");
            }
        }
        Ok(())
    })?;
    if extension == "npy" {
        let list: String = rows.iter().map(|r| format!("{}\n", r.file)).collect();
        let shape = [rows.len() as u64, engine.feature_size() as u64];
        let array = npy_f32(
            &shape,
            rows.iter().flat_map(|r| r.embedding.iter().copied()),
        )?;
        // Both files are complete before either is renamed into place, and the folder is held while
        // they are, so a concurrent run cannot pair its array with this run's list.
        let _held = hold_folder(&args.out);
        write_atomically(&list_path, list.as_bytes())?;
        write_atomically(&args.out, &array)?;
    } else {
        let text = serde_json::to_vec(&rows).context("encoding embeddings")?;
        write_atomically(&args.out, &text)?;
    }
    let summary = serde_json::json!({"out": args.out, "images": rows.len(), "features": engine.feature_size(), "failed": failed});
    if json_summary {
        println!("{summary}");
    } else {
        println!(
            "wrote {} embeddings of {} features to {}",
            rows.len(),
            engine.feature_size(),
            args.out.display()
        );
    }
    if failed > 0 {
        bail!("{failed} images could not be embedded (see the warnings above)");
    }
    Ok(())
}
