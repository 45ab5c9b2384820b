//! PNG plots drawn with plotters, using the bundled DejaVu Sans font so no system fonts are needed.

use anyhow::{anyhow, Result};
use effnet_arch::accuracy::published_curve;
use effnet_weights::atomic::write_atomically_with;
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::Path;
use std::sync::Once;

/// A labelled point of the accuracy-vs-MACs plot.
#[derive(Debug, Clone)]
pub struct PlotPoint {
    /// Label drawn next to the point.
    pub label: String,
    /// Multiply-adds.
    pub macs: u64,
    /// Top-1 in percent.
    pub top1: f64,
}

/// Registers the bundled font once per process under the family name plotters uses by default.
pub fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

/// Draws ImageNet top-1 against multiply-adds (log scale): the published B0..B7 curve and `points`, written
/// atomically to `path` (PNG). `with_lite` widens the axes for the Lite family.
pub fn plot_accuracy_vs_macs(path: &Path, points: &[PlotPoint], with_lite: bool) -> Result<()> {
    register_fonts();
    let curve: Vec<(f64, f64)> = published_curve()
        .into_iter()
        .map(|(m, a)| (m as f64 / 1e9, a))
        .collect();
    let all = curve
        .iter()
        .copied()
        .chain(points.iter().map(|p| (p.macs as f64 / 1e9, p.top1)));
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in all {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if with_lite {
        y0 = y0.min(74.0);
    }
    Ok(write_atomically_with(path, |tmp| -> Result<()> {
        let root = BitMapBackend::new(tmp, (960, 640)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        let mut chart = ChartBuilder::on(&root)
            .caption("ImageNet top-1 vs multiply-adds", ("sans-serif", 26))
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d((x0 * 0.7..x1 * 1.4).log_scale(), (y0 - 1.0)..(y1 + 1.0))
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("multiply-adds (G, log scale)")
            .y_desc("top-1 (%)")
            .label_style(("sans-serif", 16))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .draw_series(LineSeries::new(curve.iter().copied(), BLUE.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label("EfficientNet B0..B7 (published)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|p| {
                let at = (p.macs as f64 / 1e9, p.top1);
                EmptyElement::at(at)
                    + Circle::new((0, 0), 5, RED.filled())
                    + Text::new(p.label.clone(), (8, -14), ("sans-serif", 16))
            }))
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 16))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        root.present().map_err(|e| anyhow!("{e}"))
    })?)
}
