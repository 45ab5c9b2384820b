//! The overlay PNG: the class map as a heat map (jet colours, scaled to its own maximum) blended half and
//! half with the image, as pytorch-grad-cam's `show_cam_on_image` does, with the label and probability
//! written in a band across the top.

use crate::error::{ExplainError, Result};
use crate::projection::SourceMap;
use image::{imageops, ImageFormat, RgbImage};
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::sync::Once;

/// Registers the bundled DejaVu Sans once per process under the family name plotters uses by default, so
/// text is drawn without system fonts.
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

/// The grid an overlay of an image of `(width, height)` is drawn on: the image's own size, scaled down
/// so that its longer side is at most `max_side`.
pub fn grid_size((width, height): (u32, u32), max_side: u32) -> (usize, usize) {
    let scale = (f64::from(max_side) / f64::from(width.max(height))).min(1.0);
    let side = |v: u32| ((f64::from(v) * scale).round() as usize).max(1);
    (side(width), side(height))
}

/// Jet colour of `t` in `[0, 1]` (blue for 0, red for 1).
fn jet(t: f32) -> [f32; 3] {
    let channel = |centre: f32| (1.5 - (4.0 * t - centre).abs()).clamp(0.0, 1.0);
    [channel(3.0), channel(2.0), channel(1.0)]
}

/// `image` (resized to `map`'s grid) with `map` blended over it and `caption` written on top.
pub fn overlay(image: &RgbImage, map: &SourceMap, caption: &str) -> Result<RgbImage> {
    let (width, height) = (map.width as u32, map.height as u32);
    let mut out = if image.dimensions() == (width, height) {
        image.clone()
    } else {
        imageops::resize(image, width, height, imageops::FilterType::Triangle)
    };
    let max = map.max();
    for (pixel, &v) in out.pixels_mut().zip(&map.values) {
        let t = if max > 0.0 { v / max } else { 0.0 };
        let colour = jet(t);
        for (p, c) in pixel.0.iter_mut().zip(colour) {
            *p = (0.5 * f32::from(*p) + 0.5 * 255.0 * c).round() as u8;
        }
    }
    caption_band(&mut out, caption)?;
    Ok(out)
}

/// Writes `caption` in white on a dark band across the top of `image`.
fn caption_band(image: &mut RgbImage, caption: &str) -> Result<()> {
    register_fonts();
    let (width, height) = image.dimensions();
    let size = (f64::from(width.min(height)) / 14.0).clamp(9.0, 28.0);
    let band = (size * 1.5) as i32;
    let draw = |e: &dyn std::fmt::Display| ExplainError::Draw(e.to_string());
    let root = BitMapBackend::with_buffer(image.as_mut(), (width, height)).into_drawing_area();
    root.draw(&Rectangle::new(
        [(0, 0), (width as i32, band)],
        RGBColor(20, 20, 20).mix(0.7).filled(),
    ))
    .map_err(|e| draw(&e))?;
    let style = ("sans-serif", size).into_font().color(&WHITE);
    root.draw(&Text::new(
        caption,
        ((size * 0.4) as i32, (size * 0.25) as i32),
        style,
    ))
    .map_err(|e| draw(&e))?;
    root.present().map_err(|e| draw(&e))?;
    Ok(())
}

/// `image` encoded as PNG.
pub fn png_bytes(image: &RgbImage) -> Result<Vec<u8>> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut bytes, ImageFormat::Png)
        .map_err(|e| ExplainError::Draw(e.to_string()))?;
    Ok(bytes.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jet_runs_from_blue_to_red() {
        assert_eq!(jet(0.0), [0.0, 0.0, 0.5]);
        assert_eq!(jet(1.0), [0.5, 0.0, 0.0]);
        assert_eq!(jet(0.5), [0.5, 1.0, 0.5]);
    }

    #[test]
    fn grids_keep_the_aspect_and_cap_the_long_side() {
        assert_eq!(grid_size((4000, 3000), 1000), (1000, 750));
        assert_eq!(grid_size((300, 200), 1000), (300, 200));
        assert_eq!(grid_size((5000, 1), 100), (100, 1));
    }

    #[test]
    fn the_hot_half_turns_red_and_the_caption_band_is_dark() {
        let image = RgbImage::from_pixel(200, 100, image::Rgb([128, 128, 128]));
        let mut values = vec![0f32; 200 * 100];
        for row in values.chunks_exact_mut(200) {
            row[100..].fill(1.0);
        }
        let map = SourceMap {
            width: 200,
            height: 100,
            values,
        };
        let out = overlay(&image, &map, "espresso 93.0%").expect("draws");
        let hot = out.get_pixel(150, 80).0;
        let cold = out.get_pixel(50, 80).0;
        assert!(hot[0] > hot[2] + 50 && hot[1] < 100, "hot {hot:?}");
        assert!(cold[2] > cold[0], "cold {cold:?}");
        let band = out.get_pixel(199, 2).0;
        assert!(band.iter().all(|&c| c < 100), "band {band:?}");
        let png = png_bytes(&out).expect("encodes");
        assert_eq!(&png[1..4], b"PNG");
    }
}
