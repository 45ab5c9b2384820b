//! Errors of the explanations.

/// What can go wrong explaining an image.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// A layer, method or class that the network does not have.
    #[error("{0}")]
    Bad(String),
    /// The weights could not be built into the network.
    #[error(transparent)]
    Model(#[from] effnet_train::TrainError),
    /// An overlay could not be drawn or encoded.
    #[error("cannot draw the overlay: {0}")]
    Draw(String),
}

/// Result of the explanations.
pub type Result<T> = std::result::Result<T, ExplainError>;
