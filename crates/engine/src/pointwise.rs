//! 1x1 convolutions as GEMMs (`[pixels x in] * [in x out]`) with bias, activation, squeeze-excite's
//! channel scale and the residual fused in, split across threads by pixels or, on small maps, by output
//! channels.

use crate::buffer::Buffer;
use crate::feature_map::{for_chunks, Exec, FeatureMap};
use crate::layers::PreparedConv;
use crate::panels::{self, Epilogue, Panels};
use crate::pool;
use crate::vector::scale_rows;
use rayon::prelude::*;

/// Pixels per GEMM call: whole register tiles of every instruction set (12, 6 or 4 pixels), few enough
/// that a block's gated copy stays in cache.
const GEMM_ROWS: usize = 120;

/// `out = x * weight` for rows of `k` inputs, with the epilogue, one block of [`GEMM_ROWS`] pixels at a
/// time; `input` may scale the input channels first, replace the weights, or add a residual.
pub(crate) fn gemm_block(x: &[f32], k: usize, c: &PreparedConv, out: &mut [f32], input: GemmInput) {
    let n = c.out_channels;
    let weights = input.weight.unwrap_or(c.panels());
    for (i, block) in out.chunks_mut(GEMM_ROWS * n).enumerate() {
        let m = block.len() / n;
        let rows = &x[i * GEMM_ROWS * k..][..m * k];
        let epilogue = Epilogue {
            bias: &c.bias,
            activation: c.activation,
            residual: input.residual.map(|r| &r[i * GEMM_ROWS * n..][..m * n]),
        };
        match input.gate {
            // Squeeze-excite's channel scale on a copy of the block, still in cache for the GEMM.
            Some(gate) => {
                let scaled = scaled_copy(rows, gate);
                panels::gemm_rows(&scaled, weights.into(), epilogue, block);
                pool::give(scaled);
            }
            None => panels::gemm_rows(rows, weights.into(), epilogue, block),
        }
    }
}

/// `rows` with every pixel's channels multiplied by `gate`, in a pooled buffer.
fn scaled_copy(rows: &[f32], gate: &[f32]) -> Buffer {
    let mut scaled = pool::take(rows.len());
    scaled.copy_from_slice(rows);
    scale_rows(&mut scaled, gate);
    scaled
}

/// What a GEMM block adds to `x * weight`: a per-input-channel scale applied first, a residual added last.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GemmInput<'a> {
    /// Multiplies every input row channel by channel (squeeze-excite's gate).
    pub gate: Option<&'a [f32]>,
    /// Replaces the convolution's weights (the same weights with the gate folded in).
    pub weight: Option<&'a Panels>,
    /// Added to the output after the activation.
    pub residual: Option<&'a [f32]>,
}

/// An output buffer that parallel tasks write in disjoint parts through its raw pointer.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);

// SAFETY: the pointer is only written through in parts that the tasks' owners keep disjoint.
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The pointer (a method, so closures capture the `Sync` wrapper rather than the bare field).
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// [`gemm_block`] for maps with too few pixels to split by rows (the late 7 x 7 stages at batch 1): each
/// task computes an equal range of the output channels (whole panels) for every pixel.
fn gemm_columns(x: &[f32], k: usize, c: &PreparedConv, out: &mut [f32], input: GemmInput) {
    let n = c.out_channels;
    let m = out.len() / n;
    let weights = input.weight.unwrap_or(c.panels());
    let scaled = input.gate.map(|gate| scaled_copy(x, gate));
    let x = scaled.as_deref().unwrap_or(x);
    assert!(x.len() == m * k && input.residual.is_none_or(|r| r.len() == out.len()));
    let epilogue = Epilogue {
        bias: &c.bias,
        activation: c.activation,
        residual: input.residual,
    };
    let dst = SharedOut(out.as_mut_ptr());
    weights.per_thread().into_par_iter().for_each(|panels| {
        let dest = panels::Dest::rows(dst.ptr(), n, 0);
        // SAFETY: `out` holds the `m x n` outputs (asserted sizes), and each task writes only the columns
        // of its own panels.
        unsafe { panels::gemm(x, weights.into(), epilogue, dest, panels) };
    });
    if let Some(scaled) = scaled {
        pool::give(scaled);
    }
}

/// A 1x1 convolution as GEMM (`[pixels x in] * [in x out]`) with bias, activation and an optional residual
/// fused into one pass per block of pixels.
pub fn pointwise(
    x: &FeatureMap,
    c: &PreparedConv,
    residual: Option<&FeatureMap>,
    exec: Exec,
) -> FeatureMap {
    pointwise_gated(x, None, c, residual, exec)
}

/// [`pointwise`] of `x` with every input channel first multiplied by `gate` (squeeze-excite's scale):
/// folded into the weights when they are smaller than the map, else applied block by block inside the
/// GEMM's tasks; never in a pass of its own.
pub fn pointwise_gated(
    x: &FeatureMap,
    gate: Option<&[f32]>,
    c: &PreparedConv,
    residual: Option<&FeatureMap>,
    exec: Exec,
) -> FeatureMap {
    let (m, k, n) = (x.height * x.width, c.in_channels, c.out_channels);
    let mut out = pool::take(m * n);
    let residual = residual.map(|r| r.data.as_slice());
    // Scaling input channel j by g[j] equals scaling weight row j by g[j]: where the map has more pixels
    // than the layer has outputs, the weights are the smaller thing to scale.
    let folded = gate
        .filter(|_| m > n)
        .map(|gate| c.panels().scaled_rows(gate));
    let gate = gate.filter(|_| folded.is_none());
    if exec.parallel && m > GEMM_ROWS {
        // Equal blocks of at most GEMM_ROWS pixels, a multiple of the thread count of them, so no
        // thread is left with a short last block while the other waits (14 x 14 = 196 pixels would
        // otherwise be 128 + 68).
        let threads = rayon::current_num_threads();
        let blocks = threads * m.div_ceil(threads * GEMM_ROWS);
        let per_block = m.div_ceil(blocks);
        for_chunks(&mut out, per_block * n, true, |i, block| {
            let rows = block.len() / n;
            let input = GemmInput {
                gate,
                weight: folded.as_ref(),
                residual: residual.map(|r| &r[i * per_block * n..][..rows * n]),
            };
            let x = &x.data[i * per_block * k..][..rows * k];
            gemm_block(x, k, c, block, input);
        });
    } else {
        let input = GemmInput {
            gate,
            weight: folded.as_ref(),
            residual,
        };
        if exec.parallel {
            gemm_columns(&x.data, k, c, &mut out, input);
        } else {
            gemm_block(&x.data, k, c, &mut out, input);
        }
    }
    if let Some(weight) = folded {
        weight.recycle();
    }
    FeatureMap::from_buffer(out, x.height, x.width, n)
}
