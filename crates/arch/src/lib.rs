//! EfficientNet architecture without any ML dependency: the TF block grammar, the named variants, compound
//! scaling, the resolver that turns any of them into a [`Plan`], exact accounting and the budget solver.

pub mod accounting;
pub mod accuracy;
pub mod error;
pub mod features;
pub mod memory;
pub mod padding;
pub mod plan;
pub mod preprocess;
pub mod resolve;
pub mod scaling;
pub mod solver;
pub mod spec;
pub mod variant;

pub use accounting::{account, Accounting, LayerCost};
pub use error::{ArchError, Result};
pub use padding::Padding;
pub use plan::Plan;
pub use resolve::resolve;
pub use scaling::Coefficients;
pub use variant::{NetworkConfig, Variant};
