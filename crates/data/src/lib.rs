//! The input pipeline: decode an image file (JPEG, PNG, BMP, TIFF, WebP; grayscale, RGBA and 16-bit too,
//! EXIF orientation applied), centre-crop it the way TF's EfficientNet evaluation does, resize it with a
//! SIMD Catmull-Rom bicubic or bilinear filter, and normalise it with the weights' mean and std. Also
//! labelled image folders with a seeded split, and the training augmentation.

pub mod augment;
pub mod files;
pub mod folder;
pub mod labels;
pub mod patches;
pub mod pil_resize;
pub mod preprocess;
pub mod ranking;
pub mod system;

pub use files::{image_files, DataError};
pub use folder::{ImageFolder, Sample};
pub use labels::imagenet_labels;
pub use preprocess::{
    crop_window, decode, decode_from, load_image, max_pixels, normalize, preprocess, resize_region,
    set_max_pixels, CropWindow, NormalizedImage, Region, DEFAULT_MAX_PIXELS,
};
