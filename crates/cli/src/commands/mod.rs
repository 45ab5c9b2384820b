//! One module per `effnet` subcommand.

pub mod compare;
pub mod fit;
pub mod info;
pub mod scale;
