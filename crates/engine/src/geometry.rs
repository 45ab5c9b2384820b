//! Where a convolution's taps fall: output size, leading padding, and which outputs read only inside the
//! input.

use crate::feature_map::FeatureMap;
use crate::layers::PreparedConv;
use effnet_arch::Padding;

/// Output size and leading padding of a convolution on an input.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub out_h: usize,
    pub out_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
}

pub(crate) fn geometry(x: &FeatureMap, c: &PreparedConv, padding: Padding) -> Geometry {
    geometry_of(x.height, x.width, c, padding)
}

/// Output size and leading padding of convolution `c` on a `height x width` input.
pub(crate) fn geometry_of(
    height: usize,
    width: usize,
    c: &PreparedConv,
    padding: Padding,
) -> Geometry {
    let (k, s) = (c.kernel as u32, c.stride as u32);
    let rows = padding.along(height as u32, k, s);
    let cols = padding.along(width as u32, k, s);
    Geometry {
        out_h: rows.output as usize,
        out_w: cols.output as usize,
        pad_top: rows.begin as usize,
        pad_left: cols.begin as usize,
    }
}

/// The input coordinate a kernel tap reads, if it falls inside the image.
#[inline(always)]
pub(crate) fn source(
    out: usize,
    stride: usize,
    tap: usize,
    pad: usize,
    size: usize,
) -> Option<usize> {
    (out * stride + tap).checked_sub(pad).filter(|&i| i < size)
}

/// The outputs along one axis (of an input `size` long, `pad` before it) all of whose `kernel` taps
/// fall inside the input: `first..end`, not capped at the output size.
pub(crate) fn taps_inside(pad: usize, size: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let first = pad.div_ceil(stride);
    let end = (size + pad)
        .checked_sub(kernel)
        .map_or(0, |v| v / stride + 1);
    (first, end.max(first))
}
