//! The expand 1x1 convolution fused with the depthwise convolution that reads it.
//!
//! Unfused, the expanded map (up to 112 x 112 x 96 floats, 4.8 MB, for B0) is written to memory by the
//! expand GEMM and read back by the depthwise kernel: on the early, wide stages that round trip through
//! memory rather than cache dominated the depthwise time. Here each band of output rows walks down the
//! image eight rows (`TILE_ROWS`) at a time, expanding only the input rows the next tile needs into a small
//! buffer (keeping the overlap rows from the previous tile) and convolving them while they are in cache.
//! The per-channel sums for squeeze-excite are taken in the same pass. The buffered rows carry the zero
//! padding, so every depthwise block takes the check-free interior path without a padded copy of the
//! whole map. Each expanded row is one GEMM call writing straight into its padded row (the AVX-512 GEMM
//! kernel packs nothing per call, so even a 7-pixel row makes an efficient one).

use crate::buffer::Buffer;
use crate::kernels::{
    channel_sums, depthwise_rows, for_chunks, gemm_block, geometry_of, padded_size, total_sums,
    Exec, FeatureMap, GemmInput, Geometry, MapView, SharedOut,
};
use crate::layers::PreparedConv;
use crate::panels::{self, Dest, Epilogue};
use crate::pool;
use effnet_arch::Padding;
use rayon::prelude::*;
use std::ops::Range;

/// Output rows convolved per step.
const TILE_ROWS: usize = 8;

/// Inputs narrower than this, split across threads, are split by channels rather than by bands of rows:
/// on a 7 x 7 map two bands of a 5 x 5 depthwise would each expand 5 or 6 of the 7 input rows.
const SPLIT_CHANNELS_BELOW: usize = 32;

/// `depthwise(expand(x))` with both convolutions' bias and activation, and the per-channel sums of the
/// result when `with_sums` (else empty).
pub fn expand_depthwise(
    x: &FeatureMap,
    expand: &PreparedConv,
    depthwise: &PreparedConv,
    padding: Padding,
    exec: Exec,
    with_sums: bool,
) -> (FeatureMap, Vec<f64>) {
    let g = geometry_of(x.height, x.width, depthwise, padding);
    let stage = Fused {
        x,
        expand,
        depthwise,
        g,
        with_sums,
        padded: padded_size(g, depthwise, x.height, x.width),
    };
    if exec.parallel && x.width < SPLIT_CHANNELS_BELOW {
        return stage.split_channels();
    }
    let ch = depthwise.out_channels;
    let row_len = g.out_w * ch;
    let mut out = pool::take(g.out_h * row_len);
    let bands = if exec.parallel {
        rayon::current_num_threads().clamp(1, g.out_h)
    } else {
        1
    };
    let rows_per_band = g.out_h.div_ceil(bands);
    let partial = for_chunks(&mut out, rows_per_band * row_len, bands > 1, |b, rows| {
        stage.band(b * rows_per_band, rows)
    });
    let sums = total_sums(partial, if with_sums { ch } else { 0 });
    (FeatureMap::from_buffer(out, g.out_h, g.out_w, ch), sums)
}

/// A fused expand + depthwise stage: its operands and geometry. Split across threads either by bands of
/// output rows ([`Fused::band`]) or, for narrow maps, by ranges of channels ([`Fused::split_channels`]):
/// the expand GEMM then computes just a range's columns and the depthwise convolution (per channel by
/// nature) just its channels, so threads share no work at all.
struct Fused<'a> {
    x: &'a FeatureMap,
    expand: &'a PreparedConv,
    depthwise: &'a PreparedConv,
    g: Geometry,
    with_sums: bool,
    /// `[rows, columns]` of the zero-padded expanded map. The buffered rows carry the padding, so every
    /// depthwise block runs the check-free interior kernel.
    padded: [usize; 2],
}

impl Fused<'_> {
    /// Runs equal ranges of the expand convolution's panels (output channels) on the rayon pool.
    fn split_channels(&self) -> (FeatureMap, Vec<f64>) {
        let (g, ch) = (self.g, self.depthwise.out_channels);
        let weights = self.expand.panels();
        let mut out = pool::take(g.out_h * g.out_w * ch);
        let dst = SharedOut(out.as_mut_ptr());
        let sums: Vec<Vec<f64>> = weights
            .per_thread()
            .into_par_iter()
            .map(|panels| {
                let cols = weights.columns(&panels);
                let (part, sums) = self.channel_range(panels, cols.clone());
                for (p, px) in part.chunks_exact(cols.len()).enumerate() {
                    // SAFETY: pixel `p`'s channels `cols` are inside `out` (`g.out_h * g.out_w` pixels of
                    // `ch`), and only this task writes them.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            px.as_ptr(),
                            dst.ptr().add(p * ch + cols.start),
                            cols.len(),
                        );
                    }
                }
                pool::give(part);
                sums
            })
            .collect();
        (
            FeatureMap::from_buffer(out, g.out_h, g.out_w, ch),
            sums.concat(),
        )
    }

    /// The output channels `cols` (those of the expand `panels`) for every pixel, in a pooled buffer, and
    /// their sums if pooling.
    fn channel_range(&self, panels: Range<usize>, cols: Range<usize>) -> (Buffer, Vec<f64>) {
        let (x, g, c) = (self.x, self.g, cols.len());
        let [height, width] = self.padded;
        let (top, left) = (g.pad_top, g.pad_left);
        // This range's channels of the zero-padded expanded map: borders zeroed, image rows expanded in.
        let mut expanded = pool::take(height * width * c);
        let row = width * c;
        expanded[..top * row].fill(0.0);
        expanded[(top + x.height) * row..].fill(0.0);
        let epilogue = Epilogue {
            bias: &self.expand.bias,
            activation: self.expand.activation,
            residual: None,
        };
        for (i, padded_row) in expanded[top * row..(top + x.height) * row]
            .chunks_exact_mut(row)
            .enumerate()
        {
            let (margin, rest) = padded_row.split_at_mut(left * c);
            let (inner, right) = rest.split_at_mut(x.width * c);
            margin.fill(0.0);
            right.fill(0.0);
            let dest = Dest {
                ptr: inner.as_mut_ptr(),
                row_len: c,
                first_col: cols.start,
            };
            let src = &x.data[i * x.width * x.channels..(i + 1) * x.width * x.channels];
            // SAFETY: `inner` holds this row's `x.width` pixels of exactly the channels `cols`, which
            // are the columns of `panels`, and is exclusively borrowed.
            unsafe { panels::gemm(src, self.expand.panels(), epilogue, dest, panels.clone()) };
        }
        // The depthwise convolution restricted to these channels.
        let taps = self.depthwise.kernel * self.depthwise.kernel;
        let ch = self.depthwise.out_channels;
        let weight = (0..taps)
            .flat_map(|t| &self.depthwise.weight[t * ch..][cols.clone()])
            .copied()
            .collect();
        let sub = PreparedConv::new(
            (c, c),
            (self.depthwise.kernel, self.depthwise.stride),
            weight,
            self.depthwise.bias[cols.clone()].to_vec(),
            self.depthwise.activation,
        );
        let mut out = pool::take(g.out_h * g.out_w * c);
        let view = MapView {
            data: &expanded,
            height,
            width,
        };
        let inner = Geometry {
            pad_top: 0,
            pad_left: 0,
            ..g
        };
        depthwise_rows(&view, &sub, inner, 0, &mut out);
        pool::give(expanded);
        let sums = if self.with_sums {
            channel_sums(&out, c)
        } else {
            Vec::new()
        };
        (out, sums)
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

    /// Writes the expanded, zero-padded rows `[first, end)` of the padded map into `dst`.
    fn expand_rows(&self, first: usize, end: usize, dst: &mut [f32]) {
        let (x, ch) = (self.x, self.depthwise.out_channels);
        let (width, cin) = (x.width, x.channels);
        // Padded rows `top..top + height` hold the image; the rest, and each row's margins, are zero.
        let (top, left) = (self.g.pad_top, self.g.pad_left);
        let image = first.clamp(top, top + x.height) - top..end.clamp(top, top + x.height) - top;
        for (r, row) in (first..end).zip(dst.chunks_exact_mut(self.padded[1] * ch)) {
            let Some(i) = r.checked_sub(top).filter(|i| image.contains(i)) else {
                row.fill(0.0);
                continue;
            };
            let (margin, rest) = row.split_at_mut(left * ch);
            let (inner, right) = rest.split_at_mut(width * ch);
            margin.fill(0.0);
            right.fill(0.0);
            let src = &x.data[i * width * cin..(i + 1) * width * cin];
            gemm_block(src, cin, self.expand, inner, GemmInput::default());
        }
    }

    /// Computes the band of output rows `first..` into `out`; returns their per-channel sums if pooling.
    fn band(&self, first: usize, out: &mut [f32]) -> Vec<f64> {
        let ch = self.depthwise.out_channels;
        let width = self.padded[1];
        let expanded_row = width * ch;
        let out_row = self.g.out_w * ch;
        let most = (TILE_ROWS - 1) * self.depthwise.stride + self.depthwise.kernel;
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
            self.expand_rows(
                new_first,
                b,
                &mut buffer[kept * expanded_row..(b - a) * expanded_row],
            );
            held = (a, b);
            let view = MapView {
                data: &buffer[..(b - a) * expanded_row],
                height: b - a,
                width,
            };
            // Row `a` of the padded map is row 0 of the view; no padding is left to apply.
            let g = Geometry {
                pad_top: a,
                pad_left: 0,
                ..self.g
            };
            depthwise_rows(&view, self.depthwise, g, o0, tile);
            if self.with_sums {
                tile_sums.push(channel_sums(tile, ch));
            }
        }
        pool::give(buffer);
        total_sums(tile_sums, if self.with_sums { ch } else { 0 })
    }
}
