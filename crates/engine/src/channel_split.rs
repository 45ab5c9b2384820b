//! One MBConv block on a narrow map, split across threads by ranges of its expanded channels all the way
//! from the expand convolution to the project convolution: how batch 1 runs B0's 28, 14 and 7 pixel wide
//! stages on several threads.
//!
//! Each thread takes a share of the expanded channels through the expand and depthwise convolutions and
//! its part of squeeze-excite's reduction (the sum over its channels). The one serial step of the block
//! adds those parts, a few dozen values. Then each thread computes its channels' gates, scales its
//! channels, and multiplies them by its rows of the project weights: a partial product over its input
//! channels. The partial products are added in a fixed order, so the result does not depend on which
//! thread finishes first.
//!
//! So every weight of the block is read by one thread, and the expanded map is never gathered into one
//! buffer. Splitting the project by output pixels instead made every thread read all of its weights, and
//! the squeeze-excite layers and the gate ran on one thread while the others waited.

use crate::activation::apply;
use crate::buffer::Buffer;
use crate::feature_map::FeatureMap;
use crate::fused::{Fused, Producer};
use crate::layers::PreparedBlock;
use crate::panels::{gemm_rows, Epilogue};
use crate::pool;
use crate::reduce::{add_in_order, means};
use crate::vector::{dense_vector, scale_rows, se_excite};
use effnet_arch::Padding;
use rayon::prelude::*;

/// Maps narrower than this are split by channels: on a 7 x 7 map two bands of rows of a 5 x 5 depthwise
/// would each expand 5 or 6 of the 7 input rows.
const SPLIT_CHANNELS_BELOW: usize = 32;

/// Whether [`block_by_channels`] can run `block` on `x` and is the better split: the block expands (so
/// its expanded channels are ranges of the expand panels), its projection has no activation (so partial
/// products add up), and the map is narrower than 32 pixels.
pub fn splits_by_channels(x: &FeatureMap, block: &PreparedBlock) -> bool {
    x.width < SPLIT_CHANNELS_BELOW && block.expand.is_some() && block.project.activation.is_none()
}

/// The block on `x`, split across the rayon pool's threads by ranges of the expand convolution's panels.
/// Every buffer is taken from and given back to the calling thread's pool, so no buffer drifts from one
/// thread's pool to another's.
///
/// # Panics
/// If the block does not expand or its projection has an activation (see [`splits_by_channels`]).
pub fn block_by_channels(x: &FeatureMap, block: &PreparedBlock, padding: Padding) -> FeatureMap {
    let expand = block.expand.as_ref().expect("an expanding block");
    let project = &block.project;
    assert!(project.activation.is_none(), "partial products add up");
    let stage = Fused::new(
        x,
        Producer::Expand(expand),
        &block.depthwise,
        padding,
        block.se.is_some(),
    );
    let (height, width) = stage.output_size();
    let pixels = height * width;
    let panels = expand.panels();
    // Each share: its panels of the expand weights and the channels they make.
    let shares: Vec<_> = panels
        .per_thread()
        .into_iter()
        .map(|range| (panels.columns(&range), range))
        .collect();
    // Each share's channels, every output pixel's in turn.
    let mut maps: Vec<Buffer> = shares
        .iter()
        .map(|(channels, _)| pool::take(pixels * channels.len()))
        .collect();
    // Expand and depthwise, and each share's part of squeeze-excite's reduction (before its bias).
    let squeezed: Vec<Vec<f32>> = maps
        .par_iter_mut()
        .zip(shares.par_iter())
        .map(|(map, (channels, range))| {
            let sums = stage.channel_range(range.clone(), map);
            block.se.as_ref().map_or_else(Vec::new, |(reduce, _)| {
                let r = reduce.out_channels;
                let rows = (&reduce.rows()[channels.start * r..], r);
                dense_vector(&means(sums, pixels), rows, &vec![0.0; r], None)
            })
        })
        .collect();
    // The reduction: the parts added in a fixed order, then bias and activation.
    let reduced = block.se.as_ref().map(|(reduce, _)| {
        let mut sum = reduce.bias.clone();
        add_in_order(&mut sum, &squeezed);
        apply(reduce.activation, &mut sum);
        sum
    });
    // Each share gated and multiplied by its rows of the project weights; the first share's product
    // carries the bias and the residual.
    let n = project.out_channels;
    let no_bias = vec![0f32; n];
    let mut products: Vec<Buffer> = shares.iter().map(|_| pool::take(pixels * n)).collect();
    products
        .par_iter_mut()
        .zip(maps.par_iter_mut())
        .zip(shares.par_iter())
        .enumerate()
        .for_each(|(i, ((product, map), (channels, _)))| {
            if let (Some((_, excite)), Some(reduced)) = (&block.se, &reduced) {
                scale_rows(map, &se_excite(reduced, excite, channels.clone()));
            }
            let first = i == 0;
            let epilogue = Epilogue {
                bias: if first { &project.bias } else { &no_bias },
                activation: None,
                residual: block.residual.then_some(&x.data[..]).filter(|_| first),
            };
            gemm_rows(
                map,
                project.panels().rows(channels.clone()),
                epilogue,
                product,
            );
        });
    maps.into_iter().for_each(pool::give);
    // The partial products added in a fixed order.
    let mut products = products.into_iter();
    let mut out = products.next().expect("at least one share");
    let rest: Vec<Buffer> = products.collect();
    add_in_order(&mut out, &rest);
    rest.into_iter().for_each(pool::give);
    FeatureMap::from_buffer(out, height, width, n)
}
