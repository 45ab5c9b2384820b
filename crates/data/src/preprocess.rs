//! Evaluation preprocessing exactly as the official EfficientNet code does it: a centre crop of
//! `crop_pct * min(h, w)` with TF's rounding (`offset = (h - crop + 1) / 2`), a resize to the network's
//! resolution (in f32, no rounding to bytes), then `(pixel / 255 - mean) / std`. Weights from
//! pytorch-image-models instead place the crop by timm's `crop_mode` (`center`, `squash`, `border`), with
//! its rounding; see [`placement`].

use crate::files::DataError;
use crate::pil_resize::resize_window;
use effnet_arch::preprocess::{CropMode, Interpolation, Preprocessing};
use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};
use std::io::{BufRead, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// A normalised RGB image, `[y][x][channel]`.
#[derive(Debug, Clone, PartialEq)]
pub struct NormalizedImage {
    /// Normalised values.
    pub data: Vec<f32>,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

/// The region of the source image that is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropWindow {
    /// First column.
    pub left: u32,
    /// First row.
    pub top: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

/// TF's evaluation crop: a square of `int(crop_pct * min(h, w))` at `((h - crop + 1) / 2, (w - crop + 1) / 2)`.
/// `crop_pct >= 1` keeps the whole image (the resize then squashes it to a square).
pub fn crop_window(width: u32, height: u32, crop_pct: f64) -> CropWindow {
    if crop_pct >= 1.0 {
        return CropWindow {
            left: 0,
            top: 0,
            width,
            height,
        };
    }
    let side = ((crop_pct * f64::from(width.min(height))) as u32).max(1);
    CropWindow {
        left: (width - side).div_ceil(2),
        top: (height - side).div_ceil(2),
        width: side,
        height: side,
    }
}

/// How an evaluation resize places the image in the `resolution` square.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Placement {
    /// TF's rule: this region of the source (fractional pixels) resized, in f32, to the whole square.
    Region(Region),
    /// timm's and torchvision's: the whole image resized by PIL to `scaled` (width, height), the window of
    /// it at `offset` of `dest`'s size kept and put at `dest` (left, top, width, height) in the square,
    /// the rest of which is the `fill` colour (0-255 units).
    Scaled {
        /// The size PIL resizes the whole image to.
        scaled: [u32; 2],
        /// Where in the resized image the kept window starts.
        offset: [u32; 2],
        /// Left, top, width and height of the window in the output.
        dest: [u32; 4],
        /// The colour around `dest`, when it does not cover the output.
        fill: [f32; 3],
    },
}

/// Python's `round`: halves to even.
fn round_half_even(x: f64) -> f64 {
    x.round_ties_even()
}

/// The placement of an image of `width x height` for `pre` at `resolution`: TF's crop, or timm's
/// `transforms_imagenet_eval` for its crop modes (scale size `floor(resolution / crop_pct)`, torchvision's
/// integer resize sizes, `round((size - resolution) / 2)` crop offsets, `CenterCropOrPad`'s padding).
pub fn placement(width: u32, height: u32, pre: &Preprocessing, resolution: u32) -> Placement {
    let res = f64::from(resolution);
    let (w, h) = (f64::from(width), f64::from(height));
    let scale = (res / pre.crop_pct).floor();
    let (sw, sh) = match pre.crop_mode {
        CropMode::Tf => return Placement::Region(crop_window(width, height, pre.crop_pct).into()),
        // torchvision's Resize(int): the short side to `scale`, the long one truncated in proportion.
        CropMode::Center if width <= height => (scale, (scale * h / w).floor()),
        CropMode::Center => ((scale * w / h).floor(), scale),
        CropMode::Squash => (scale, scale),
        CropMode::Border => {
            let ratio = (w / scale).max(h / scale);
            (round_half_even(w / ratio), round_half_even(h / ratio))
        }
    };
    // One axis of the centre crop (or pad) to the resolution: where the window starts in the resized
    // image, where it goes in the output, and its length.
    let axis = |scaled: f64| -> (u32, u32, u32) {
        let scaled = scaled.max(1.0);
        if scaled >= res {
            (round_half_even((scaled - res) / 2.0) as u32, 0, resolution)
        } else {
            (0, ((res - scaled) / 2.0).floor() as u32, scaled as u32)
        }
    };
    let ((ox, dx, lw), (oy, dy, lh)) = (axis(sw), axis(sh));
    Placement::Scaled {
        scaled: [sw.max(1.0) as u32, sh.max(1.0) as u32],
        offset: [ox, oy],
        dest: [dx, dy, lw, lh],
        fill: pre.mean.map(|m| (255.0 * m).round()),
    }
}

/// Decoded sizes above which [`decode`] first checks the memory available.
const LARGE_DECODE_BYTES: u64 = 64 << 20;

/// The default of [`set_max_pixels`]: 100 megapixels, as large as camera photos come.
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

static MAX_PIXELS: AtomicU64 = AtomicU64::new(DEFAULT_MAX_PIXELS);

/// Sets the most pixels an image may have for [`decode`] to decode it (`--max-pixels`). The size is read
/// from the file's header first, so a small file that claims a huge image is refused before anything is
/// allocated.
pub fn set_max_pixels(pixels: u64) {
    MAX_PIXELS.store(pixels, Ordering::Relaxed);
}

/// The limit [`set_max_pixels`] set.
pub fn max_pixels() -> u64 {
    MAX_PIXELS.load(Ordering::Relaxed)
}

/// The last 4 KiB of `source`, which is left rewound.
fn tail<R: Read + Seek>(source: &mut R) -> std::io::Result<Vec<u8>> {
    let len = source.seek(SeekFrom::End(0))?;
    source.seek(SeekFrom::Start(len.saturating_sub(4096)))?;
    let mut tail = Vec::new();
    source.read_to_end(&mut tail)?;
    source.rewind()?;
    Ok(tail)
}

/// Whether JPEG `bytes` end with the end-of-image marker (`FF D9`), allowing the padding some writers
/// append after it. The decoder fills a truncated file's missing rows with gray instead of failing.
fn jpeg_is_complete(tail: &[u8]) -> bool {
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

/// Decodes an image file to 8-bit RGB (gray is replicated, alpha dropped, EXIF orientation applied), after
/// checking the size its header claims against [`max_pixels`] and with the decoder's own memory limits
/// set for every format.
pub fn decode(path: &Path) -> Result<RgbImage, DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::Image {
        path: path.to_path_buf(),
        reason: format!("cannot open: {e}"),
    })?;
    decode_from(path, std::io::BufReader::new(file))
}

/// [`decode`] of an image read from `source` (a file, or bytes in a cursor); `path` names it in errors.
pub fn decode_from<R: BufRead + Seek>(path: &Path, mut source: R) -> Result<RgbImage, DataError> {
    let fail = |reason: String| DataError::Image {
        path: path.to_path_buf(),
        reason,
    };
    let last = tail(&mut source).map_err(|e| fail(format!("cannot read: {e}")))?;
    let mut reader = ImageReader::new(source);
    let max_pixels = max_pixels();
    let mut limits = Limits::default();
    let side = u32::try_from(max_pixels).unwrap_or(u32::MAX);
    (limits.max_image_width, limits.max_image_height) = (Some(side), Some(side));
    // Room for the widest pixel format (16-bit RGBA) plus the decoder's own buffers.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(limits);
    let reader = reader
        .with_guessed_format()
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    let Some(format) = reader.format() else {
        return Err(fail("not an image (unknown format)".into()));
    };
    if format == ImageFormat::Jpeg && !jpeg_is_complete(&last) {
        return Err(fail(
            "truncated JPEG (no end-of-image marker): the file is incomplete".into(),
        ));
    }
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| fail(format!("not a readable image: {e}")))?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    let too_large = |reason: String| DataError::TooLarge {
        path: path.to_path_buf(),
        reason,
    };
    if pixels > max_pixels {
        return Err(too_large(format!(
            "{width} x {height} pixels ({:.1} megapixels) is over the limit of {:.1} megapixels (raise it with --max-pixels)",
            pixels as f64 / 1e6,
            max_pixels as f64 / 1e6
        )));
    }
    // Asking the system what is available reads /proc files: worth it only for an image large enough to
    // matter, not for every image the training loader decodes.
    let needed = decoder.total_bytes();
    if needed > LARGE_DECODE_BYTES {
        crate::system::ensure_memory("decoding this image", needed).map_err(too_large)?;
    }
    let orientation = decoder
        .orientation()
        .map_err(|e| fail(format!("bad metadata: {e}")))?;
    let mut img =
        DynamicImage::from_decoder(decoder).map_err(|e| fail(format!("corrupt image: {e}")))?;
    img.apply_orientation(orientation);
    Ok(img.into_rgb8())
}

/// A rectangle of the source image in pixels (fractional edges allowed: the resizer samples them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Region {
    /// Left edge.
    pub left: f64,
    /// Top edge.
    pub top: f64,
    /// Width.
    pub width: f64,
    /// Height.
    pub height: f64,
}

impl From<CropWindow> for Region {
    fn from(w: CropWindow) -> Self {
        Self {
            left: f64::from(w.left),
            top: f64::from(w.top),
            width: f64::from(w.width),
            height: f64::from(w.height),
        }
    }
}

fn resize_options(region: Region, interpolation: Interpolation) -> ResizeOptions {
    let filter = match interpolation {
        Interpolation::Bicubic => FilterType::CatmullRom,
        Interpolation::Bilinear => FilterType::Bilinear,
    };
    ResizeOptions::new()
        .crop(region.left, region.top, region.width, region.height)
        .resize_alg(ResizeAlg::Convolution(filter))
}

/// Resizes `region` of `img` to `resolution` x `resolution` in 8 bits (the training path, where
/// augmentation works on bytes as TF's does).
pub fn resize_region(
    img: &RgbImage,
    region: Region,
    interpolation: Interpolation,
    resolution: u32,
) -> RgbImage {
    // Borrowed, not copied: this runs for every training image.
    let src = ImageRef::new(img.width(), img.height(), img.as_raw(), PixelType::U8x3)
        .expect("buffer size matches the image");
    let mut dst = Image::new(resolution, resolution, PixelType::U8x3);
    Resizer::new()
        .resize(&src, &mut dst, &resize_options(region, interpolation))
        .expect("pixel types match");
    RgbImage::from_raw(resolution, resolution, dst.into_vec()).expect("buffer size matches")
}

/// `(pixel / 255 - mean) / std` of an 8-bit image.
pub fn normalize(img: &RgbImage, pre: &Preprocessing) -> NormalizedImage {
    let data = img
        .as_raw()
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = i % 3;
            (f32::from(v) / 255.0 - pre.mean[c]) / pre.std[c]
        })
        .collect();
    NormalizedImage {
        data,
        height: img.height() as usize,
        width: img.width() as usize,
    }
}

/// A crop wider than this many times the output resolution is first reduced by an integer factor.
const REDUCE_ABOVE: u32 = 4;

/// The f32 pixels to resize and the region of them to keep: the whole image and `region`, or, for a region
/// more than [`REDUCE_ABOVE`] times the output, the pixels around it alone reduced by the integer factor
/// `k` that leaves it at least twice the output (each value the mean of a `k x k` block, as PIL's
/// `reducing_gap` does), so that memory stays bounded by the output size rather than the photo's.
fn resize_source(img: &RgbImage, region: Region, output: u32) -> (Image<'static>, Region) {
    let window = CropWindow {
        left: region.left.floor() as u32,
        top: region.top.floor() as u32,
        width: ((region.left + region.width).ceil() as u32).min(img.width())
            - region.left.floor() as u32,
        height: ((region.top + region.height).ceil() as u32).min(img.height())
            - region.top.floor() as u32,
    };
    let side = window.width.min(window.height);
    let k = side / (2 * output.max(1));
    if side <= REDUCE_ABOVE * output || k < 2 {
        let bytes: Vec<u8> = img
            .as_raw()
            .iter()
            .flat_map(|&v| f32::from(v).to_ne_bytes())
            .collect();
        let src = Image::from_vec_u8(img.width(), img.height(), bytes, PixelType::F32x3)
            .expect("buffer size matches the image");
        return (src, region);
    }
    let (width, height) = (window.width / k, window.height / k);
    let mut bytes = Vec::with_capacity((width * height * 3 * 4) as usize);
    let scale = 1.0 / (k * k) as f32;
    let row = img.width() as usize * 3;
    let raw = img.as_raw();
    for y in 0..height {
        for x in 0..width {
            let mut sum = [0u32; 3];
            for dy in 0..k {
                let at =
                    (window.top + y * k + dy) as usize * row + (window.left + x * k) as usize * 3;
                for px in raw[at..at + k as usize * 3].chunks_exact(3) {
                    (0..3).for_each(|c| sum[c] += u32::from(px[c]));
                }
            }
            bytes.extend(sum.iter().flat_map(|&v| (v as f32 * scale).to_ne_bytes()));
        }
    }
    let src = Image::from_vec_u8(width, height, bytes, PixelType::F32x3)
        .expect("buffer size matches the reduced crop");
    let k = f64::from(k);
    let reduced = Region {
        left: (region.left - f64::from(window.left)) / k,
        top: (region.top - f64::from(window.top)) / k,
        width: (region.width / k).min(f64::from(width)),
        height: (region.height / k).min(f64::from(height)),
    };
    (src, reduced)
}

/// Crops, resizes to `resolution` x `resolution` and normalises, as [`placement`] places the image.
pub fn preprocess(img: &RgbImage, pre: &Preprocessing, resolution: u32) -> NormalizedImage {
    let (scaled, offset, dest, fill) = match placement(img.width(), img.height(), pre, resolution) {
        Placement::Region(region) => {
            let (src, region) = resize_source(img, region, resolution);
            return resize_normalized(&src, region, pre, (resolution, resolution));
        }
        Placement::Scaled {
            scaled,
            offset,
            dest,
            fill,
        } => (scaled, offset, dest, fill),
    };
    let [x, y, w, h] = dest;
    let window = resize_window(img, scaled, [offset[0], offset[1], w, h], pre.interpolation);
    let resized = normalize(&window, pre);
    if dest == [0, 0, resolution, resolution] {
        return resized;
    }
    let side = resolution as usize;
    let fill: Vec<f32> = (0..3)
        .map(|c| (fill[c] / 255.0 - pre.mean[c]) / pre.std[c])
        .collect();
    let mut data: Vec<f32> = fill.iter().copied().cycle().take(side * side * 3).collect();
    let (x, y, w) = (x as usize, y as usize, w as usize);
    for (row, values) in resized.data.chunks_exact(w * 3).enumerate() {
        let at = ((y + row) * side + x) * 3;
        data[at..at + w * 3].copy_from_slice(values);
    }
    NormalizedImage {
        data,
        height: side,
        width: side,
    }
}

/// Resizes `region` of the f32 image `src` to `width x height` (in f32, as TF does) and normalises.
fn resize_normalized(
    src: &Image,
    region: Region,
    pre: &Preprocessing,
    (width, height): (u32, u32),
) -> NormalizedImage {
    let mut dst = Image::new(width, height, PixelType::F32x3);
    Resizer::new()
        .resize(src, &mut dst, &resize_options(region, pre.interpolation))
        .expect("pixel types match");
    let data = dst
        .buffer()
        .chunks_exact(4)
        .enumerate()
        .map(|(i, b)| {
            let c = i % 3;
            (f32::from_ne_bytes(b.try_into().expect("4 bytes")) / 255.0 - pre.mean[c]) / pre.std[c]
        })
        .collect();
    NormalizedImage {
        data,
        height: height as usize,
        width: width as usize,
    }
}

/// Decodes and preprocesses one file.
pub fn load_image(
    path: &Path,
    pre: &Preprocessing,
    resolution: u32,
) -> Result<NormalizedImage, DataError> {
    Ok(preprocess(&decode(path)?, pre, resolution))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_follows_tf_rounding() {
        // 600x400 at 224/256: crop int(0.875 * 400) = 350, offsets ((600-350+1)/2, (400-350+1)/2) = (125, 25).
        assert_eq!(
            crop_window(600, 400, 0.875),
            CropWindow {
                left: 125,
                top: 25,
                width: 350,
                height: 350
            }
        );
        // An odd leftover puts the extra pixel before the crop, like TF: (451 - 262 + 1) / 2 = 95.
        assert_eq!(
            crop_window(451, 300, 0.875),
            CropWindow {
                left: 95,
                top: 19,
                width: 262,
                height: 262
            }
        );
        assert_eq!(
            crop_window(451, 300, 1.0),
            CropWindow {
                left: 0,
                top: 0,
                width: 451,
                height: 300
            }
        );
    }

    #[test]
    fn a_constant_image_normalises_to_the_formula() {
        let img = RgbImage::from_pixel(50, 30, image::Rgb([200, 100, 0]));
        let pre = Preprocessing::imagenet(16);
        let out = preprocess(&img, &pre, 16);
        assert_eq!(
            (out.height, out.width, out.data.len()),
            (16, 16, 16 * 16 * 3)
        );
        for (i, v) in out.data.iter().enumerate() {
            let c = i % 3;
            let expected = ([200.0, 100.0, 0.0][c] / 255.0 - pre.mean[c]) / pre.std[c];
            assert!((v - expected).abs() < 1e-4, "{i}: {v} vs {expected}");
        }
    }

    #[test]
    fn resizing_without_a_crop_keeps_a_gradient_monotone() {
        let img = RgbImage::from_fn(64, 64, |x, _| image::Rgb([(x * 4) as u8; 3]));
        let mut pre = Preprocessing::lite(32);
        pre.crop_pct = 1.0;
        let out = preprocess(&img, &pre, 32);
        let row: Vec<f32> = (0..32).map(|x| out.data[x * 3]).collect();
        assert!(row.windows(2).all(|w| w[1] >= w[0]), "{row:?}");
        assert!(row[0] < -0.9 && row[31] > 0.9);
    }

    #[test]
    fn non_images_and_truncated_files_are_named_errors() {
        let dir = std::env::temp_dir().join(format!("effnet-decode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = dir.join("notes.png");
        std::fs::write(&text, "hello").unwrap();
        let e = decode(&text).unwrap_err().to_string();
        assert!(e.contains("notes.png"), "{e}");
        let png = dir.join("cut.png");
        let mut bytes = Vec::new();
        RgbImage::from_pixel(40, 40, image::Rgb([1, 2, 3]))
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .unwrap();
        std::fs::write(&png, &bytes[..bytes.len() / 2]).unwrap();
        assert!(decode(&png).unwrap_err().to_string().contains("cut.png"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn gray_and_rgba_decode_to_rgb() {
        let dir = std::env::temp_dir().join(format!("effnet-modes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let gray = dir.join("g.png");
        image::GrayImage::from_pixel(3, 2, image::Luma([77]))
            .save(&gray)
            .unwrap();
        assert_eq!(decode(&gray).unwrap().get_pixel(1, 1).0, [77, 77, 77]);
        let rgba = dir.join("a.png");
        image::RgbaImage::from_pixel(3, 2, image::Rgba([9, 8, 7, 0]))
            .save(&rgba)
            .unwrap();
        assert_eq!(decode(&rgba).unwrap().get_pixel(0, 0).0, [9, 8, 7]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_truncated_jpeg_is_an_error_not_gray_rows() {
        let dir = std::env::temp_dir().join(format!("effnet-jpeg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut bytes = Vec::new();
        RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8 * 4, y as u8 * 4, 9]))
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Jpeg,
            )
            .unwrap();
        let whole = dir.join("whole.jpg");
        std::fs::write(&whole, &bytes).unwrap();
        assert_eq!(decode(&whole).unwrap().dimensions(), (64, 64));
        let cut = dir.join("cut.jpg");
        std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
        let e = decode(&cut).unwrap_err().to_string();
        assert!(e.contains("cut.jpg") && e.contains("truncated JPEG"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn timm(mode: CropMode, crop_pct: f64) -> Preprocessing {
        Preprocessing {
            crop_mode: mode,
            crop_pct,
            ..Preprocessing::imagenet(224)
        }
    }

    /// The scaled size, window offset and output rectangle of a timm placement.
    fn scaled(p: Placement) -> ([u32; 2], [u32; 2], [u32; 4], [f32; 3]) {
        match p {
            Placement::Scaled {
                scaled,
                offset,
                dest,
                fill,
            } => (scaled, offset, dest, fill),
            Placement::Region(_) => panic!("a timm placement"),
        }
    }

    #[test]
    fn timm_center_resizes_the_short_side_and_crops_with_python_rounding() {
        // torchvision Resize(256) of 640 x 480: 341 x 256 (int(256 * 640 / 480)); CenterCrop(256) starts at
        // int(round(85 / 2)) = 42 (half to even).
        let (size, offset, dest, _) =
            scaled(placement(640, 480, &timm(CropMode::Center, 1.0), 256));
        assert_eq!(
            (size, offset, dest),
            ([341, 256], [42, 0], [0, 0, 256, 256])
        );
        // crop_pct 0.875 at 224: scale floor(224 / 0.875) = 256; portrait 300 x 400 -> 256 x 341, and
        // round(117 / 2) = 58.
        let (size, offset, _, _) = scaled(placement(300, 400, &timm(CropMode::Center, 0.875), 224));
        assert_eq!((size, offset), ([256, 341], [16, 58]));
    }

    #[test]
    fn timm_squash_and_border_follow_their_definitions() {
        // squash: 640 x 480 to 256 x 256 regardless of aspect, the centre 224 (offset 16).
        let (size, offset, dest, _) =
            scaled(placement(640, 480, &timm(CropMode::Squash, 0.875), 224));
        assert_eq!(
            (size, offset, dest),
            ([256, 256], [16, 16], [0, 0, 224, 224])
        );
        // border at crop 1.0: the long side to 224, the short to round(480 / (640 / 224)) = 168, padded by
        // (224 - 168) // 2 = 28 rows of round(255 * mean) above.
        let (size, offset, dest, fill) =
            scaled(placement(640, 480, &timm(CropMode::Border, 1.0), 224));
        assert_eq!(
            (size, offset, dest),
            ([224, 168], [0, 0], [0, 28, 224, 168])
        );
        assert_eq!(fill, [124.0, 116.0, 104.0]);
        let img = RgbImage::from_pixel(640, 480, image::Rgb([200, 10, 60]));
        let pre = timm(CropMode::Border, 1.0);
        let out = preprocess(&img, &pre, 224);
        let value = |y: usize, c: usize| out.data[(y * 224 + 100) * 3 + c];
        let norm = |v: f32, c: usize| (v / 255.0 - pre.mean[c]) / pre.std[c];
        assert!(
            (value(0, 0) - norm(124.0, 0)).abs() < 1e-5,
            "the pad is the mean colour"
        );
        assert!(
            (value(100, 0) - norm(200.0, 0)).abs() < 1e-5,
            "the image is inside"
        );
    }

    #[test]
    fn a_large_photo_is_reduced_before_the_resize_and_agrees_with_the_direct_path() {
        // 2000 x 1500 smooth colours; the crop (1312 px) is more than 4 x 224.
        let img = RgbImage::from_fn(2000, 1500, |x, y| {
            image::Rgb([(x / 8) as u8, (y / 6) as u8, ((x + y) / 14) as u8])
        });
        let pre = Preprocessing::imagenet(224);
        let reduced = preprocess(&img, &pre, 224);
        // The direct path: the whole image in f32, resized from the crop window.
        let window = crop_window(img.width(), img.height(), pre.crop_pct);
        let bytes: Vec<u8> = img
            .as_raw()
            .iter()
            .flat_map(|&v| f32::from(v).to_ne_bytes())
            .collect();
        let src = Image::from_vec_u8(2000, 1500, bytes, PixelType::F32x3).unwrap();
        let direct = resize_normalized(&src, window.into(), &pre, (224, 224)).data;
        let worst = reduced
            .data
            .iter()
            .zip(&direct)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // Within two 8-bit levels (in normalised units, 2 / 255 / std).
        assert!(worst < 2.0 / 255.0 / 0.225, "{worst}");
    }
}
