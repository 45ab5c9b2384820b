//! A depthwise convolution fused with the convolution that makes its input: the block's 1x1 expand, or,
//! for a first block that does not expand, the network's stem.
//!
//! Unfused, the expanded map (up to 112 x 112 x 96 floats, 4.8 MB, for B0) is written to memory by the
//! expand GEMM and read back by the depthwise kernel: on the early, wide stages that round trip through
//! memory rather than cache dominated the depthwise time. Here each band of output rows walks down the
//! image eight rows (`TILE_ROWS`) at a time, computing only the input rows the next tile needs into a
//! small buffer (keeping the overlap rows from the previous tile) and convolving them while they are in
//! cache. The per-channel sums for squeeze-excite are taken in the same pass. The buffered rows carry the
//! zero padding, so every depthwise block takes the check-free interior path without a padded copy of the
//! whole map. The expanded rows a step needs are one GEMM call writing straight into their padded rows;
//! its register tiles run on across line ends, so even a 7-pixel-wide map gets full tiles. The stem's
//! rows are written row by row, as [`crate::kernels::conv_dense`] writes them.

use crate::dense::dense_row;
use crate::depthwise::{depthwise_rows, padded_size};
use crate::feature_map::{for_chunks, Exec, FeatureMap, MapView};
use crate::geometry::{geometry_of, Geometry};
use crate::layers::PreparedConv;
use crate::panels::{gemm_lines, Epilogue};
use crate::pool;
use crate::reduce::{channel_sums, total_sums};
use effnet_arch::Padding;
use std::ops::Range;

/// Output rows convolved per step.
const TILE_ROWS: usize = 8;

/// `depthwise(expand(x))` with both convolutions' bias and activation, and the per-channel sums of the
/// result when `with_sums` (else empty); split across the rayon pool by bands of output rows when
/// `exec.parallel`.
pub fn expand_depthwise(
    x: &FeatureMap,
    expand: &PreparedConv,
    depthwise: &PreparedConv,
    padding: Padding,
    exec: Exec,
    with_sums: bool,
) -> (FeatureMap, Vec<f64>) {
    let stage = Fused::new(x, Producer::Expand(expand), depthwise, padding, with_sums);
    stage.by_bands(exec)
}

/// `depthwise(dense(x))` for a dense k x k convolution `dense` (the stem), as [`expand_depthwise`].
pub fn dense_depthwise(
    x: &FeatureMap,
    dense: &PreparedConv,
    depthwise: &PreparedConv,
    padding: Padding,
    exec: Exec,
    with_sums: bool,
) -> (FeatureMap, Vec<f64>) {
    let g = geometry_of(x.height, x.width, dense, padding);
    let stage = Fused::new(x, Producer::Dense(dense, g), depthwise, padding, with_sums);
    stage.by_bands(exec)
}

/// The convolution that writes the depthwise convolution's input rows.
#[derive(Clone, Copy)]
pub(crate) enum Producer<'a> {
    /// A 1x1 convolution of the stage's input map.
    Expand(&'a PreparedConv),
    /// A dense k x k convolution of the stage's input, with its geometry on it.
    Dense(&'a PreparedConv, Geometry),
}

/// A fused stage: its operands and geometry. Split across threads either by bands of output rows
/// ([`Fused::band`]) or, for a block on a narrow map, by ranges of channels ([`Fused::channel_range`], run
/// by [`crate::channel_split`]): the expand GEMM then computes just a range's columns and the depthwise
/// convolution (per channel by nature) just its channels, so threads share no work at all.
pub(crate) struct Fused<'a> {
    x: &'a FeatureMap,
    producer: Producer<'a>,
    depthwise: &'a PreparedConv,
    g: Geometry,
    with_sums: bool,
    /// `[rows, columns]` of the producer's output, the depthwise convolution's input.
    size: [usize; 2],
    /// `[rows, columns]` of that input zero-padded. The buffered rows carry the padding, so every
    /// depthwise block runs the check-free interior kernel.
    padded: [usize; 2],
}

impl<'a> Fused<'a> {
    /// The stage on `x`; it takes the per-channel sums of its output if `with_sums`.
    pub(crate) fn new(
        x: &'a FeatureMap,
        producer: Producer<'a>,
        depthwise: &'a PreparedConv,
        padding: Padding,
        with_sums: bool,
    ) -> Self {
        let [height, width] = match producer {
            Producer::Expand(_) => [x.height, x.width],
            Producer::Dense(_, g) => [g.out_h, g.out_w],
        };
        let g = geometry_of(height, width, depthwise, padding);
        Self {
            x,
            producer,
            depthwise,
            g,
            with_sums,
            size: [height, width],
            padded: padded_size(g, depthwise, height, width),
        }
    }

    /// The whole output, split across the rayon pool by bands of output rows when `exec.parallel`, and
    /// the per-channel sums if pooling (else empty).
    fn by_bands(&self, exec: Exec) -> (FeatureMap, Vec<f64>) {
        let g = self.g;
        let ch = self.depthwise.out_channels;
        let row_len = g.out_w * ch;
        let mut out = pool::take(g.out_h * row_len);
        let bands = if exec.parallel {
            rayon::current_num_threads().clamp(1, g.out_h)
        } else {
            1
        };
        let rows_per_band = g.out_h.div_ceil(bands);
        let partial = for_chunks(&mut out, rows_per_band * row_len, bands > 1, |b, rows| {
            self.band(b * rows_per_band, rows)
        });
        let sums = total_sums(partial, if self.with_sums { ch } else { 0 });
        (FeatureMap::from_buffer(out, g.out_h, g.out_w, ch), sums)
    }

    /// Output rows and columns.
    pub(crate) fn output_size(&self) -> (usize, usize) {
        (self.g.out_h, self.g.out_w)
    }

    /// The output channels of the producer's `panels` for every pixel, into `out`; returns their sums if
    /// pooling.
    pub(crate) fn channel_range(&self, panels: Range<usize>, out: &mut [f32]) -> Vec<f64> {
        let cols = self.producer_conv().panels().columns(&panels);
        // This range's channels of the whole zero-padded input map.
        let [height, width] = self.padded;
        let mut expanded = pool::take(height * width * cols.len());
        self.produce_rows(0, height, panels, &mut expanded);
        let sums = self.convolve(&expanded, 0, cols, 0, out);
        pool::give(expanded);
        sums
    }
}

/// Zeroes what the image rows do not cover in `rows` of `row` floats: the rows outside `image` (a range of
/// row indices) and, in the image rows, everything outside `inner` (a range of floats within a row).
fn zero_borders(rows: &mut [f32], image: [usize; 2], inner: [usize; 2], row: usize) {
    let [first, end] = image;
    rows[..first * row].fill(0.0);
    rows[end * row..].fill(0.0);
    for line in rows[first * row..end * row].chunks_exact_mut(row) {
        line[..inner[0]].fill(0.0);
        line[inner[1]..].fill(0.0);
    }
}

impl Fused<'_> {
    /// The padded-map rows `[first, end)` that output rows `[o0, o1)` read.
    fn input_rows(&self, o0: usize, o1: usize) -> (usize, usize) {
        let (s, k) = (self.depthwise.stride, self.depthwise.kernel);
        let first = (o0 * s).min(self.padded[0]);
        let end = ((o1 - 1) * s + k).min(self.padded[0]);
        (first, end.max(first))
    }

    /// Writes the zero-padded input rows `[first, end)` of the padded map into `dst`, the channels of the
    /// producer's `panels` (all of them for a dense producer): the image rows among them in one GEMM call
    /// for an expand convolution, row by row for a dense one.
    fn produce_rows(&self, first: usize, end: usize, panels: Range<usize>, dst: &mut [f32]) {
        let ch = self.producer_conv().panels().columns(&panels).len();
        let [height, width] = self.size;
        let row = self.padded[1] * ch;
        // Padded rows `top..top + height` hold the image; the rest, and each row's margins, are zero.
        let (top, left) = (self.g.pad_top, self.g.pad_left);
        let lo = first.max(top).min(end);
        let image = lo..end.min(top + height).max(lo);
        let dst = &mut dst[..(end - first) * row];
        zero_borders(
            dst,
            [image.start - first, image.end - first],
            [left * ch, (left + width) * ch],
            row,
        );
        if image.is_empty() {
            return;
        }
        let out = &mut dst[(image.start - first) * row + left * ch..];
        match self.producer {
            Producer::Expand(expand) => {
                let cin = self.x.channels;
                let src = &self.x.data
                    [(image.start - top) * width * cin..(image.end - top) * width * cin];
                let lines = (width, row);
                gemm_lines(src, expand.panels(), epilogue(expand), lines, panels, out);
            }
            Producer::Dense(dense, g) => {
                assert_eq!(
                    panels,
                    0..dense.panels().count(),
                    "a dense producer makes every channel"
                );
                for (i, y) in image.map(|r| r - top).enumerate() {
                    dense_row(self.x, dense, g, y, &mut out[i * row..][..width * ch]);
                }
            }
        }
    }

    /// The convolution that makes the depthwise convolution's input.
    fn producer_conv(&self) -> &PreparedConv {
        match self.producer {
            Producer::Expand(conv) | Producer::Dense(conv, _) => conv,
        }
    }

    /// The depthwise convolution of the output rows from `o0` into `out`, from `rows`: rows of the padded
    /// input map from row `first` on, holding the depthwise convolution's channels `channels`. Returns the
    /// per-channel sums of `out` if pooling (else empty).
    fn convolve(
        &self,
        rows: &[f32],
        first: usize,
        channels: Range<usize>,
        o0: usize,
        out: &mut [f32],
    ) -> Vec<f64> {
        let c = channels.len();
        let width = self.padded[1];
        let view = MapView {
            data: rows,
            height: rows.len() / (width * c),
            width,
            channels,
        };
        // Row `first` of the padded map is row 0 of the view; no padding is left to apply.
        let g = Geometry {
            pad_top: first,
            pad_left: 0,
            ..self.g
        };
        depthwise_rows(&view, self.depthwise, g, o0, out);
        if self.with_sums {
            channel_sums(out, c)
        } else {
            Vec::new()
        }
    }

    /// Computes the band of output rows `first..` into `out`; returns their per-channel sums if pooling.
    fn band(&self, first: usize, out: &mut [f32]) -> Vec<f64> {
        let ch = self.depthwise.out_channels;
        let width = self.padded[1];
        let expanded_row = width * ch;
        let out_row = self.g.out_w * ch;
        let most = (TILE_ROWS - 1) * self.depthwise.stride + self.depthwise.kernel;
        let all_panels = 0..self.producer_conv().panels().count();
        let mut buffer = pool::take(most * expanded_row);
        let mut tile_sums = Vec::new();
        // The expanded rows `[held.0, held.1)` are in `buffer`, in order.
        let mut held = (0, 0);
        for (t, tile) in out.chunks_mut(TILE_ROWS * out_row).enumerate() {
            let o0 = first + t * TILE_ROWS;
            let (a, b) = self.input_rows(o0, o0 + tile.len() / out_row);
            // Keep the rows this tile shares with the last one, expand the rest after them.
            let keep_from = a.clamp(held.0, held.1);
            let kept = held.1 - keep_from;
            buffer.copy_within(
                (keep_from - held.0) * expanded_row..(held.1 - held.0) * expanded_row,
                0,
            );
            let new_first = a.max(held.1);
            self.produce_rows(
                new_first,
                b,
                all_panels.clone(),
                &mut buffer[kept * expanded_row..(b - a) * expanded_row],
            );
            held = (a, b);
            let rows = &buffer[..(b - a) * expanded_row];
            tile_sums.push(self.convolve(rows, a, 0..ch, o0, tile));
        }
        pool::give(buffer);
        total_sums(tile_sums, if self.with_sums { ch } else { 0 })
    }
}

/// A convolution's bias and activation, as a GEMM epilogue.
fn epilogue(c: &PreparedConv) -> Epilogue<'_> {
    Epilogue {
        bias: &c.bias,
        activation: c.activation,
        residual: None,
    }
}
