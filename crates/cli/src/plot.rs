//! PNG plots drawn with plotters, using the bundled DejaVu Sans font so no system fonts are needed.

use anyhow::{anyhow, Result};
use effnet_arch::accuracy::published_curve;
use effnet_train::lr_find::LrFinding;
use effnet_train::run::EpochRecord;
use effnet_train::search::{Kind, SearchResults};
use effnet_weights::atomic::write_atomically_with;
use plotters::prelude::*;
use plotters::style::FontTransform;
use std::path::Path;

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

pub use effnet_explain::overlay::register_fonts;

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

fn draw_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{e}")
}

/// One curve of a training plot: its name, colour and `(epoch, value)` points.
type Curve<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

fn draw_panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    title: &str,
    y_range: std::ops::Range<f64>,
    epochs: f64,
    curves: &[Curve<'_>],
) -> Result<()> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0.5..epochs + 0.5, y_range)
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(draw_error)?;
    for (name, colour, points) in curves {
        let colour = *colour;
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(draw_error)?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
            .map_err(draw_error)?;
    }
    draw_legend(&mut chart)?;
    Ok(())
}

/// Draws the series' labels in a white box with a black border.
fn draw_legend<'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, CT>,
) -> Result<()> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(draw_error)
}

/// Draws training and validation loss (left) and accuracy (right) per epoch, written atomically (PNG).
pub fn plot_training_curves(path: &Path, records: &[EpochRecord]) -> Result<()> {
    register_fonts();
    let series = |f: fn(&EpochRecord) -> f64| -> Vec<(f64, f64)> {
        records.iter().map(|r| (r.epoch as f64, f(r))).collect()
    };
    let epochs = records.last().map_or(1.0, |r| r.epoch as f64);
    let max_loss = records
        .iter()
        .flat_map(|r| [r.train_loss, r.val_loss])
        .fold(0.0f64, f64::max)
        .max(1e-3);
    Ok(write_atomically_with(path, |tmp| -> Result<()> {
        let root = BitMapBackend::new(tmp, (1200, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let (left, right) = root.split_horizontally(600);
        draw_panel(
            &left,
            "loss",
            0.0..max_loss * 1.1,
            epochs,
            &[
                ("train (smoothed labels)", BLUE, series(|r| r.train_loss)),
                ("validation", RED, series(|r| r.val_loss)),
            ],
        )?;
        draw_panel(
            &right,
            "accuracy",
            0.0..1.02,
            epochs,
            &[
                ("train (augmented)", BLUE, series(|r| r.train_accuracy)),
                ("validation top-1", RED, series(|r| r.val_accuracy)),
            ],
        )?;
        root.present().map_err(draw_error)
    })?)
}

/// Draws the learning-rate range test: the loss of every step and its smoothed curve against the rate
/// (log scale), with the suggested rate and the rate at the lowest smoothed loss within two decades of the
/// last rate marked; written atomically (PNG).
pub fn plot_lr_find(path: &Path, finding: &LrFinding) -> Result<()> {
    register_fonts();
    let points = &finding.points;
    let (first, last) = match (points.first(), points.last()) {
        (Some(a), Some(b)) => (a.lr, b.lr.max(a.lr * 1.0001)),
        _ => anyhow::bail!("the range test took no step"),
    };
    // The y range follows the smoothed curve up to where it blew up, not the blow-up itself.
    let finite = points
        .iter()
        .flat_map(|p| [p.loss, p.smoothed])
        .filter(|v| v.is_finite());
    let low = finite.clone().fold(f64::INFINITY, f64::min);
    let start = points[0].smoothed;
    let high = finite
        .fold(low, f64::max)
        .min(start.max(low) * 2.0)
        .max(low + 1e-3);
    Ok(write_atomically_with(path, |tmp| -> Result<()> {
        let root = BitMapBackend::new(tmp, (900, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("learning-rate range test", ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d((first..last).log_scale(), low * 0.95..high * 1.05)
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .x_desc("learning rate")
            .y_desc("training loss")
            .x_label_formatter(&|v| format!("{v:.0e}"))
            .label_style(("sans-serif", 15))
            .draw()
            .map_err(draw_error)?;
        let clip = |v: f64| v.clamp(low * 0.95, high * 1.05);
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.lr, clip(p.loss))),
                RGBColor(150, 170, 220).stroke_width(1),
            ))
            .map_err(draw_error)?
            .label("loss per step")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RGBColor(150, 170, 220)));
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.lr, clip(p.smoothed))),
                BLUE.stroke_width(2),
            ))
            .map_err(draw_error)?
            .label("smoothed")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        for (rate, label, colour) in [
            (
                finding.minimum,
                format!(
                    "lowest smoothed loss, last two decades: {:.1e}",
                    finding.minimum
                ),
                RGBColor(120, 120, 120),
            ),
            (
                finding.suggested,
                format!("suggested {:.1e}", finding.suggested),
                RED,
            ),
        ] {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(rate, low * 0.95), (rate, high * 1.05)],
                    colour.stroke_width(2),
                )))
                .map_err(draw_error)?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
        }
        draw_legend(&mut chart)?;
        root.present().map_err(draw_error)
    })?)
}

/// Draws a confusion matrix (rows: true class, columns: predicted), each cell shaded by its share of the
/// row and labelled with its count, written atomically (PNG).
pub fn plot_confusion(path: &Path, classes: &[String], confusion: &[Vec<usize>]) -> Result<()> {
    register_fonts();
    let n = classes.len().max(1);
    let cell = (720 / n).clamp(24, 120) as u32;
    let margin = 160u32;
    let side = margin + cell * n as u32 + 20;
    Ok(write_atomically_with(path, |tmp| -> Result<()> {
        let root = BitMapBackend::new(tmp, (side, side)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let font = ("sans-serif", (cell / 3).clamp(10, 18) as i32);
        for (i, row) in confusion.iter().enumerate() {
            let total = row.iter().sum::<usize>().max(1) as f64;
            for (j, &count) in row.iter().enumerate() {
                let share = count as f64 / total;
                let x = (margin + cell * j as u32) as i32;
                let y = (margin + cell * i as u32) as i32;
                let shade = (255.0 * (1.0 - share)) as u8;
                let colour = RGBColor(shade, shade, 255);
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell as i32, y + cell as i32)],
                    colour.filled(),
                ))
                .map_err(draw_error)?;
                let text_colour = if share > 0.5 { WHITE } else { BLACK };
                root.draw(&Text::new(
                    count.to_string(),
                    (x + 4, y + cell as i32 / 3),
                    font.into_font().color(&text_colour),
                ))
                .map_err(draw_error)?;
            }
        }
        for (k, name) in classes.iter().enumerate() {
            let offset = (margin + cell * k as u32 + cell / 3) as i32;
            root.draw(&Text::new(name.clone(), (8, offset), font))
                .map_err(draw_error)?;
            root.draw(&Text::new(
                name.clone(),
                (offset, 8),
                font.into_font().transform(FontTransform::Rotate90),
            ))
            .map_err(draw_error)?;
        }
        root.draw(&Text::new(
            "rows: true, columns: predicted",
            (8, side as i32 - 18),
            ("sans-serif", 14),
        ))
        .map_err(draw_error)?;
        root.present().map_err(draw_error)
    })?)
}

/// Draws validation accuracy against MACs for every search candidate (compound grid points in blue, the base
/// and the single-dimension scalings marked, the winner ringed), written atomically (PNG).
pub fn plot_search(path: &Path, results: &SearchResults) -> Result<()> {
    register_fonts();
    let points: Vec<(f64, f64, Kind)> = results
        .candidates
        .iter()
        .map(|r| {
            (
                r.plan.macs as f64 / 1e6,
                100.0 * r.val_accuracy,
                r.plan.candidate.kind,
            )
        })
        .collect();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y, _) in &points {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if points.is_empty() {
        (x0, x1, y0, y1) = (1.0, 10.0, 0.0, 100.0);
    }
    let winner = results
        .candidates
        .iter()
        .find(|r| r.plan.candidate.kind == Kind::Compound);
    Ok(write_atomically_with(path, |tmp| -> Result<()> {
        let root = BitMapBackend::new(tmp, (960, 640)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "compound-scaling search: validation accuracy vs multiply-adds",
                ("sans-serif", 24),
            )
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(60)
            // The legend sits in a strip left of the leftmost point, so it never hides one.
            .build_cartesian_2d(
                x0 - 0.35 * (x1 - x0).max(x0 * 0.2)..x1 + 0.08 * (x1 - x0).max(x0 * 0.2),
                (y0 - 3.0).max(0.0)..(y1 + 3.0).min(101.0),
            )
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .x_desc("multiply-adds per image (M)")
            .y_desc("validation top-1 (%)")
            .label_style(("sans-serif", 16))
            .draw()
            .map_err(draw_error)?;
        let styles = [
            (Kind::Compound, "compound grid", BLUE),
            (Kind::Baseline, "base (1, 1, 1)", BLACK),
            (Kind::Depth, "depth only", RGBColor(230, 120, 0)),
            (Kind::Width, "width only", RGBColor(0, 150, 0)),
            (Kind::Resolution, "resolution only", RGBColor(170, 0, 170)),
        ];
        for (kind, label, colour) in styles {
            let series: Vec<(f64, f64)> = points
                .iter()
                .filter(|p| p.2 == kind)
                .map(|&(x, y, _)| (x, y))
                .collect();
            let size = if kind == Kind::Compound { 4 } else { 7 };
            chart
                .draw_series(
                    series
                        .iter()
                        .map(|&p| Circle::new(p, size, colour.filled())),
                )
                .map_err(draw_error)?
                .label(label)
                .legend(move |(x, y)| Circle::new((x + 10, y), size, colour.filled()));
        }
        if let Some(w) = winner {
            let at = (w.plan.macs as f64 / 1e6, 100.0 * w.val_accuracy);
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at(at)
                        + Circle::new((0, 0), 10, RED.stroke_width(2))
                        + Text::new(
                            format!(
                                "winner ({}, {}, {})",
                                crate::output::decimal(w.plan.candidate.alpha),
                                crate::output::decimal(w.plan.candidate.beta),
                                crate::output::decimal(w.plan.candidate.gamma)
                            ),
                            (12, -20),
                            ("sans-serif", 16),
                        ),
                ))
                .map_err(draw_error)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 16))
            .draw()
            .map_err(draw_error)?;
        root.present().map_err(draw_error)
    })?)
}
