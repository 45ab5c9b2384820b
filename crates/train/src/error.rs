//! The error type of the training crate: every message names the file or folder and the problem.

use std::path::PathBuf;
use thiserror::Error;

/// What can go wrong preparing data, building the model or running a training job.
#[derive(Debug, Error)]
pub enum TrainError {
    /// The weights do not fit the model being built.
    #[error("{0}")]
    Model(String),
    /// A dataset folder is unusable.
    #[error("{path}: {reason}")]
    Data {
        /// The folder or file.
        path: PathBuf,
        /// The problem.
        reason: String,
    },
    /// A run folder, checkpoint or output could not be read or written.
    #[error("{path}: {reason}")]
    Run {
        /// The file or folder.
        path: PathBuf,
        /// The problem.
        reason: String,
    },
    /// The options contradict each other or are out of range.
    #[error("{0}")]
    Options(String),
    /// Reading or writing weights failed.
    #[error(transparent)]
    Weights(#[from] effnet_weights::WeightsError),
    /// The architecture is invalid.
    #[error(transparent)]
    Arch(#[from] effnet_arch::ArchError),
}

impl TrainError {
    /// A dataset error.
    pub fn data(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::Data {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// A run-folder error.
    pub fn run(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::Run {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// Result with [`TrainError`].
pub type Result<T, E = TrainError> = std::result::Result<T, E>;
