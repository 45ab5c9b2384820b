//! One candidate of a search, trained by whichever process is given its index: a local search's thread, a
//! Slurm array task or a Kubernetes indexed pod. It writes only that candidate's folder.

use super::candidates::{macs, scaled_candidate};
use super::{
    base_network, open, CandidateResult, Failure, Regularisation, Search, SearchConfig, SearchDir,
    SearchObserver, FIXED_BN_MOMENTUM,
};
use crate::auto::{choose, Setting};
use crate::config::{Recipe, TrainConfig};
use crate::error::{Result, TrainError};
use crate::run::{read_json, write_json, RunDir};
use crate::trainer::{train, Begin, Silent};
use effnet_arch::NetworkConfig;
use std::path::Path;

/// The environment variables that carry a worker's candidate index: Slurm's array task id and the
/// completion index of a Kubernetes Indexed Job, in that order.
pub const INDEX_VARIABLES: [&str; 2] = ["SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"];

/// The candidate index the scheduler gave this process, if it gave one: the first of
/// [`INDEX_VARIABLES`] that is set.
pub fn index_from_env() -> Option<Result<usize>> {
    INDEX_VARIABLES.iter().find_map(|name| {
        let value = std::env::var(name).ok()?;
        Some(value.trim().parse().map_err(|_| {
            TrainError::Options(format!(
                "{name}={value:?} is not a candidate index (a whole number)"
            ))
        }))
    })
}

/// What one worker did.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateRun {
    /// The candidate's result.
    pub result: CandidateResult,
    /// Epochs the candidate had committed before this worker started (0: trained from the start).
    pub resumed_after: usize,
    /// Whether the candidate had already finished, so that nothing was trained.
    pub already_finished: bool,
    /// Whether every candidate of the search now has a result.
    pub all_finished: bool,
}

/// Trains candidate `index` of the search in `root` (resuming it where an earlier attempt stopped),
/// writes its result, or its error to `failure.json`, telling `observer` when it starts and finishes. A
/// candidate that has already finished is not trained again: its recorded result is returned.
pub fn run_candidate(
    root: &Path,
    index: usize,
    observer: &dyn SearchObserver,
) -> Result<CandidateRun> {
    let search = open(root)?;
    let total = search.candidates.len();
    let Some(candidate) = search.candidates.get(index) else {
        return Err(TrainError::Options(format!(
            "candidate {index} does not exist: {} has candidates 0 to {}",
            root.display(),
            total.saturating_sub(1)
        )));
    };
    let dir = SearchDir::new(root);
    let run = RunDir::new(dir.candidate_dir(candidate));
    let resumed_after = if run.state_path().exists() {
        run.read_state()?.epoch
    } else {
        0
    };
    // A task run again after it finished (a requeued or resubmitted one) has nothing left to do.
    let already_finished = dir.result_path(candidate).exists();
    let result = if already_finished {
        read_json(&dir.result_path(candidate))?
    } else {
        observer.started(candidate, index, total);
        let result = train_and_record(&dir, &search, index, 1)?;
        observer.finished(&result, index, total);
        result
    };
    let all_finished = search
        .candidates
        .iter()
        .all(|c| dir.result_path(c).exists());
    Ok(CandidateRun {
        result,
        resumed_after,
        already_finished,
        all_finished,
    })
}

/// Trains candidate `index` with the machine shared by `sharing` candidates, and records the outcome: the
/// result on success (clearing an earlier attempt's failure), the error on failure.
pub(super) fn train_and_record(
    dir: &SearchDir,
    search: &Search,
    index: usize,
    sharing: usize,
) -> Result<CandidateResult> {
    let candidate = &search.candidates[index];
    match train_candidate(dir, search, index, sharing) {
        Ok(result) => {
            write_json(&dir.result_path(candidate), &result)?;
            let failure = dir.failure_path(candidate);
            if failure.exists() {
                std::fs::remove_file(&failure)
                    .map_err(|e| TrainError::run(&failure, format!("cannot remove: {e}")))?;
            }
            Ok(result)
        }
        Err(e) => {
            let failure = Failure {
                index,
                id: candidate.id(),
                error: e.to_string(),
                host: gethostname::gethostname().to_string_lossy().into_owned(),
            };
            // The training error is what the user needs; a failure to record it is secondary.
            let _ = std::fs::create_dir_all(dir.candidate_dir(candidate))
                .map_err(|e| TrainError::run(&dir.root, e.to_string()))
                .and_then(|()| write_json(&dir.failure_path(candidate), &failure));
            Err(e)
        }
    }
}

/// The training settings of a candidate with `network`, trained alongside `sharing - 1` others.
fn candidate_config(
    config: &SearchConfig,
    network: NetworkConfig,
    sharing: usize,
) -> Result<TrainConfig> {
    let recipe = match config.regularisation {
        Regularisation::Scaled => Recipe::Auto,
        Regularisation::Fixed => Recipe::Official,
    };
    let mut train_config = TrainConfig::recipe(
        recipe,
        config.data.clone(),
        config.epochs,
        config.batch,
        network.resolution,
    );
    train_config.val = config.val.clone();
    train_config.val_fraction = config.val_fraction;
    train_config.seed = config.seed;
    train_config.bn_momentum = config.bn_momentum.unwrap_or(FIXED_BN_MOMENTUM);
    train_config.accelerator = config.accelerator;
    if let Some(lr) = config.lr {
        train_config.lr = lr;
    }
    train_config.network = Some(network);
    train_config.workers = (train_config.workers / sharing).max(1);
    if config.regularisation == Regularisation::Scaled {
        let given = |setting| setting == Setting::BnMomentum && config.bn_momentum.is_some();
        choose(&mut train_config, &given)?;
    }
    Ok(train_config)
}

fn train_candidate(
    dir: &SearchDir,
    search: &Search,
    index: usize,
    sharing: usize,
) -> Result<CandidateResult> {
    let config = &search.config;
    let base = base_network(config)?;
    let base_macs = macs(&base)?;
    let (network, plan) = scaled_candidate(&base, search, index)?;
    let run = RunDir::new(dir.candidate_dir(&plan.candidate));
    let resume = run.state_path().exists();
    if !resume && run.config_path().exists() {
        // Interrupted before its first epoch: nothing to keep.
        std::fs::remove_file(run.config_path())
            .map_err(|e| TrainError::run(&run.root, format!("cannot remove: {e}")))?;
    }
    let begin = if resume {
        Begin::Resume { epochs: None }
    } else {
        Begin::New(Box::new(candidate_config(config, network, sharing)?))
    };
    let state = train(&run, begin, &Silent)?;
    Ok(CandidateResult {
        macs_ratio: plan.macs as f64 / base_macs as f64,
        formula_ratio: plan.candidate.product().powf(config.phi),
        val_accuracy: state.best_accuracy,
        final_accuracy: state.records.last().map_or(0.0, |r| r.val_accuracy),
        train_seconds: state.records.iter().map(|r| r.seconds).sum(),
        plan,
    })
}
