//! The run folder: what a training run writes and how it resumes.
//!
//! ```text
//! RUN/config.json                      the run's settings (a resumed run reuses them)
//! RUN/state.json                       completed epochs, step, best accuracy, every epoch's metrics
//! RUN/checkpoint/epoch-N/              model.safetensors, ema.safetensors (with EMA), optimizer.bpk
//! RUN/last.safetensors                 the evaluated weights (EMA if enabled) after the last epoch
//! RUN/best.safetensors                 the evaluated weights with the best validation accuracy
//! RUN/metrics.csv                      one row per epoch
//! ```
//!
//! Every file is written atomically (temporary file, then rename). A checkpoint folder is filled under a
//! temporary name and renamed whole; `state.json` is written after it and is the commit point: a run killed
//! at any moment resumes from the last epoch `state.json` names, whose checkpoint is always complete.

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::model::Tensors;
use effnet_weights::atomic::write_atomically;
use effnet_weights::safetensors_io::{read_safetensors, write_safetensors};
use effnet_weights::WeightMetadata;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Metrics of one finished epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number (1-based).
    pub epoch: usize,
    /// Mean training loss (with label smoothing).
    pub train_loss: f64,
    /// Training accuracy on the augmented images.
    pub train_accuracy: f64,
    /// Validation cross-entropy (no smoothing).
    pub val_loss: f64,
    /// Validation top-1 accuracy.
    pub val_accuracy: f64,
    /// Validation top-5 accuracy.
    pub val_top5: f64,
    /// Learning rate at the epoch's last step.
    pub lr: f64,
    /// Training throughput.
    pub images_per_sec: f64,
    /// Wall time of the epoch (training and validation).
    pub seconds: f64,
}

/// Progress of a run, written after every epoch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Completed epochs.
    pub epoch: usize,
    /// Optimizer steps taken.
    pub step: usize,
    /// EMA updates taken.
    pub ema_updates: u64,
    /// Best validation accuracy so far.
    pub best_accuracy: f64,
    /// The epoch that reached it.
    pub best_epoch: usize,
    /// Every completed epoch.
    pub records: Vec<EpochRecord>,
}

/// Paths inside a run folder.
#[derive(Debug, Clone)]
pub struct RunDir {
    /// The folder.
    pub root: PathBuf,
}

fn io_error(path: &Path, what: &str, e: impl std::fmt::Display) -> TrainError {
    TrainError::run(path, format!("cannot {what}: {e}"))
}

/// Reads a JSON file, naming it in any error.
pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| io_error(path, "read", e))?;
    serde_json::from_str(&text).map_err(|e| TrainError::run(path, format!("is not valid: {e}")))
}

/// Writes pretty JSON atomically.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("serialisable");
    write_atomically(path, text.as_bytes()).map_err(|e| TrainError::run(path, e.reason))
}

/// What a checkpoint holds.
pub struct Checkpoint {
    /// The trained weights.
    pub model: Tensors,
    /// The EMA weights, if the run keeps an average.
    pub ema: Option<Tensors>,
    /// The optimizer state (burnpack bytes).
    pub optimizer: Vec<u8>,
}

/// A run folder held by this process ([`RunDir::lock`]); released when dropped.
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

/// Whether a lock call failed because the filesystem has no locks at all (`ENOLCK`, or unsupported).
fn locks_unsupported(e: &std::io::Error) -> bool {
    const ENOLCK: i32 = 37;
    e.kind() == std::io::ErrorKind::Unsupported
        || (cfg!(target_os = "linux") && e.raw_os_error() == Some(ENOLCK))
}

impl RunDir {
    /// The run folder at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `config.json`.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.json")
    }

    /// `state.json`.
    pub fn state_path(&self) -> PathBuf {
        self.root.join("state.json")
    }

    /// `last.safetensors`.
    pub fn last_path(&self) -> PathBuf {
        self.root.join("last.safetensors")
    }

    /// `best.safetensors`.
    pub fn best_path(&self) -> PathBuf {
        self.root.join("best.safetensors")
    }

    /// `metrics.csv`.
    pub fn metrics_path(&self) -> PathBuf {
        self.root.join("metrics.csv")
    }

    fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoint")
    }

    fn checkpoint_path(&self, epoch: usize) -> PathBuf {
        self.checkpoints().join(format!("epoch-{epoch}"))
    }

    /// Takes the run folder for this process (creating it if needed) until the returned lock is dropped: a
    /// second `train` on the same folder is refused at once instead of racing this one. Temporary files
    /// that interrupted runs left behind are removed.
    pub fn lock(&self) -> Result<RunLock> {
        std::fs::create_dir_all(&self.root).map_err(|e| io_error(&self.root, "create", e))?;
        let path = self.root.join(".lock");
        let file = std::fs::File::create(&path).map_err(|e| io_error(&path, "create", e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(TrainError::run(
                    &self.root,
                    "is in use by another effnet process; wait for it to finish or choose another --out",
                ))
            }
            // A filesystem without locks (NFS mounted with `nolock`): the lock only guards against a
            // user's mistake, and a search gives each run folder one writer, so go on without it.
            Err(std::fs::TryLockError::Error(e)) if locks_unsupported(&e) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(io_error(&path, "lock", e)),
        }
        for dir in [self.root.clone(), self.checkpoints()] {
            effnet_weights::atomic::remove_stale_temporaries(&dir);
        }
        Ok(RunLock { _file: file })
    }

    /// Creates the folder for a new run; refuses one that already holds a run.
    pub fn create(&self, config: &TrainConfig) -> Result<()> {
        if self.state_path().exists() || self.config_path().exists() {
            return Err(TrainError::run(
                &self.root,
                "already holds a run; continue it with --resume, or choose another --out",
            ));
        }
        std::fs::create_dir_all(self.checkpoints())
            .map_err(|e| io_error(&self.root, "create", e))?;
        write_json(&self.config_path(), config)
    }

    /// The settings of an existing run.
    pub fn read_config(&self) -> Result<TrainConfig> {
        if !self.config_path().exists() {
            return Err(TrainError::run(
                &self.root,
                "is not a run folder (no config.json)",
            ));
        }
        read_json(&self.config_path())
    }

    /// Rewrites the settings (a resumed run that extends its epochs).
    pub fn write_config(&self, config: &TrainConfig) -> Result<()> {
        write_json(&self.config_path(), config)
    }

    /// The progress of the run (empty before the first epoch finishes).
    pub fn read_state(&self) -> Result<RunState> {
        if !self.state_path().exists() {
            return Ok(RunState::default());
        }
        read_json(&self.state_path())
    }

    /// Writes a complete checkpoint of `state.epoch` (with the run's `metadata`), then commits `state`,
    /// then drops older checkpoints.
    pub fn commit(
        &self,
        state: &RunState,
        checkpoint: &Checkpoint,
        metadata: &WeightMetadata,
    ) -> Result<()> {
        let done = self.checkpoint_path(state.epoch);
        let partial = self
            .checkpoints()
            .join(format!("epoch-{}.partial", state.epoch));
        for stale in [&partial, &done] {
            if stale.exists() {
                std::fs::remove_dir_all(stale).map_err(|e| io_error(stale, "remove", e))?;
            }
        }
        std::fs::create_dir_all(&partial).map_err(|e| io_error(&partial, "create", e))?;
        write_safetensors(
            &partial.join("model.safetensors"),
            &checkpoint.model,
            metadata.to_map(),
        )?;
        if let Some(ema) = &checkpoint.ema {
            write_safetensors(&partial.join("ema.safetensors"), ema, metadata.to_map())?;
        }
        let optimizer = partial.join("optimizer.bpk");
        write_atomically(&optimizer, &checkpoint.optimizer)
            .map_err(|e| TrainError::run(&optimizer, e.reason))?;
        std::fs::rename(&partial, &done).map_err(|e| io_error(&done, "create", e))?;
        write_json(&self.state_path(), state)?;
        self.write_metrics(&state.records)?;
        let entries =
            std::fs::read_dir(self.checkpoints()).map_err(|e| io_error(&self.root, "list", e))?;
        for entry in entries.flatten() {
            if entry.path() != done {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        Ok(())
    }

    /// The checkpoint `state.json` names, with the run's metadata (network, classes, provenance).
    pub fn read_checkpoint(&self, state: &RunState) -> Result<(Checkpoint, WeightMetadata)> {
        let dir = self.checkpoint_path(state.epoch);
        let model_path = dir.join("model.safetensors");
        let model = read_safetensors(&model_path)?;
        let metadata = WeightMetadata::from_map(&model_path, &model.metadata)?
            .ok_or_else(|| TrainError::run(&model_path, "has no effnet metadata"))?;
        let ema_path = dir.join("ema.safetensors");
        let optimizer_path = dir.join("optimizer.bpk");
        let checkpoint = Checkpoint {
            model: model.tensors,
            ema: if ema_path.exists() {
                Some(read_safetensors(&ema_path)?.tensors)
            } else {
                None
            },
            optimizer: std::fs::read(&optimizer_path)
                .map_err(|e| io_error(&optimizer_path, "read", e))?,
        };
        Ok((checkpoint, metadata))
    }

    /// Writes evaluated weights (`last` or `best`) with their metadata.
    pub fn write_weights(
        &self,
        path: &Path,
        tensors: &Tensors,
        metadata: &WeightMetadata,
    ) -> Result<()> {
        Ok(write_safetensors(path, tensors, metadata.to_map())?)
    }

    /// Rewrites `metrics.csv` from the records.
    pub fn write_metrics(&self, records: &[EpochRecord]) -> Result<()> {
        let mut text = String::from(
            "epoch,train_loss,train_accuracy,val_loss,val_accuracy,val_top5,lr,images_per_sec,seconds\n",
        );
        for r in records {
            text.push_str(&format!(
                "{},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6e},{:.2},{:.2}\n",
                r.epoch,
                r.train_loss,
                r.train_accuracy,
                r.val_loss,
                r.val_accuracy,
                r.val_top5,
                r.lr,
                r.images_per_sec,
                r.seconds
            ));
        }
        let path = self.metrics_path();
        write_atomically(&path, text.as_bytes()).map_err(|e| TrainError::run(&path, e.reason))
    }
}
