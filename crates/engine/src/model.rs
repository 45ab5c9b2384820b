//! The inference engine: a resolved [`Plan`] with prepared weights, run image by image (in parallel over a
//! batch).

use crate::channel_split::{block_by_channels, splits_by_channels};
use crate::dense::conv_dense;
use crate::depthwise::depthwise_pooling;
use crate::error::{EngineError, Result};
use crate::feature_map::{Exec, FeatureMap};
use crate::fused::{dense_depthwise, expand_depthwise};
use crate::geometry::geometry_of;
use crate::layers::{
    prepare_conv, prepare_linear, AppliedTo, PreparedBlock, PreparedConv, PreparedLinear,
};
use crate::pointwise::{pointwise, pointwise_gated};
use crate::pool;
use crate::reduce::{global_average, means};
use crate::vector::{linear, linear_batch, se_gate};
use effnet_arch::features::{FeatureLevel, FeatureLocation, FeatureTap};
use effnet_arch::{NetworkConfig, Padding, Plan};
use effnet_weights::{LoadedWeights, TensorSource};
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};

/// A network ready for inference.
pub struct Engine {
    config: NetworkConfig,
    padding: Padding,
    stem: PreparedConv,
    blocks: Vec<PreparedBlock>,
    head: PreparedConv,
    classifier: PreparedLinear,
    /// The feature levels at the bottleneck and at the expansion location.
    levels: (Vec<FeatureLevel>, Vec<FeatureLevel>),
}

impl Engine {
    /// Prepares `plan` with canonical-layout tensors (BN folded with the plan's epsilon), taking them from
    /// `tensors` one layer at a time: with an owned map or a generator as the source, the source's tensors
    /// and the prepared weights are never all in memory together.
    pub fn new(plan: &Plan, mut tensors: impl TensorSource) -> Self {
        let eps = plan.config.bn_eps;
        let tensors = &mut tensors;
        let stem = prepare_conv(&plan.stem, "stem", tensors, eps, AppliedTo::Maps);
        let blocks =
            plan.blocks
                .iter()
                .map(|b| {
                    let name = |part: &str| format!("blocks.{}.{part}", b.index);
                    PreparedBlock {
                        expand: b.expand.as_ref().map(|e| {
                            prepare_conv(e, &name("expand"), tensors, eps, AppliedTo::Maps)
                        }),
                        depthwise: prepare_conv(
                            &b.depthwise,
                            &name("depthwise"),
                            tensors,
                            eps,
                            AppliedTo::Maps,
                        ),
                        se: b.se.as_ref().map(|se| {
                            (
                                prepare_conv(
                                    &se.reduce,
                                    &name("se.reduce"),
                                    tensors,
                                    eps,
                                    AppliedTo::Vector,
                                ),
                                prepare_conv(
                                    &se.expand,
                                    &name("se.expand"),
                                    tensors,
                                    eps,
                                    AppliedTo::Vector,
                                ),
                            )
                        }),
                        project: prepare_conv(
                            &b.project,
                            &name("project"),
                            tensors,
                            eps,
                            AppliedTo::Maps,
                        ),
                        residual: b.residual,
                    }
                })
                .collect();
        let c = &plan.classifier;
        Self {
            config: plan.config.clone(),
            padding: plan.config.padding,
            stem,
            blocks,
            head: prepare_conv(&plan.head, "head", tensors, eps, AppliedTo::Maps),
            classifier: prepare_linear(c.in_features as usize, c.out_features as usize, tensors),
            levels: (
                plan.feature_levels(FeatureLocation::Bottleneck),
                plan.feature_levels(FeatureLocation::Expansion),
            ),
        }
    }

    /// Prepares loaded weights, consuming them tensor by tensor.
    pub fn from_weights(weights: LoadedWeights) -> Self {
        Self::new(&weights.plan, weights.tensors)
    }

    /// The network configuration (preprocessing included).
    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// Width of the pooled feature vector.
    pub fn feature_size(&self) -> usize {
        self.head.out_channels
    }

    /// Pooled features (global average of the head's output) of one normalised NHWC RGB image.
    pub fn pooled_features(&self, image: &FeatureMap) -> Result<Vec<f32>> {
        self.features_with(image, Exec { parallel: false })
    }

    /// The network's feature levels at `location` (timm's `feature_info`).
    pub fn feature_levels(&self, location: FeatureLocation) -> &[FeatureLevel] {
        match location {
            FeatureLocation::Bottleneck => &self.levels.0,
            FeatureLocation::Expansion => &self.levels.1,
        }
    }

    /// Multi-scale feature maps of one normalised NHWC RGB image: the levels numbered `indices` (positions
    /// in [`Engine::feature_levels`]) at `location`, in the order asked, each NHWC. The blocks run on the
    /// same kernels as [`Engine::logits`], split across the rayon pool, and stop after the last level
    /// asked for.
    pub fn features(
        &self,
        image: &FeatureMap,
        indices: &[usize],
        location: FeatureLocation,
    ) -> Result<Vec<FeatureMap>> {
        let levels = self.feature_levels(location);
        let taps = indices
            .iter()
            .map(|&i| {
                levels.get(i).map(|l| l.tap).ok_or_else(|| {
                    EngineError::BadInput(format!(
                        "feature level {i} does not exist: the network has levels 0..={}",
                        levels.len().saturating_sub(1)
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let exec = Exec { parallel: true };
        let found = with_a_worker_awake(|| self.tapped(image, &taps, exec))?;
        Ok(taps
            .iter()
            .map(|tap| {
                let (_, map) = found
                    .iter()
                    .find(|(t, _)| t == tap)
                    .expect("every tap is taken");
                map.clone()
            })
            .collect())
    }

    /// Runs the network up to the last of `taps`, copying out each tapped map as it passes.
    fn tapped(
        &self,
        image: &FeatureMap,
        taps: &[FeatureTap],
        exec: Exec,
    ) -> Result<Vec<(FeatureTap, FeatureMap)>> {
        let mut found = Vec::new();
        let copy = |x: &FeatureMap| FeatureMap::new(&x.data, x.height, x.width, x.channels);
        let last_block = taps
            .iter()
            .filter_map(|t| match t {
                FeatureTap::Stem => None,
                FeatureTap::BlockOutput(b) | FeatureTap::BeforeProject(b) => Some(b + 1),
            })
            .max()
            .unwrap_or(0);
        // The fused stem stage never holds the stem's output nor block 0's inner maps: tapping either
        // runs the stem alone.
        let touches_first = taps
            .iter()
            .any(|t| matches!(t, FeatureTap::Stem | FeatureTap::BeforeProject(0)));
        let (mut x, first) = if touches_first || self.blocks_in_stem_stage() == 0 {
            check_input(image)?;
            let stem = conv_dense(image, &self.stem, self.padding, exec);
            if taps.contains(&FeatureTap::Stem) {
                found.push((FeatureTap::Stem, copy(&stem)));
            }
            (stem, 0)
        } else {
            (self.stem_stage(image, exec)?, self.blocks_in_stem_stage())
        };
        if first == 1 && taps.contains(&FeatureTap::BlockOutput(0)) {
            found.push((FeatureTap::BlockOutput(0), copy(&x)));
        }
        for (i, b) in self.blocks.iter().enumerate().take(last_block).skip(first) {
            x = if taps.contains(&FeatureTap::BeforeProject(i)) {
                let (out, expanded) = self.block_with_expansion(b, x, exec);
                found.push((FeatureTap::BeforeProject(i), expanded));
                out
            } else {
                self.block(b, x, exec)
            };
            if taps.contains(&FeatureTap::BlockOutput(i)) {
                found.push((FeatureTap::BlockOutput(i), copy(&x)));
            }
        }
        pool::give(x.data);
        Ok(found)
    }

    /// One block on `x`, also returning the input of its projection (the depthwise output scaled by the
    /// squeeze-excite gate) as a map of its own.
    fn block_with_expansion(
        &self,
        b: &PreparedBlock,
        x: FeatureMap,
        exec: Exec,
    ) -> (FeatureMap, FeatureMap) {
        let (y, sums) = self.depthwise_stage(b, &x, exec);
        let gate = self.gate(b, &y, sums);
        let mut expanded = FeatureMap::new(&y.data, y.height, y.width, y.channels);
        if let Some(gate) = &gate {
            for pixel in expanded.data.chunks_mut(y.channels) {
                pixel.iter_mut().zip(gate).for_each(|(v, g)| *v *= g);
            }
        }
        let out = self.project(b, y, gate.as_deref(), b.residual.then_some(&x), exec);
        pool::give(x.data);
        (out, expanded)
    }

    /// Pooled features, splitting the image's work across the rayon pool when `exec.parallel`.
    fn features_with(&self, image: &FeatureMap, exec: Exec) -> Result<Vec<f32>> {
        let mut x = self.stem_stage(image, exec)?;
        for b in &self.blocks[self.blocks_in_stem_stage()..] {
            x = self.block(b, x, exec);
        }
        Ok(self.head_pooled(x, exec))
    }

    /// How many blocks [`Engine::stem_stage`] runs: the first block, when it neither expands nor adds a
    /// residual, so that the stem's output is read only by its depthwise convolution.
    fn blocks_in_stem_stage(&self) -> usize {
        let fused = self
            .blocks
            .first()
            .is_some_and(|b| b.expand.is_none() && !b.residual);
        usize::from(fused)
    }

    /// The stem convolution of a checked input image, and the first block too where
    /// [`Engine::blocks_in_stem_stage`] says so: then the stem is fused with that block's depthwise
    /// convolution, and its output (B0's largest map, 112 x 112 x 32) is never stored whole.
    fn stem_stage(&self, image: &FeatureMap, exec: Exec) -> Result<FeatureMap> {
        check_input(image)?;
        if self.blocks_in_stem_stage() == 0 {
            return Ok(conv_dense(image, &self.stem, self.padding, exec));
        }
        let b = &self.blocks[0];
        let with_sums = b.se.is_some();
        let (y, sums) = dense_depthwise(
            image,
            &self.stem,
            &b.depthwise,
            self.padding,
            exec,
            with_sums,
        );
        Ok(self.gated_project(b, y, sums, None, exec))
    }

    /// One MBConv block on `x` (whose buffer goes back to the pool).
    fn block(&self, b: &PreparedBlock, x: FeatureMap, exec: Exec) -> FeatureMap {
        if exec.parallel && splits_by_channels(&x, b) {
            let out = block_by_channels(&x, b, self.padding);
            pool::give(x.data);
            return out;
        }
        let (y, sums) = self.depthwise_stage(b, &x, exec);
        let out = self.gated_project(b, y, sums, b.residual.then_some(&x), exec);
        pool::give(x.data);
        out
    }

    /// A block's expand and depthwise convolutions on `x`: the expand convolution is fused into the
    /// depthwise pass, and the squeeze's channel sums (when the block has squeeze-excite) are taken in it.
    fn depthwise_stage(
        &self,
        b: &PreparedBlock,
        x: &FeatureMap,
        exec: Exec,
    ) -> (FeatureMap, Vec<f64>) {
        let with_sums = b.se.is_some();
        match &b.expand {
            Some(e) => expand_depthwise(x, e, &b.depthwise, self.padding, exec, with_sums),
            None => depthwise_pooling(x, &b.depthwise, self.padding, exec, with_sums),
        }
    }

    /// The squeeze-excite gate of a block from the channel `sums` of its depthwise output `y`.
    fn gate(&self, b: &PreparedBlock, y: &FeatureMap, sums: Vec<f64>) -> Option<Vec<f32>> {
        b.se.as_ref()
            .map(|(reduce, expand)| se_gate(&means(sums, y.height * y.width), reduce, expand))
    }

    /// The rest of a block after its depthwise convolution: the squeeze-excite gate from the channel
    /// `sums` of the depthwise output `y`, and the project convolution of the gated `y` (plus the
    /// residual). `y`'s buffer goes back to the pool.
    fn gated_project(
        &self,
        b: &PreparedBlock,
        y: FeatureMap,
        sums: Vec<f64>,
        residual: Option<&FeatureMap>,
        exec: Exec,
    ) -> FeatureMap {
        let gate = self.gate(b, &y, sums);
        self.project(b, y, gate.as_deref(), residual, exec)
    }

    /// The project convolution of `y` scaled by `gate` (plus the residual); `y`'s buffer goes back to the
    /// pool.
    fn project(
        &self,
        b: &PreparedBlock,
        y: FeatureMap,
        gate: Option<&[f32]>,
        residual: Option<&FeatureMap>,
        exec: Exec,
    ) -> FeatureMap {
        let out = pointwise_gated(&y, gate, &b.project, residual, exec);
        pool::give(y.data);
        out
    }

    /// The head convolution and the global average of its output.
    fn head_pooled(&self, x: FeatureMap, exec: Exec) -> Vec<f32> {
        let head = pointwise(&x, &self.head, None, exec);
        pool::give(x.data);
        let pooled = global_average(&head);
        pool::give(head.data);
        pooled
    }

    /// Pooled features of several images on the current thread. The blocks whose weights outnumber their
    /// input map's values (from the 14 x 14 stage of B0 on) run for every image before the next block
    /// starts, so each of their weights comes from memory once per group rather than once per image (at
    /// batch 1 the late layers spend a third of their time waiting for weights); earlier blocks run image
    /// by image, keeping each image's larger maps in cache from one block to the next.
    fn features_group(&self, images: &[FeatureMap]) -> Vec<Result<Vec<f32>>> {
        let serial = Exec { parallel: false };
        let first = self.blocks_in_stem_stage();
        let split = images.first().map_or(first, |image| {
            self.first_weight_heavy(image.height, image.width)
                .max(first)
        });
        let mut maps: Vec<Result<FeatureMap>> = images
            .iter()
            .map(|image| {
                let mut x = self.stem_stage(image, serial)?;
                for b in &self.blocks[first..split] {
                    x = self.block(b, x, serial);
                }
                Ok(x)
            })
            .collect();
        for b in &self.blocks[split..] {
            maps = maps
                .into_iter()
                .map(|map| map.map(|x| self.block(b, x, serial)))
                .collect();
        }
        maps.into_iter()
            .map(|map| map.map(|x| self.head_pooled(x, serial)))
            .collect()
    }

    /// Index of the first block whose weights outnumber the values of its input map, for an image of
    /// `height x width` (the number of blocks if none does).
    fn first_weight_heavy(&self, height: usize, width: usize) -> usize {
        let stem = geometry_of(height, width, &self.stem, self.padding);
        let (mut h, mut w) = (stem.out_h, stem.out_w);
        for (i, b) in self.blocks.iter().enumerate() {
            let convs = [Some(&b.depthwise), b.expand.as_ref(), Some(&b.project)];
            let se = b.se.iter().flat_map(|(r, e)| [r, e]);
            let weights: usize = convs
                .into_iter()
                .flatten()
                .chain(se)
                .map(|c| c.weight_count())
                .sum();
            let channels = b.expand.as_ref().unwrap_or(&b.depthwise).in_channels;
            if weights > h * w * channels {
                return i;
            }
            let g = geometry_of(h, w, &b.depthwise, self.padding);
            (h, w) = (g.out_h, g.out_w);
        }
        self.blocks.len()
    }

    /// The classifier applied to pooled features.
    pub fn classify(&self, features: &[f32]) -> Vec<f32> {
        linear(features, &self.classifier)
    }

    /// Logits of one image.
    pub fn logits(&self, image: &FeatureMap) -> Result<Vec<f32>> {
        Ok(self.classify(&self.pooled_features(image)?))
    }

    /// Pooled features of several images on the current rayon pool: when there are at least as many images
    /// as threads, each thread takes an equal group of them (running the late, weight-heavy blocks block by
    /// block over the group, so their weights are fetched once per group), otherwise one image at a time
    /// has its work split across the threads.
    pub fn pooled_features_batch(&self, images: &[FeatureMap]) -> Vec<Result<Vec<f32>>> {
        let threads = rayon::current_num_threads();
        if images.len() >= threads {
            let groups: Vec<_> = images
                .par_chunks(images.len().div_ceil(threads))
                .map(|group| self.features_group(group))
                .collect();
            groups.into_iter().flatten().collect()
        } else {
            let exec = Exec { parallel: true };
            with_a_worker_awake(|| {
                images
                    .iter()
                    .map(|image| self.features_with(image, exec))
                    .collect()
            })
        }
    }

    /// Logits of several images, threaded as [`Engine::pooled_features_batch`].
    pub fn logits_batch(&self, images: &[FeatureMap]) -> Vec<Result<Vec<f32>>> {
        let features = self.pooled_features_batch(images);
        let ok: Vec<&[f32]> = features.iter().filter_map(|f| f.as_deref().ok()).collect();
        let mut logits = linear_batch(&ok, &self.classifier).into_iter();
        features
            .into_iter()
            .map(|f| f.map(|_| logits.next().expect("one row per image")))
            .collect()
    }
}

/// Refuses an input that is not a non-empty RGB image.
fn check_input(image: &FeatureMap) -> Result<()> {
    if image.channels != 3 || image.height == 0 || image.width == 0 {
        return Err(EngineError::BadInput(format!(
            "expected a non-empty RGB image, got {}x{}x{}",
            image.height, image.width, image.channels
        )));
    }
    Ok(())
}

/// Runs `f` on the current rayon pool with one other worker kept spinning, taking the pool's jobs as they
/// appear, until `f` returns. An image split across threads is some forty short parallel regions with
/// serial steps between them; an idle worker falls asleep in those gaps and takes a futex wake-up, slow in
/// a virtual machine, to join the next region (about 110 context switches per B0 image on 2 threads). This
/// made batch 1 on 2 threads about 5% faster.
///
/// It cannot deadlock: the spinner is the oldest job in this thread's deque when `f` starts, so the first
/// thief takes it before any job of `f`, and no worker can be inside a job of `f` underneath it (a job that
/// `f` would wait on while the spinner waits for `f`). If this thread pops it back itself, it returns.
fn with_a_worker_awake<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let done = &AtomicBool::new(false);
    rayon::scope(|s| {
        // The worker running `f` (the scope body runs on one, even when called from outside the pool).
        let caller = rayon::current_thread_index();
        s.spawn(move |_| {
            if rayon::current_thread_index() == caller {
                return;
            }
            while !done.load(Ordering::Acquire) {
                if rayon::yield_now() != Some(rayon::Yield::Executed) {
                    std::hint::spin_loop();
                }
            }
        });
        let result = f();
        done.store(true, Ordering::Release);
        result
    })
}
