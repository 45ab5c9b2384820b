//! Why did the network say that? Grad-CAM (Selvaraju et al. 2017) and Grad-CAM++ (Chattopadhay et al.
//! 2018) class-activation maps from the training model's exact backward pass, taken at the head
//! convolution or at any stage's output, projected back onto the original image (its peak and the share of
//! the map in each quadrant) and drawn over it as a heat map with the label.

pub mod error;
pub mod gradcam;
pub mod overlay;
pub mod projection;
pub mod report;

pub use error::{ExplainError, Result};
pub use gradcam::{ClassMap, Classes, Explainer, Explanation, Layer, Method};
pub use overlay::{overlay, png_bytes};
pub use projection::{Quadrants, SourceMap};
pub use report::{explain_image, ClassReport, ImageReport, Request};
