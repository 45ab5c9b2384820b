//! One module per `effnet` subcommand.

pub mod bench;
pub mod compare;
pub mod convert;
pub mod embed;
pub mod eval;
pub mod explain;
pub mod export;
pub mod features;
pub mod fit;
pub mod info;
pub mod patches;
pub mod predict;
pub mod scale;
pub mod search;
pub mod search_cluster;
pub mod serve;
pub mod train;
pub mod weights;
