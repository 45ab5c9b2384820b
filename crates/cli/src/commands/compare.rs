//! `effnet compare`: named networks side by side, real MACs against the `d * w^2 * r^2` formula, and the
//! accuracy-vs-MACs plot.

use crate::output::{bytes, giga, print_json, table, thousands};
use crate::plot::{plot_accuracy_vs_macs, PlotPoint};
use crate::summary::NetworkSummary;
use anyhow::Result;
use clap::Args;
use effnet_arch::variant::{Family, VARIANTS};
use effnet_arch::Variant;
use serde::Serialize;
use std::path::PathBuf;

/// Arguments of `effnet compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Models to compare (default b0..b7).
    models: Vec<String>,
    /// Draw accuracy against MACs into this PNG.
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct CompareRow {
    name: String,
    width: f64,
    depth: f64,
    resolution: u32,
    params: u64,
    macs: u64,
    inference_memory_bytes: u64,
    training_activation_bytes: u64,
    published_top1: Option<f64>,
    /// Family base MACs times `d * w^2 * (r / r0)^2`.
    formula_macs: u64,
    /// Real MACs over the formula's.
    real_over_formula: f64,
}

/// Runs `effnet compare`.
pub fn run(args: &CompareArgs, json: bool) -> Result<()> {
    let names: Vec<String> = if args.models.is_empty() {
        ["b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7"]
            .map(String::from)
            .to_vec()
    } else {
        args.models.clone()
    };
    let mut rows = Vec::new();
    for name in &names {
        let v = Variant::by_name(name)?;
        let base = VARIANTS
            .iter()
            .find(|b| b.family == v.family)
            .expect("every family has a base variant");
        let base_macs = NetworkSummary::of(&base.config(), false)?.macs as f64;
        let s = NetworkSummary::of(&v.config(), false)?;
        let r = f64::from(v.resolution) / f64::from(base.resolution);
        let formula = base_macs * (v.depth / base.depth) * (v.width / base.width).powi(2) * r * r;
        rows.push(CompareRow {
            name: v.name.to_string(),
            width: v.width,
            depth: v.depth,
            resolution: v.resolution,
            params: s.params,
            macs: s.macs,
            inference_memory_bytes: s.inference_memory_bytes,
            training_activation_bytes: s.training_activation_bytes,
            published_top1: v.published_top1.map(|t| t.0),
            formula_macs: formula.round() as u64,
            real_over_formula: s.macs as f64 / formula,
        });
    }
    if let Some(path) = &args.plot {
        let points: Vec<PlotPoint> = rows
            .iter()
            .filter_map(|r| {
                r.published_top1.map(|top1| PlotPoint {
                    label: r.name.clone(),
                    macs: r.macs,
                    top1,
                })
            })
            .collect();
        let lite = names
            .iter()
            .any(|n| Variant::by_name(n).is_ok_and(|v| v.family == Family::Lite));
        plot_accuracy_vs_macs(path, &points, lite)?;
        if !json {
            println!("wrote {}", path.display());
        }
    }
    if json {
        return print_json(&rows);
    }
    let mut t = table(&[
        "model",
        "w",
        "d",
        "res",
        "params",
        "MACs",
        "formula MACs",
        "real/formula",
        "inference mem",
        "train act/img",
        "top-1",
    ]);
    for r in &rows {
        t.add_row(vec![
            r.name.clone(),
            r.width.to_string(),
            r.depth.to_string(),
            r.resolution.to_string(),
            thousands(r.params),
            giga(r.macs),
            giga(r.formula_macs),
            format!("{:.2}", r.real_over_formula),
            bytes(r.inference_memory_bytes),
            bytes(r.training_activation_bytes),
            r.published_top1.map_or("-".into(), |t| format!("{t:.1}%")),
        ]);
    }
    println!("{t}");
    Ok(())
}
