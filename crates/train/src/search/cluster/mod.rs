//! A search handed to a cluster's scheduler: one job per candidate, each running
//! `effnet search --out RUN` with its index in [`super::INDEX_VARIABLES`], and one job that collects.
//! effnet writes the job files; the scheduler runs them.

mod kubernetes;
mod slurm;

pub use kubernetes::{kubernetes_manifest, KubernetesOptions};
pub use slurm::{submit_slurm, write_slurm_scripts, SlurmScripts, SlurmSubmission};

use super::{CandidatePlan, Search};
use crate::error::{Result, TrainError};
use crate::trainer::Accelerator;
use serde::Serialize;

/// What each candidate's job asks the scheduler for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Resources {
    /// CPU cores.
    pub cpus: u32,
    /// Memory in MiB: the largest candidate's training-memory estimate at the search's batch (the plan's
    /// activations, the recipe's parameter copies and the runtime), plus the decoded-image cache's bound.
    pub memory_mib: u64,
    /// GPUs (one when the candidates train on a GPU).
    pub gpus: u32,
}

impl Resources {
    /// The resources of the largest of `plans` (the candidates of `search`) with `cpus` cores.
    pub fn of(search: &Search, plans: &[CandidatePlan], cpus: u32) -> Result<Self> {
        if cpus == 0 {
            return Err(TrainError::Options(
                "--cpus-per-task must be at least 1".into(),
            ));
        }
        let training = plans
            .iter()
            .map(|p| p.training_memory_bytes)
            .max()
            .unwrap_or(0);
        let bytes = training + crate::batches::CACHE_BUDGET as u64;
        Ok(Self {
            cpus,
            memory_mib: bytes.div_ceil(1 << 20),
            gpus: u32::from(search.config.accelerator != Accelerator::Cpu),
        })
    }
}
