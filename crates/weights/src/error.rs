//! The error type of the weights crate: every message names the file and the problem.

use std::path::PathBuf;
use thiserror::Error;

/// What can go wrong reading, mapping or writing weights.
#[derive(Debug, Error)]
pub enum WeightsError {
    /// A file could not be read or written, or its bytes are not what its format says.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// The problem.
        reason: String,
    },
    /// The weights do not fit the network, or their layout is unknown.
    #[error("{path}: {reason}")]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// The problem, naming the first offending tensor.
        reason: String,
    },
    /// The architecture the metadata or flags describe is invalid.
    #[error(transparent)]
    Arch(#[from] effnet_arch::ArchError),
}

impl WeightsError {
    /// A file-level error.
    pub fn file(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::File {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// A weights-vs-network mismatch.
    pub fn mismatch(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::Mismatch {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, WeightsError>;
