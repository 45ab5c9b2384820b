//! The network a server runs: the inference engine for predictions and embeddings, the autodiff model
//! for explanations, the class names and the evaluation preprocessing.

use effnet_arch::preprocess::Preprocessing;
use effnet_arch::{account, NetworkConfig};
use effnet_data::ranking::class_labels;
use effnet_engine::Engine;
use effnet_explain::Explainer;
use effnet_weights::LoadedWeights;
use serde::Serialize;
use std::sync::Mutex;

/// What `GET /v1/model` reports.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// The name requests address the model by (KServe's `model_name`).
    pub name: String,
    /// The network's configuration.
    pub config: NetworkConfig,
    /// The evaluation preprocessing the server applies.
    pub preprocessing: Preprocessing,
    /// The input resolution.
    pub resolution: u32,
    /// Parameters.
    pub params: u64,
    /// Multiply-adds per image at the resolution.
    pub macs: u64,
    /// Width of the embedding.
    pub embedding_size: usize,
    /// Class names, by index.
    pub labels: Vec<String>,
}

/// A loaded network, ready to serve.
pub struct Model {
    /// What the server reports about it.
    pub info: ModelInfo,
    /// The inference engine.
    pub engine: Engine,
    /// The explainer (one explanation at a time: each already uses every core).
    pub explainer: Mutex<Explainer>,
}

impl Model {
    /// Prepares `weights` under `name`, preprocessing images with `preprocessing` at `resolution`.
    pub fn new(
        name: &str,
        weights: LoadedWeights,
        preprocessing: Preprocessing,
        resolution: u32,
    ) -> anyhow::Result<Self> {
        let explainer = Explainer::new(&weights.plan, &weights.tensors)?;
        let mut at_resolution = weights.config.clone();
        at_resolution.resolution = resolution;
        let costs = account(&effnet_arch::resolve(&at_resolution)?);
        let labels = class_labels(&weights.labels, weights.config.num_classes as usize);
        let config = weights.config.clone();
        let engine = Engine::from_weights(weights);
        Ok(Self {
            info: ModelInfo {
                name: name.to_string(),
                config,
                preprocessing,
                resolution,
                params: costs.params,
                macs: costs.macs,
                embedding_size: engine.feature_size(),
                labels,
            },
            engine,
            explainer: Mutex::new(explainer),
        })
    }
}
