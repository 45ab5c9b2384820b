//! The one error type of the architecture crate.

use thiserror::Error;

/// Everything that can go wrong while describing, scaling or resolving a network.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ArchError {
    /// A TF block string could not be decoded.
    #[error("malformed block string `{block}`: {reason}")]
    BadBlockString {
        /// The offending block string.
        block: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A model name that is not one of the known variants.
    #[error("unknown model `{0}`; known models: {known}", known = crate::variant::known_names().join(", "))]
    UnknownModel(String),
    /// A scaling coefficient or other number outside its meaningful range.
    #[error("invalid {name} = {value}: {reason}")]
    BadCoefficient {
        /// Which coefficient (`width`, `phi`, `alpha`, ...).
        name: &'static str,
        /// The value given.
        value: f64,
        /// The accepted range or rule.
        reason: String,
    },
    /// A base specification whose stages do not chain (`i` of a stage must equal `o` of the previous one).
    #[error("inconsistent base specification: {0}")]
    BadSpec(String),
    /// No network on the solver's grid meets the budget.
    #[error("{0}")]
    Infeasible(String),
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, ArchError>;
