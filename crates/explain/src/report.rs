//! One image explained end to end, as `effnet explain` and the server's `/v1/explain` report it: the
//! image preprocessed as the network expects, the classes chosen (the top ones or those asked for), and
//! for each its probability, the map, where it peaks and how its mass falls on the original image, and
//! the overlay.

use crate::error::Result;
use crate::gradcam::{ClassMap, Classes, Explainer, Layer, Method};
use crate::overlay::{grid_size, overlay};
use crate::projection::{Quadrants, SourceMap};
use effnet_arch::preprocess::Preprocessing;
use effnet_data::preprocess::preprocess;
use effnet_data::ranking::softmax;
use image::RgbImage;

/// How to explain an image.
#[derive(Debug, Clone)]
pub struct Request {
    /// The evaluation preprocessing.
    pub preprocessing: Preprocessing,
    /// The input resolution.
    pub resolution: u32,
    /// The layer whose activations are weighted.
    pub layer: Layer,
    /// Grad-CAM or Grad-CAM++.
    pub method: Method,
    /// The classes explained.
    pub classes: Classes,
    /// The longest side of the overlay (the image's own size when smaller).
    pub overlay_side: u32,
}

/// One class of one image, explained.
#[derive(Debug, Clone)]
pub struct ClassReport {
    /// Class index.
    pub class: usize,
    /// Class name.
    pub label: String,
    /// Softmax probability.
    pub prob: f64,
    /// Where the map peaks, `[y, x]` as fractions of the image's height and width.
    pub peak: [f64; 2],
    /// The map's share in each quadrant of the original image.
    pub mass: Quadrants,
    /// The raw map at the layer's resolution.
    pub map: ClassMap,
    /// The heat map over the image, with the label and probability written on it.
    pub overlay: RgbImage,
}

/// An image explained: its logits and the classes explained.
#[derive(Debug, Clone)]
pub struct ImageReport {
    /// The network's logits.
    pub logits: Vec<f32>,
    /// One report per class explained.
    pub classes: Vec<ClassReport>,
}

/// Explains `image` with `explainer` as `request` says, naming classes by `labels`.
pub fn explain_image(
    explainer: &Explainer,
    image: &RgbImage,
    labels: &[String],
    request: &Request,
) -> Result<ImageReport> {
    let input = preprocess(image, &request.preprocessing, request.resolution);
    let explanation = explainer.explain(
        &input.data,
        (input.height, input.width),
        request.layer,
        request.method,
        &request.classes,
    )?;
    let probs = softmax(&explanation.logits);
    let grid = grid_size(image.dimensions(), request.overlay_side);
    let classes = explanation
        .maps
        .into_iter()
        .map(|map| {
            let source = SourceMap::new(
                &map,
                image.dimensions(),
                &request.preprocessing,
                request.resolution,
                grid,
            );
            let class = map.class;
            let label = labels
                .get(class)
                .cloned()
                .unwrap_or_else(|| format!("class {class}"));
            let prob = probs[class];
            let caption = format!("{label}  {:.1}%", prob * 100.0);
            Ok(ClassReport {
                class,
                label,
                prob,
                peak: source.peak(),
                mass: source.quadrants(),
                overlay: overlay(image, &source, &caption)?,
                map,
            })
        })
        .collect::<Result<_>>()?;
    Ok(ImageReport {
        logits: explanation.logits,
        classes,
    })
}
