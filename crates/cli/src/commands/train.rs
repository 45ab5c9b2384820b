//! `effnet train`: fine-tune pretrained weights or train from scratch on a folder of labelled images, with
//! a progress bar, `metrics.csv`, `curves.png`, atomic checkpoints every epoch, `best.safetensors`, and
//! `--resume` to continue an interrupted run.

use crate::model_args::{base_config, ScalingArgs};
use crate::output::print_json;
use crate::plot::{plot_lr_find, plot_training_curves};
use crate::run_args::RunArgs;
use crate::weights_args::fetch_weights;
use anyhow::{bail, Context, Result};
use clap::Args;
use effnet_arch::scaling::compound;
use effnet_train::auto::{choose, Choice, Setting};
use effnet_train::config::{RandAugmentConfig, Recipe, TrainConfig};
use effnet_train::evaluate::Evaluation;
use effnet_train::lr_find::{find_lr, LrFinding, RangeTest, Rule};
use effnet_train::mixing::Mixing;
use effnet_train::optim::OptimizerKind;
use effnet_train::run::{EpochRecord, RunState};
use effnet_train::schedule::Decay;
use effnet_train::trainer::{check_options, Accelerator, Begin, Observer, StepProgress};
use effnet_train::{train, RunDir};
use effnet_weights::atomic::write_atomically;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Arguments of `effnet train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Pretrained weights to fine-tune (any file or name `predict` reads: hf:, torchvision:, a timm folder);
    /// a new classifier is fitted to the classes.
    #[arg(long, conflicts_with = "resume")]
    weights: Option<PathBuf>,
    /// The network: a named model, or the base that --phi scales (default b0 from scratch; from the weights
    /// when fine-tuning).
    #[arg(long)]
    model: Option<String>,
    #[command(flatten)]
    scaling: ScalingArgs,
    /// Epochs (default 10; with --resume, the run's own count unless given to extend it).
    #[arg(long)]
    epochs: Option<usize>,
    /// Images per step.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Training and evaluation resolution (default: the network's).
    #[arg(long)]
    img_size: Option<u32>,
    /// Defaults to start from: auto (from scratch: the official recipe with crop, batch-norm momentum,
    /// EMA and RandAugment chosen for the images and the run's length, each printed with its reason),
    /// official, or finetune (with --weights).
    #[arg(long)]
    recipe: Option<String>,
    /// Optimizer: rmsprop (TF-style), adamw or sgd.
    #[arg(long)]
    optimizer: Option<String>,
    /// Peak learning rate, or `auto` for the range test's suggestion (see --find-lr; default: the
    /// recipe's, scaled to the batch).
    #[arg(long)]
    lr: Option<String>,
    /// Only run the learning-rate range test: the loss against an exponentially growing rate, plotted to
    /// OUT/lr_find.png and listed in OUT/lr_find.json, and the suggested rate printed.
    #[arg(long, conflicts_with_all = ["resume", "lr"])]
    find_lr: bool,
    /// Steps of the range test (one rate each, from 1e-7 to 10; default: 400 for RMSProp and SGD, which
    /// train from scratch, 100 for AdamW, which fine-tunes).
    #[arg(long)]
    find_lr_steps: Option<usize>,
    /// Warmup epochs.
    #[arg(long)]
    warmup_epochs: Option<f64>,
    /// Decay after warmup: exponential (x0.97 every 2.4 epochs), cosine or constant.
    #[arg(long)]
    decay: Option<String>,
    /// Weight decay on kernels (batch norm and biases are never decayed).
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Label smoothing.
    #[arg(long)]
    label_smoothing: Option<f64>,
    /// Batch-norm momentum, TF convention (0.99 default; 0.9 settles faster in short runs).
    #[arg(long)]
    bn_momentum: Option<f64>,
    /// Keep an exponential moving average of the weights with this decay; evaluate and export it.
    #[arg(long, conflicts_with = "no_ema")]
    ema: Option<f64>,
    /// No moving average (the fine-tuning default).
    #[arg(long)]
    no_ema: bool,
    /// Train only the classifier for the whole run.
    #[arg(long, conflicts_with = "unfreeze_after")]
    freeze_backbone: bool,
    /// Train only the classifier for this many epochs, then everything.
    #[arg(long)]
    unfreeze_after: Option<usize>,
    /// RandAugment as N,M (ops per image, magnitude 0-10), e.g. 2,9.
    #[arg(long)]
    rand_augment: Option<String>,
    /// Smallest crop area of the random-resized crop (fraction of the image; default 0.08, or chosen by
    /// --recipe auto).
    #[arg(long)]
    min_crop: Option<f64>,
    /// No horizontal flips.
    #[arg(long)]
    no_flip: bool,
    /// Dropout before the classifier (default: the network's own, or chosen by --recipe auto).
    #[arg(long)]
    dropout: Option<f64>,
    /// Drop-path rate of the last block, earlier blocks linearly less (default: the network's own).
    #[arg(long)]
    drop_path: Option<f64>,
    /// Mixup with this Beta alpha (e.g. 0.2): each image blended with another of its batch, and their
    /// labels alike.
    #[arg(long)]
    mixup: Option<f64>,
    /// CutMix with this Beta alpha (e.g. 1.0): a box of another image of the batch pasted in, the labels
    /// mixed by area. With --mixup too, each batch uses one of them.
    #[arg(long)]
    cutmix: Option<f64>,
    /// Where to train: cpu, or wgpu (a GPU through Vulkan / Metal / DX12, in builds with `--features wgpu`).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Seed of initialisation, split, data order, augmentation and dropout.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn parse_rand_augment(text: &str) -> Result<RandAugmentConfig> {
    let parts: Vec<&str> = text.split(',').collect();
    let [n, m] = parts[..] else {
        bail!("--rand-augment takes N,M (for example 2,9), got `{text}`");
    };
    let n: u32 = n
        .trim()
        .parse()
        .with_context(|| format!("--rand-augment: `{n}` is not a count"))?;
    let m: f64 = m
        .trim()
        .parse()
        .with_context(|| format!("--rand-augment: `{m}` is not a number"))?;
    anyhow::ensure!(
        (0.0..=10.0).contains(&m),
        "--rand-augment magnitude must be within 0-10, got {m}"
    );
    Ok(RandAugmentConfig { n, m })
}

fn parse_decay(name: &str) -> Result<Decay> {
    Ok(match name {
        "exponential" => Decay::Exponential {
            rate: 0.97,
            every_epochs: 2.4,
        },
        "cosine" => Decay::Cosine,
        "constant" => Decay::Constant,
        _ => bail!("unknown decay `{name}`: use exponential, cosine or constant"),
    })
}

impl TrainArgs {
    fn network(&self) -> Result<Option<effnet_arch::NetworkConfig>> {
        if self.weights.is_some() && self.scaling.phi.is_some() {
            bail!("--phi builds a network from scratch; it cannot be combined with --weights");
        }
        if self.weights.is_some() {
            return self
                .model
                .as_deref()
                .map(|m| base_config(Some(m)))
                .transpose();
        }
        let base = base_config(self.model.as_deref())?;
        Ok(Some(match self.scaling.phi {
            Some(phi) => compound(&base, phi, self.scaling.coefficients()?)?,
            None => base,
        }))
    }

    /// The run's settings, and for `--recipe auto` the choices that no flag overrode.
    fn config(&self) -> Result<(TrainConfig, Vec<Choice>)> {
        let data = self.run.data()?;
        let recipe = match self.recipe.as_deref() {
            Some("official") => Recipe::Official,
            Some("finetune") => Recipe::Finetune,
            Some("auto") => Recipe::Auto,
            Some(other) => bail!("unknown recipe `{other}`: use auto, official or finetune"),
            None if self.weights.is_some() => Recipe::Finetune,
            None => Recipe::Auto,
        };
        let mut network = self.network()?;
        // A name (hub, torchvision, timm folder) is resolved once, here: the run records the file, and the
        // network and its conventions as the name gives them.
        let fetched = self.weights.as_deref().map(fetch_weights).transpose()?;
        let named = fetched.as_ref().and_then(|f| f.model.clone());
        if network.is_none() {
            network = named.clone();
        }
        let img_size = match (self.img_size, &network) {
            (Some(size), _) => size,
            (None, Some(n)) => n.resolution,
            (None, None) => {
                effnet_weights::load(
                    &fetched.as_ref().expect("fine-tuning has weights").file,
                    &effnet_weights::LoadOptions::default(),
                )?
                .config
                .resolution
            }
        };
        let mut config = TrainConfig::recipe(
            recipe,
            data,
            self.epochs.unwrap_or(10),
            self.batch,
            img_size,
        );
        config.val = self.run.val.clone();
        config.val_fraction = self.run.val_fraction;
        config.network = network;
        config.weights = fetched.map(|f| f.file);
        config.weights_conventions = named.map(|n| (n.padding, n.bn_eps));
        config.seed = self.seed;
        if let Some(name) = &self.optimizer {
            config.optimizer = OptimizerKind::from_name(name).with_context(|| {
                format!("unknown optimizer `{name}`: use rmsprop, adamw or sgd")
            })?;
        }
        match self.lr.as_deref() {
            None | Some("auto") => {}
            Some(text) => {
                config.lr = text
                    .parse()
                    .with_context(|| format!("--lr takes a number or `auto`, got `{text}`"))?;
            }
        }
        if let Some(w) = self.warmup_epochs {
            config.warmup_epochs = w;
        }
        if let Some(name) = &self.decay {
            config.decay = parse_decay(name)?;
        }
        if let Some(wd) = self.weight_decay {
            config.weight_decay = wd;
        }
        if let Some(s) = self.label_smoothing {
            config.label_smoothing = s;
        }
        if let Some(m) = self.bn_momentum {
            config.bn_momentum = m;
        }
        if self.no_ema {
            config.ema = None;
        } else if let Some(decay) = self.ema {
            config.ema = Some(decay);
        }
        config.freeze_epochs = match (self.freeze_backbone, self.unfreeze_after) {
            (true, _) => usize::MAX,
            (false, Some(k)) => k,
            (false, None) => 0,
        };
        if config.freeze_epochs > 0 && config.weights.is_none() {
            bail!("freezing the backbone needs pretrained --weights");
        }
        if let Some(text) = self.rand_augment.as_deref() {
            config.rand_augment = Some(parse_rand_augment(text)?);
        }
        if let Some(min_crop) = self.min_crop {
            config.min_crop = min_crop;
        }
        config.flip = if self.no_flip { 0.0 } else { 0.5 };
        config.dropout = self.dropout;
        config.drop_path = self.drop_path;
        config.mixing = Mixing {
            mixup: self.mixup,
            cutmix: self.cutmix,
        };
        config.workers = rayon::current_num_threads();
        config.accelerator = Accelerator::from_name(&self.device)
            .with_context(|| format!("unknown device `{}`: use cpu or wgpu", self.device))?;
        let choices = if recipe == Recipe::Auto {
            self.auto_recipe(&mut config)?
        } else {
            Vec::new()
        };
        Ok((config, choices))
    }

    /// Applies `--recipe auto`'s choices for the training images to the settings of `config` that no flag
    /// gave, returning those choices. The options are checked first, as a run checks them before it reads
    /// the images.
    fn auto_recipe(&self, config: &mut TrainConfig) -> Result<Vec<Choice>> {
        check_options(config)?;
        let given = |setting| match setting {
            Setting::MinCrop => self.min_crop.is_some(),
            Setting::BnMomentum => self.bn_momentum.is_some(),
            Setting::Ema => self.ema.is_some() || self.no_ema,
            Setting::RandAugment => self.rand_augment.is_some(),
            Setting::Dropout => self.dropout.is_some(),
            Setting::DropPath => self.drop_path.is_some(),
            Setting::Mixup => self.mixup.is_some(),
            Setting::Cutmix => self.cutmix.is_some(),
            Setting::Flip => self.no_flip,
        };
        Ok(choose(config, &given)?)
    }
}

/// Progress bars and epoch lines on the terminal, `curves.png` after every epoch.
struct Progress {
    bar: Mutex<Option<ProgressBar>>,
    curves: PathBuf,
    json: bool,
}

impl Observer for Progress {
    fn epoch_started(&self, epoch: usize, epochs: usize, steps: usize) {
        let bar = ProgressBar::new(steps as u64);
        if self.json {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        bar.set_style(
            ProgressStyle::with_template(
                "epoch {prefix} {bar:30} {pos}/{len} {msg} [{elapsed_precise}]",
            )
            .expect("a valid template"),
        );
        bar.set_prefix(format!("{epoch}/{epochs}"));
        *self.bar.lock().expect("not poisoned") = Some(bar);
    }

    fn step_finished(&self, p: &StepProgress) {
        if let Some(bar) = self.bar.lock().expect("not poisoned").as_ref() {
            bar.set_position(p.step as u64);
            bar.set_message(format!(
                "loss {:.4} acc {:.1}% {:.1} img/s lr {:.2e}",
                p.loss,
                100.0 * p.accuracy,
                p.images_per_sec,
                p.lr
            ));
        }
    }

    fn epoch_finished(&self, r: &EpochRecord, state: &RunState, _evaluation: &Evaluation) {
        if let Some(bar) = self.bar.lock().expect("not poisoned").take() {
            bar.finish_and_clear();
        }
        if let Err(e) = plot_training_curves(&self.curves, &state.records) {
            eprintln!(
                "effnet: warning: {}: cannot draw the curves: {e:#}",
                self.curves.display()
            );
        }
        if !self.json {
            println!(
                "epoch {}: train loss {:.4} acc {:.1}% | val loss {:.4} acc {:.1}% top-5 {:.1}% | {:.1} img/s, {:.1} s{}",
                r.epoch,
                r.train_loss,
                100.0 * r.train_accuracy,
                r.val_loss,
                100.0 * r.val_accuracy,
                100.0 * r.val_top5,
                r.images_per_sec,
                r.seconds,
                if state.best_epoch == r.epoch { " (best)" } else { "" }
            );
        }
    }

    fn image_skipped(&self, path: &Path, reason: &str) {
        let line = format!("effnet: warning: skipping {}: {reason}", path.display());
        match self.bar.lock().expect("not poisoned").as_ref() {
            Some(bar) if !bar.is_hidden() => bar.println(line),
            _ => eprintln!("{line}"),
        }
    }
}

/// Runs the learning-rate range test of `config` (`steps` long, or the optimizer's length), with a progress
/// bar, and writes `lr_find.png` and `lr_find.json` into `folder` (created if missing).
fn range_test(
    config: &TrainConfig,
    steps: Option<usize>,
    folder: &Path,
    json: bool,
) -> Result<LrFinding> {
    std::fs::create_dir_all(folder)
        .with_context(|| format!("{}: cannot create the folder", folder.display()))?;
    let mut test = RangeTest::for_optimizer(config.optimizer);
    if let Some(steps) = steps {
        test.steps = steps;
    }
    let bar = ProgressBar::new(test.steps as u64);
    if json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("range test {bar:30} {pos}/{len} {msg} [{elapsed_precise}]")
            .expect("a valid template"),
    );
    let finding = find_lr(config, &test, &mut |p| {
        bar.inc(1);
        bar.set_message(format!("lr {:.1e} loss {:.4}", p.lr, p.smoothed));
    })?;
    bar.finish_and_clear();
    plot_lr_find(&folder.join("lr_find.png"), &finding)?;
    write_atomically(
        &folder.join("lr_find.json"),
        &serde_json::to_vec_pretty(&finding)?,
    )?;
    if !json {
        println!(
            "range test: {} steps{}; smoothed loss lowest at lr {:.2e} (within two decades of the last rate); suggested lr {:.2e} ({}); plot: {}",
            finding.points.len(),
            if finding.diverged {
                " (stopped: the loss blew up)"
            } else {
                ""
            },
            finding.minimum,
            finding.suggested,
            match finding.rule {
                Rule::Minimum => {
                    "fastai's minimum for RMSProp and SGD: a tenth of the rate where the smoothed loss stops falling before it blows up"
                }
                Rule::Valley => "fastai's valley for AdamW: the middle of the longest descent",
            },
            folder.join("lr_find.png").display()
        );
    }
    Ok(finding)
}

/// Runs `effnet train`.
pub fn run(args: &TrainArgs, json: bool) -> Result<()> {
    let (folder, resume) = args.run.folder()?;
    let run_dir = RunDir::new(folder);
    let begin = if resume {
        Begin::Resume {
            epochs: args.epochs,
        }
    } else {
        let (mut config, choices) = args.config()?;
        if !json && !choices.is_empty() {
            println!("recipe auto (any flag overrides these):");
            for c in &choices {
                println!(
                    "  {} {} ({}): {}",
                    c.setting.name(),
                    c.value,
                    c.setting.flag(),
                    c.reason
                );
            }
        }
        if args.find_lr || args.lr.as_deref() == Some("auto") {
            let finding = range_test(&config, args.find_lr_steps, &run_dir.root, json)?;
            if args.find_lr {
                return if json { print_json(&finding) } else { Ok(()) };
            }
            config.lr = finding.suggested;
        }
        Begin::New(Box::new(config))
    };
    let progress = Progress {
        bar: Mutex::new(None),
        curves: run_dir.root.join("curves.png"),
        json,
    };
    let state = train(&run_dir, begin, &progress)?;
    if json {
        return print_json(&state);
    }
    println!(
        "best validation accuracy {:.1}% at epoch {}: {}",
        100.0 * state.best_accuracy,
        state.best_epoch,
        run_dir.best_path().display()
    );
    Ok(())
}
