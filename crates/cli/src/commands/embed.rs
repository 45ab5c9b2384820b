//! `effnet embed`: pooled features (the input of the classifier) for transfer learning and retrieval.

use crate::inference::InputArgs;
use crate::weights_args::WeightsArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use effnet_weights::atomic::write_atomically;
use npyz::WriterBuilder;
use serde::Serialize;
use std::path::PathBuf;

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

fn npy(rows: &[Embedding], width: usize) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let shape = [rows.len() as u64, width as u64];
    let mut writer = npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .shape(&shape)
        .writer(&mut bytes)
        .begin_nd()?;
    writer.extend(rows.iter().flat_map(|r| r.embedding.iter().copied()))?;
    writer.finish()?;
    Ok(bytes)
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
        write_atomically(&args.out, &npy(&rows, engine.feature_size())?)?;
        let list: String = rows.iter().map(|r| format!("{}\n", r.file)).collect();
        write_atomically(&args.out.with_extension("txt"), list.as_bytes())?;
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
