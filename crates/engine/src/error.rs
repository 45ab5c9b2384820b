//! Errors of the inference engine.

use thiserror::Error;

/// What can go wrong running a network.
#[derive(Debug, Error)]
pub enum EngineError {
    /// The input does not suit the network.
    #[error("bad input: {0}")]
    BadInput(String),
    /// `EFFNET_ISA` names an instruction set this machine cannot run.
    #[error("{0}")]
    Isa(String),
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, EngineError>;
