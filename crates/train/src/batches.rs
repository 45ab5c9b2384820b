//! Training batches: each epoch shuffles the images with a seed derived from `(seed, epoch)`, decodes and
//! augments them on worker threads (each image with its own seeded generator, so a batch does not depend on
//! the thread count) while the previous batch trains, and keeps decoded images in memory up to a budget.
//! An unreadable image is reported once and left out; the run goes on.

use crate::mixing::{mix_batch, Mixing};
use effnet_arch::preprocess::Preprocessing;
use effnet_data::augment::{augment, Augment};
use effnet_data::{decode, Sample};
use effnet_weights::random::mix;
use image::RgbImage;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Decoded images kept in memory at most (bytes).
pub const CACHE_BUDGET: usize = 2 << 30;

/// Images and labels of one step, NCHW.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `n * 3 * size * size` values, NCHW.
    pub images: Vec<f32>,
    /// Class of each image.
    pub labels: Vec<usize>,
    /// Side of each image.
    pub size: usize,
    /// With mixup or CutMix, the weight of each image's own label (its partner's gets the rest; see
    /// [`crate::mixing`]).
    pub mix: Option<f32>,
}

impl Batch {
    /// Images in the batch.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Converts an HWC image into CHW order, appending to `out`.
pub fn push_chw(out: &mut Vec<f32>, hwc: &[f32], pixels: usize) {
    for c in 0..3 {
        out.extend((0..pixels).map(|p| hwc[p * 3 + c]));
    }
}

/// Produces the augmented batches of every epoch.
pub struct TrainLoader {
    samples: Vec<Sample>,
    cache: Vec<OnceLock<Option<Arc<RgbImage>>>>,
    cached_bytes: AtomicUsize,
    reported: Mutex<HashSet<PathBuf>>,
    augment: Augment,
    preprocessing: Preprocessing,
    size: u32,
    batch: usize,
    seed: u64,
    mixing: Mixing,
    pool: rayon::ThreadPool,
}

/// A mixing of the run seed with an epoch and a position, so every image gets its own stream.
fn stream_seed(seed: u64, epoch: usize, index: usize) -> u64 {
    mix(seed
        ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03))
}

impl TrainLoader {
    /// A loader over `samples` producing `batch`-image batches at `size` pixels.
    pub fn new(
        samples: Vec<Sample>,
        augment: Augment,
        preprocessing: Preprocessing,
        size: u32,
        batch: usize,
        seed: u64,
        workers: usize,
    ) -> Self {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(workers.max(1))
            .build()
            .expect("a thread pool");
        Self {
            cache: (0..samples.len()).map(|_| OnceLock::new()).collect(),
            samples,
            cached_bytes: AtomicUsize::new(0),
            reported: Mutex::new(HashSet::new()),
            augment,
            preprocessing,
            size,
            batch: batch.max(1),
            seed,
            mixing: Mixing::default(),
            pool,
        }
    }

    /// The same loader, mixing its batches as `mixing` says.
    pub fn with_mixing(self, mixing: Mixing) -> Self {
        Self { mixing, ..self }
    }

    /// Optimizer steps per epoch: full batches only (a last partial batch is dropped, as timm does, so batch
    /// norm never sees a single image), or one batch when the data is smaller than a batch.
    pub fn steps_per_epoch(&self) -> usize {
        (self.samples.len() / self.batch).max(1)
    }

    fn image(
        &self,
        index: usize,
        on_skip: &(dyn Fn(&PathBuf, &str) + Sync),
    ) -> Option<Arc<RgbImage>> {
        if let Some(cached) = self.cache[index].get() {
            return cached.clone();
        }
        let path = &self.samples[index].path;
        let decoded = match decode(path) {
            Ok(img) => Some(Arc::new(img)),
            Err(e) => {
                if self
                    .reported
                    .lock()
                    .expect("not poisoned")
                    .insert(path.clone())
                {
                    on_skip(path, &e.to_string());
                }
                None
            }
        };
        let bytes = decoded.as_ref().map_or(0, |i| i.as_raw().len());
        if self.cached_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes <= CACHE_BUDGET {
            let _ = self.cache[index].set(decoded.clone());
        } else {
            self.cached_bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
        decoded
    }

    fn make_batch(
        &self,
        epoch: usize,
        positions: &[(usize, usize)],
        on_skip: &(dyn Fn(&PathBuf, &str) + Sync),
    ) -> Batch {
        let size = self.size as usize;
        let items: Vec<Option<(Vec<f32>, usize)>> = self.pool.install(|| {
            positions
                .par_iter()
                .map(|&(position, index)| {
                    let img = self.image(index, on_skip)?;
                    let mut rng =
                        rand::rngs::StdRng::seed_from_u64(stream_seed(self.seed, epoch, position));
                    let out = augment(
                        &img,
                        &self.augment,
                        &self.preprocessing,
                        self.size,
                        &mut rng,
                    );
                    Some((out.data, self.samples[index].label))
                })
                .collect()
        });
        let mut batch = Batch {
            images: Vec::with_capacity(positions.len() * 3 * size * size),
            labels: Vec::with_capacity(positions.len()),
            size,
            mix: None,
        };
        for (hwc, label) in items.into_iter().flatten() {
            push_chw(&mut batch.images, &hwc, size * size);
            batch.labels.push(label);
        }
        if self.mixing.is_on() && !batch.is_empty() {
            // The batch's own stream: past the images' positions, which the augmentation streams use.
            let first = positions.first().map_or(0, |p| p.0);
            let mut rng = rand::rngs::StdRng::seed_from_u64(stream_seed(
                self.seed,
                epoch,
                usize::MAX / 2 + first,
            ));
            mix_batch(&mut batch, &self.mixing, &mut rng);
        }
        batch
    }

    /// Runs `step` on every batch of `epoch` in order, preparing the next batch on the workers meanwhile.
    /// Stops at the first error `step` returns. `on_skip` hears about each unreadable image once.
    pub fn for_each_batch<E: Send>(
        &self,
        epoch: usize,
        on_skip: &(dyn Fn(&PathBuf, &str) + Sync),
        mut step: impl FnMut(Batch) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut order: Vec<usize> = (0..self.samples.len()).collect();
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(stream_seed(
            self.seed,
            epoch,
            usize::MAX,
        )));
        let steps = self.steps_per_epoch();
        let per_step = self.batch.min(order.len());
        let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(1);
        std::thread::scope(|scope| {
            scope.spawn(move || {
                for s in 0..steps {
                    let positions: Vec<(usize, usize)> = (s * per_step..(s + 1) * per_step)
                        .map(|p| (p, order[p]))
                        .collect();
                    if tx
                        .send(self.make_batch(epoch, &positions, on_skip))
                        .is_err()
                    {
                        break;
                    }
                }
            });
            for batch in rx {
                if batch.is_empty() {
                    continue;
                }
                step(batch)?;
            }
            Ok(())
        })
    }
}
