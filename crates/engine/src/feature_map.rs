//! Feature maps (NHWC, one image) and how kernels split their output rows across threads.

use crate::buffer::{aligned, Buffer};
use rayon::prelude::*;
use std::ops::Range;

/// An NHWC feature map of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureMap {
    /// Elements in `[y][x][channel]` order.
    pub data: Buffer,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// Channels.
    pub channels: usize,
}

/// The rows of a map a depthwise kernel reads (all of a [`FeatureMap`], or a band of expanded rows), and
/// which of the convolution's channels they hold: a thread's range of them, or all.
#[derive(Debug, Clone)]
pub(crate) struct MapView<'a> {
    /// Elements in `[y][x][channel]` order, `channels.len()` per pixel.
    pub data: &'a [f32],
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// The convolution's channels (its weight and bias entries) that each pixel's values are.
    pub channels: Range<usize>,
}

impl FeatureMap {
    /// The whole map, borrowed.
    pub(crate) fn view(&self) -> MapView<'_> {
        MapView {
            data: &self.data,
            height: self.height,
            width: self.width,
            channels: 0..self.channels,
        }
    }

    /// A map holding an aligned copy of `data`; the size must match.
    pub fn new(data: &[f32], height: usize, width: usize, channels: usize) -> Self {
        Self::from_buffer(aligned(data), height, width, channels)
    }

    /// A map owning `data`; the size must match.
    pub fn from_buffer(data: Buffer, height: usize, width: usize, channels: usize) -> Self {
        assert_eq!(data.len(), height * width * channels, "feature map size");
        Self {
            data,
            height,
            width,
            channels,
        }
    }
}

/// How a kernel may use threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exec {
    /// Split the work of one image across the rayon pool.
    pub parallel: bool,
}

/// Output rows per parallel task.
const ROWS_PER_TASK: usize = 2;

/// Runs `f(index, chunk)` over consecutive `chunk_len`-element chunks of `out`, on the rayon pool if asked,
/// and returns the results in chunk order.
pub(crate) fn for_chunks<T: Send>(
    out: &mut [f32],
    chunk_len: usize,
    parallel: bool,
    f: impl Fn(usize, &mut [f32]) -> T + Sync,
) -> Vec<T> {
    if parallel {
        out.par_chunks_mut(chunk_len)
            .enumerate()
            .map(|(i, chunk)| f(i, chunk))
            .collect()
    } else {
        out.chunks_mut(chunk_len)
            .enumerate()
            .map(|(i, chunk)| f(i, chunk))
            .collect()
    }
}

/// Runs `f(first_row, rows)` over `out` (rows of `row_len` elements): in [`ROWS_PER_TASK`]-row tasks across
/// threads if asked, else in one call. Returns the results in row order.
pub(crate) fn for_rows<T: Send>(
    out: &mut [f32],
    row_len: usize,
    exec: Exec,
    f: impl Fn(usize, &mut [f32]) -> T + Sync,
) -> Vec<T> {
    let rows = out.len() / row_len.max(1);
    let per_task = if exec.parallel && rows > ROWS_PER_TASK {
        ROWS_PER_TASK
    } else {
        rows.max(1)
    };
    for_chunks(out, row_len * per_task, per_task < rows, |i, chunk| {
        f(i * per_task, chunk)
    })
}
