//! The training loop: builds the network (pretrained backbone with a new classifier, from-scratch
//! initialisation, or the checkpoint of a run being resumed), trains epoch by epoch with the configured
//! recipe, evaluates on the validation images through the inference engine, and commits a checkpoint
//! after every epoch.

use crate::batches::{Batch, TrainLoader};
use crate::config::TrainConfig;
use crate::ema::Ema;
use crate::error::{Result, TrainError};
use crate::evaluate::{evaluate, Evaluation};
use crate::init::{initial_weights, new_classifier};
use crate::mixing::soft_targets;
use crate::model::{EfficientNet, Tensors};
use crate::run::{Checkpoint, EpochRecord, RunDir, RunState};
use crate::schedule::Schedule;
use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{activation, Bytes, Device, Tensor, TensorData};
use effnet_arch::memory::RECIPE_PARAMETER_COPIES;
use effnet_arch::preprocess::Preprocessing;
use effnet_arch::{resolve, Plan};
use effnet_data::augment::{Augment, RandAugment};
use effnet_data::{ImageFolder, Sample};
use effnet_engine::Engine;
use effnet_weights::{load, LoadOptions, Provenance, WeightMetadata};
use std::path::Path;
use std::time::Instant;

/// Progress of the current epoch, reported after every step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepProgress {
    /// Steps done in this epoch.
    pub step: usize,
    /// Steps in the epoch.
    pub steps: usize,
    /// Mean loss over the epoch so far.
    pub loss: f64,
    /// Accuracy over the epoch so far.
    pub accuracy: f64,
    /// Training images per second so far.
    pub images_per_sec: f64,
    /// Current learning rate.
    pub lr: f64,
}

/// Hears about a run's progress (the command line draws progress bars from it).
pub trait Observer: Sync {
    /// An epoch begins.
    fn epoch_started(&self, _epoch: usize, _epochs: usize, _steps: usize) {}
    /// A step finished.
    fn step_finished(&self, _progress: &StepProgress) {}
    /// An epoch finished and its checkpoint is committed.
    fn epoch_finished(&self, _record: &EpochRecord, _state: &RunState, _evaluation: &Evaluation) {}
    /// An image could not be read and is left out of the run (reported once per file).
    fn image_skipped(&self, _path: &Path, _reason: &str) {}
}

/// An observer that ignores everything.
pub struct Silent;

impl Observer for Silent {}

/// Training and validation images with their classes.
pub struct Datasets {
    /// Training images.
    pub train: ImageFolder,
    /// Validation images (same classes).
    pub val: ImageFolder,
}

impl Datasets {
    /// The training folder and either the validation folder or a seeded split of the training one.
    pub fn open(config: &TrainConfig) -> Result<Self> {
        let all = ImageFolder::open(&config.data).map_err(data_error)?;
        if all.classes.len() < 2 {
            return Err(TrainError::data(
                &config.data,
                format!(
                    "training needs at least two classes, found {} ({})",
                    all.classes.len(),
                    all.classes.join(", ")
                ),
            ));
        }
        let sets = match &config.val {
            Some(val) => {
                let val = ImageFolder::open(val).map_err(data_error)?;
                all.check_same_classes(&val).map_err(data_error)?;
                Self { train: all, val }
            }
            None => {
                let (train, val) = all.split(config.val_fraction, config.seed);
                if val.samples.is_empty() {
                    return Err(TrainError::data(
                        &config.data,
                        "too few images to hold any out for validation; give a --val folder",
                    ));
                }
                Self { train, val }
            }
        };
        every_class_readable(&sets.train, "training")?;
        every_class_readable(&sets.val, "validation")?;
        Ok(sets)
    }
}

/// Checks that every class of `set` has at least one image that decodes, trying each class's images in
/// turn: a class whose images are all unreadable would silently drop out of training.
fn every_class_readable(set: &ImageFolder, split: &str) -> Result<()> {
    let counts = set.class_counts();
    for (label, class) in set.classes.iter().enumerate() {
        let mut images = set.samples.iter().filter(|s| s.label == label);
        let mut first_error = None;
        if !images.any(|s| match effnet_data::decode(&s.path) {
            Ok(_) => true,
            Err(e) => {
                first_error.get_or_insert(e.to_string());
                false
            }
        }) {
            return Err(TrainError::data(
                &set.root,
                format!(
                    "class `{class}` has no readable {split} image ({} files; {})",
                    counts[label],
                    first_error.unwrap_or_else(|| "none at all".into())
                ),
            ));
        }
    }
    Ok(())
}

fn data_error(e: effnet_data::DataError) -> TrainError {
    match e {
        effnet_data::DataError::Image { path, reason }
        | effnet_data::DataError::TooLarge { path, reason }
        | effnet_data::DataError::Input { path, reason } => TrainError::data(path, reason),
    }
}

/// The network a run starts from: its plan at the training resolution, the weights, and their metadata.
struct Start {
    plan: Plan,
    tensors: Tensors,
    metadata: WeightMetadata,
}

fn start_from_config(config: &TrainConfig, classes: &[String]) -> Result<Start> {
    let (mut network, mut tensors, provenance) = match &config.weights {
        Some(path) => {
            let options = LoadOptions {
                model: config.network.clone(),
                padding: config.weights_conventions.map(|c| c.0),
                bn_eps: config.weights_conventions.map(|c| c.1),
                ..LoadOptions::default()
            };
            let loaded = load(path, &options)?;
            let provenance = Provenance {
                source: format!("fine-tuned by effnet train from {}", path.display()),
                license: loaded.provenance.license.clone(),
                source_sha256: effnet_weights::load::sha256_of_weights(path)?,
            };
            (loaded.config, Some(loaded.tensors), provenance)
        }
        None => {
            let network = config.network.clone().ok_or_else(|| {
                TrainError::Options("training from scratch needs a model (--model)".into())
            })?;
            let provenance = Provenance {
                source: "trained from scratch by effnet train".into(),
                ..Provenance::default()
            };
            (network, None, provenance)
        }
    };
    network.num_classes = classes.len() as u32;
    network.resolution = config.img_size;
    network.dropout = config.dropout.unwrap_or(network.dropout);
    network.drop_path_rate = config.drop_path.unwrap_or(network.drop_path_rate);
    let plan = resolve(&network)?;
    let tensors = match tensors.take() {
        Some(mut pretrained) => {
            new_classifier(&plan, &mut pretrained, config.seed);
            pretrained
        }
        None => initial_weights(&plan, config.seed),
    };
    Ok(Start {
        metadata: WeightMetadata {
            config: network,
            labels: classes.to_vec(),
            provenance,
        },
        plan,
        tensors,
    })
}

fn start_from_checkpoint(
    run: &RunDir,
    state: &RunState,
    classes: &[String],
) -> Result<(Start, Checkpoint)> {
    let (checkpoint, metadata) = run.read_checkpoint(state)?;
    if metadata.labels != classes {
        return Err(TrainError::run(
            &run.root,
            format!(
                "the run was trained on classes [{}], but the data now has [{}]",
                metadata.labels.join(", "),
                classes.join(", ")
            ),
        ));
    }
    let plan = resolve(&metadata.config)?;
    Ok((
        Start {
            plan,
            tensors: checkpoint.model.clone(),
            metadata,
        },
        checkpoint,
    ))
}

fn smoothed_cross_entropy(logits: Tensor<2>, batch: &Batch, smoothing: f64) -> Tensor<1> {
    let [n, classes] = logits.dims();
    let target = soft_targets(batch, classes, smoothing);
    let target = Tensor::<2>::from_data(TensorData::new(target, [n, classes]), &logits.device());
    let log_p = activation::log_softmax(logits, 1);
    (log_p * target).sum_dim(1).mean().neg()
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec()
        .expect("converted to f32")
}

fn correct(logits: &[f32], labels: &[usize]) -> usize {
    let classes = logits.len() / labels.len().max(1);
    logits
        .chunks(classes)
        .zip(labels)
        .filter(|(row, &label)| {
            let best = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i);
            best == label
        })
        .count()
}

/// One optimizer step on `batch`; returns the updated model, the loss and the number of correct images.
pub(crate) fn train_step(
    model: EfficientNet,
    optimizer: &mut ModuleOptimizer,
    mut batch: Batch,
    lr: f64,
    smoothing: f64,
    device: &Device,
) -> (EfficientNet, f64, usize) {
    let n = batch.len();
    let x = Tensor::<4>::from_data(
        TensorData::new(
            std::mem::take(&mut batch.images),
            [n, 3, batch.size, batch.size],
        ),
        device,
    );
    let logits = model.forward(x);
    let hits = correct(&host(logits.clone().detach()), &batch.labels);
    let loss = smoothed_cross_entropy(logits, &batch, smoothing);
    let loss_value = f64::from(host(loss.clone().detach())[0]);
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    (optimizer.step(lr, model, grads), loss_value, hits)
}

/// Where a run trains.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accelerator {
    /// burn's flex CPU backend.
    #[default]
    Cpu,
    /// burn's wgpu backend (Vulkan, Metal or DX12), in builds with the `wgpu` feature.
    Wgpu,
}

impl Accelerator {
    /// Parses a command-line name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "cpu" => Some(Self::Cpu),
            "wgpu" | "gpu" => Some(Self::Wgpu),
            _ => None,
        }
    }

    /// The device (without autodiff) the model and its tensors live on.
    pub fn device(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::flex()),
            #[cfg(feature = "wgpu")]
            Self::Wgpu => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
            #[cfg(not(feature = "wgpu"))]
            Self::Wgpu => Err(TrainError::Options(
                "this build has no GPU backend: build effnet with `--features wgpu`".into(),
            )),
        }
    }
}

/// f32 copies of the parameters that [`time_train_steps`] keeps: the weights, their gradients and
/// RMSProp's mean square and momentum (it keeps no moving average).
pub const TIMED_STEP_PARAMETER_COPIES: u64 = 4;

/// Training steps of a network on a fixed random batch, for timing: the model, its TF-RMSProp optimizer
/// and the batch are built once, and each [`TimedSteps::step`] runs one forward, backward and update.
pub struct TimedSteps {
    model: Option<EfficientNet>,
    optimizer: ModuleOptimizer,
    images: Vec<f32>,
    labels: Vec<usize>,
    size: usize,
    device: Device,
}

impl TimedSteps {
    /// `plan` with its initial random weights (seed 0), and `batch` images of fixed random values at the
    /// plan's resolution with labels cycling through the classes.
    pub fn new(plan: &Plan, batch: usize) -> Result<Self> {
        let base = Accelerator::Cpu.device()?;
        let device = base.clone().autodiff();
        let model = EfficientNet::trainable(plan, &initial_weights(plan, 0), &base)?;
        let size = plan.config.resolution as usize;
        Ok(Self {
            model: Some(model),
            optimizer: crate::optim::OptimizerKind::Rmsprop.init(1e-5),
            labels: (0..batch)
                .map(|i| i % plan.config.num_classes as usize)
                .collect(),
            images: (0..batch * 3 * size * size)
                .map(|i| ((i * 7919) % 255) as f32 / 127.5 - 1.0)
                .collect(),
            size,
            device,
        })
    }

    /// One training step (forward, label-smoothed loss, backward, update at rate 1e-3); returns its loss.
    pub fn step(&mut self) -> f64 {
        let batch = Batch {
            images: self.images.clone(),
            labels: self.labels.clone(),
            size: self.size,
            mix: None,
        };
        let model = self
            .model
            .take()
            .expect("the model is put back after every step");
        let (model, loss, _) =
            train_step(model, &mut self.optimizer, batch, 1e-3, 0.1, &self.device);
        self.model = Some(model);
        loss
    }
}

/// Times `steps` training steps (forward, backward, optimizer) of `plan` at `batch` images on random data,
/// after one warm-up step; returns the median seconds per step.
pub fn time_train_steps(plan: &Plan, batch: usize, steps: usize) -> Result<f64> {
    let mut stepper = TimedSteps::new(plan, batch)?;
    stepper.step();
    let mut times: Vec<f64> = (0..steps.max(1))
        .map(|_| {
            let t = Instant::now();
            stepper.step();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// How a call to [`train`] begins.
#[derive(Debug, Clone)]
pub enum Begin {
    /// A new run with these settings (written to the run folder).
    New(Box<TrainConfig>),
    /// Continue the run in the folder with its own settings, optionally extended to `epochs`.
    Resume {
        /// A new total number of epochs.
        epochs: Option<usize>,
    },
}

/// Refuses a run whose planned memory (activations of a batch, weights and the optimizer's copies) is
/// more than the machine has available.
fn ensure_training_memory(config: &TrainConfig, plan: &Plan) -> Result<()> {
    let parameter_copies = RECIPE_PARAMETER_COPIES - u64::from(config.ema.is_none());
    let needed =
        effnet_arch::account(plan).training_memory_bytes(config.batch as u64, parameter_copies);
    effnet_data::system::ensure_memory(
        &format!(
            "training {} at {} px, batch {}",
            plan.config.name, config.img_size, config.batch
        ),
        needed,
    )
    .map_err(TrainError::Options)
}

/// The trainable network a run starts from, with the run's batch-norm momentum.
fn new_model(config: &TrainConfig, start: &Start, base_device: &Device) -> Result<EfficientNet> {
    let mut model = EfficientNet::trainable(&start.plan, &start.tensors, base_device)?;
    model.set_bn_momentum(config.bn_momentum);
    Ok(model)
}

/// The augmented batches of the run's training images.
fn train_loader(
    config: &TrainConfig,
    data: &Datasets,
    preprocessing: Preprocessing,
) -> TrainLoader {
    let augment = Augment {
        scale: (config.min_crop, 1.0),
        flip: config.flip,
        rand_augment: config.rand_augment.map(|r| RandAugment { n: r.n, m: r.m }),
        ..Augment::default()
    };
    TrainLoader::new(
        data.train.samples.clone(),
        augment,
        preprocessing,
        config.img_size,
        config.batch,
        config.seed,
        config.workers,
    )
    .with_mixing(config.mixing)
}

/// A new run, ready for its first step: what [`prepare`] sets up.
pub struct Prepared {
    /// The network with its starting weights.
    pub model: EfficientNet,
    /// The optimizer, fresh.
    pub optimizer: ModuleOptimizer,
    /// The augmented training batches.
    pub loader: TrainLoader,
    /// The device the steps run on (with autodiff).
    pub device: Device,
}

/// Seeds `device`'s random stream (dropout and drop-path masks) for `epoch` of a run seeded `seed`, so
/// that a run, its resumption and its range test draw the same masks every time.
pub(crate) fn seed_epoch(device: &Device, seed: u64, epoch: usize) {
    device.seed(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
}

/// Checks `config`'s options and that its device is available: what a run checks before it reads any
/// image.
pub fn check_options(config: &TrainConfig) -> Result<()> {
    validate(config)?;
    config.accelerator.device().map(drop)
}

/// Sets up a new run of `config` without a run folder (the learning-rate range test's start).
pub fn prepare(config: &TrainConfig) -> Result<Prepared> {
    validate(config)?;
    let base_device = config.accelerator.device()?;
    let data = Datasets::open(config)?;
    let start = start_from_config(config, &data.train.classes)?;
    ensure_training_memory(config, &start.plan)?;
    Ok(Prepared {
        model: new_model(config, &start, &base_device)?,
        optimizer: config.optimizer.init(config.weight_decay),
        loader: train_loader(config, &data, start.metadata.config.preprocessing),
        device: base_device.autodiff(),
    })
}

/// Runs a new training run in `run`, or continues the one there, and returns its final state.
pub fn train(run: &RunDir, begin: Begin, observer: &dyn Observer) -> Result<RunState> {
    let resume = matches!(begin, Begin::Resume { .. });
    // A resumed run's folder is held from the start (its settings may be rewritten below); a new one's
    // just before it is created, so that bad options or data leave no folder behind.
    let resumed_lock = if resume { Some(run.lock()?) } else { None };
    let (config, mut state) = match begin {
        Begin::New(config) => (*config, RunState::default()),
        Begin::Resume { epochs } => {
            let mut saved = run.read_config()?;
            let state = run.read_state()?;
            if let Some(epochs) = epochs.filter(|&e| e != saved.epochs) {
                if epochs < state.epoch {
                    return Err(TrainError::Options(format!(
                        "--epochs {epochs} is fewer than the {} epochs the run has already trained",
                        state.epoch
                    )));
                }
                saved.epochs = epochs;
                run.write_config(&saved)?;
            }
            (saved, state)
        }
    };
    validate(&config)?;
    let base_device = config.accelerator.device()?;
    let data = Datasets::open(&config)?;
    let classes = data.train.classes.clone();
    let (start, checkpoint) = if state.epoch > 0 {
        let (start, checkpoint) = start_from_checkpoint(run, &state, &classes)?;
        (start, Some(checkpoint))
    } else {
        (start_from_config(&config, &classes)?, None)
    };
    ensure_training_memory(&config, &start.plan)?;
    let _lock = match resumed_lock {
        Some(lock) => lock,
        None => {
            let lock = run.lock()?;
            run.create(&config)?;
            lock
        }
    };
    let device = base_device.clone().autodiff();
    let mut model = new_model(&config, &start, &base_device)?;
    let mut optimizer = config.optimizer.init(config.weight_decay);
    let mut ema = config
        .ema
        .map(|decay| Ema::new(&model, decay, state.ema_updates));
    if let Some(checkpoint) = checkpoint {
        optimizer = optimizer
            .from_bytes(Bytes::from_bytes_vec(checkpoint.optimizer))
            .map_err(|e| {
                TrainError::run(
                    &run.root,
                    format!("the optimizer state is unreadable: {e:?}"),
                )
            })?;
        if let (Some(ema), Some(tensors)) = (ema.as_mut(), checkpoint.ema.as_ref()) {
            ema.model = EfficientNet::new(&start.plan, tensors, &base_device)?;
        }
    }
    let preprocessing = start.metadata.config.preprocessing;
    let loader = train_loader(&config, &data, preprocessing);
    let schedule = Schedule {
        base_lr: config.lr,
        warmup_epochs: config.warmup_epochs,
        decay: config.decay,
        steps_per_epoch: loader.steps_per_epoch(),
        epochs: config.epochs,
    };
    let on_skip = |path: &std::path::PathBuf, reason: &str| observer.image_skipped(path, reason);
    for epoch in state.epoch + 1..=config.epochs {
        let started = Instant::now();
        seed_epoch(&device, config.seed, epoch);
        model = model.with_frozen_backbone(epoch <= config.freeze_epochs);
        observer.epoch_started(epoch, config.epochs, schedule.steps_per_epoch);
        let (mut loss_sum, mut hits, mut seen, mut steps, mut lr) =
            (0.0, 0usize, 0usize, 0usize, 0.0);
        let mut current = Some(model);
        loader.for_each_batch(epoch, &on_skip, |batch| -> Result<()> {
            lr = schedule.lr(state.step);
            let n = batch.len();
            let (m, loss, h) = train_step(
                current.take().expect("the model is put back after every step"),
                &mut optimizer,
                batch,
                lr,
                config.label_smoothing,
                &device,
            );
            if !loss.is_finite() {
                return Err(TrainError::Options(format!(
                    "the loss became {loss} at epoch {epoch}, step {}; lower the learning rate (--lr)",
                    steps + 1
                )));
            }
            if let Some(ema) = ema.as_mut() {
                ema.update(&m);
            }
            current = Some(m);
            state.step += 1;
            steps += 1;
            loss_sum += loss * n as f64;
            hits += h;
            seen += n;
            observer.step_finished(&StepProgress {
                step: steps,
                steps: schedule.steps_per_epoch,
                loss: loss_sum / seen as f64,
                accuracy: hits as f64 / seen as f64,
                images_per_sec: seen as f64 / started.elapsed().as_secs_f64(),
                lr,
            });
            Ok(())
        })?;
        model = current.expect("the model is put back after every step");
        let train_seconds = started.elapsed().as_secs_f64();
        // The trained weights go into the checkpoint; evaluation and export use the average when there is one.
        let trained = model.valid().export();
        let weights = match ema.as_ref() {
            Some(ema) => ema.model.export(),
            None => trained.clone(),
        };
        let engine = Engine::new(&start.plan, &weights);
        let evaluation = evaluate(
            &engine,
            &data.val.samples,
            &classes,
            &preprocessing,
            config.img_size,
        );
        for (path, reason) in &evaluation.skipped {
            observer.image_skipped(path, reason);
        }
        let record = EpochRecord {
            epoch,
            train_loss: loss_sum / seen.max(1) as f64,
            train_accuracy: hits as f64 / seen.max(1) as f64,
            val_loss: evaluation.loss,
            val_accuracy: evaluation.accuracy,
            val_top5: evaluation.top5,
            lr,
            images_per_sec: seen as f64 / train_seconds,
            seconds: started.elapsed().as_secs_f64(),
        };
        state.epoch = epoch;
        state.ema_updates = ema.as_ref().map_or(0, |e| e.updates);
        state.records.push(record.clone());
        let improved = state.best_epoch == 0 || evaluation.accuracy > state.best_accuracy;
        if improved {
            state.best_accuracy = evaluation.accuracy;
            state.best_epoch = epoch;
        }
        let mut metadata = start.metadata.clone();
        metadata.provenance.source =
            format!("{} (epoch {epoch})", start.metadata.provenance.source);
        if improved {
            run.write_weights(&run.best_path(), &weights, &metadata)?;
        }
        run.write_weights(&run.last_path(), &weights, &metadata)?;
        let optimizer_bytes = optimizer.into_bytes().map_err(|e| {
            TrainError::run(
                &run.root,
                format!("cannot encode the optimizer state: {e:?}"),
            )
        })?;
        let checkpoint = Checkpoint {
            model: trained,
            ema: ema.as_ref().map(|e| e.model.export()),
            optimizer: optimizer_bytes.to_vec(),
        };
        run.commit(&state, &checkpoint, &start.metadata)?;
        observer.epoch_finished(&record, &state, &evaluation);
    }
    Ok(state)
}

fn validate(config: &TrainConfig) -> Result<()> {
    let checks = [
        (config.epochs == 0, "--epochs must be at least 1"),
        (config.batch == 0, "--batch must be at least 1"),
        (config.img_size < 16, "--img-size must be at least 16"),
        (
            !(config.lr > 0.0 && config.lr.is_finite()),
            "--lr must be positive",
        ),
        (
            !(0.0..1.0).contains(&config.label_smoothing),
            "--label-smoothing must be in [0, 1)",
        ),
        (
            config.val.is_none() && !(config.val_fraction > 0.0 && config.val_fraction < 1.0),
            "--val-fraction must be in (0, 1) without a --val folder (0 would hold out nothing)",
        ),
        (
            !(config.min_crop > 0.0 && config.min_crop <= 1.0),
            "--min-crop must be in (0, 1]",
        ),
        (
            config.ema.is_some_and(|d| !(0.0..1.0).contains(&d)),
            "--ema must be in [0, 1)",
        ),
        (
            config.dropout.is_some_and(|d| !(0.0..1.0).contains(&d)),
            "--dropout must be in [0, 1)",
        ),
        (
            config.drop_path.is_some_and(|d| !(0.0..1.0).contains(&d)),
            "--drop-path must be in [0, 1)",
        ),
        (
            [config.mixing.mixup, config.mixing.cutmix]
                .iter()
                .flatten()
                .any(|&alpha| !(alpha > 0.0 && alpha.is_finite())),
            "--mixup and --cutmix take a positive alpha",
        ),
    ];
    match checks.iter().find(|(bad, _)| *bad) {
        Some((_, message)) => Err(TrainError::Options((*message).into())),
        None => Ok(()),
    }
}

/// The samples of a labelled folder and its classes, for evaluation.
pub fn labelled_images(dir: &Path) -> Result<(Vec<Sample>, Vec<String>)> {
    let folder = ImageFolder::open(dir).map_err(data_error)?;
    Ok((folder.samples, folder.classes))
}
