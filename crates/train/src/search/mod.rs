//! The compound-scaling search of the paper, run for real on the user's data, on one machine or as one
//! cluster job per candidate.
//!
//! Step 1 fixes `phi` (1 by default) and enumerates every `(alpha, beta, gamma)` on a grid (`1, 1 + step,
//! ...`, each at least 1) with `|alpha * beta^2 * gamma^2 - target| <= tolerance`. Each candidate is resolved
//! (its real MACs, not just the formula's, are reported), trained from scratch with the same seed, epochs and
//! recipe, and evaluated. The unscaled base and the three single-dimension scalings (depth, width or
//! resolution alone, each at the real MACs the target asks for) are trained too, so the result shows whether
//! compound scaling wins on this data. Step 2 is `effnet fit` / `effnet scale` with `--from-search`.
//!
//! The grid and the settings are fixed when the run folder is created ([`create`]); after that each
//! candidate is independent. [`run_candidate`] trains one (a Slurm array task or a Kubernetes indexed pod
//! each run one) and writes only that candidate's folder; [`collect`] ranks whatever has finished. A
//! candidate's files are written by its one worker, `results.json` is only ever replaced whole by a
//! collector, and every file goes through a temporary file and a rename, so the folder works on a shared
//! filesystem without locks.
//!
//! ```text
//! RUN/search.json                      the search settings
//! RUN/candidates.json                  the candidates in index order, with their sizes and costs
//! RUN/candidates/<id>/                 each candidate's training run (resumable like any run)
//! RUN/candidates/<id>/result.json      its result, once its last epoch is done
//! RUN/candidates/<id>/failure.json     the error of its last attempt, if that attempt failed
//! RUN/results.json                     the finished candidates ranked, the winner, and what is missing
//! ```

mod candidates;
pub mod cluster;
mod collect;
mod worker;

pub use candidates::{base_network, candidates, grid, plan, CandidatePlan};
pub use collect::{collect, wait_and_collect};
pub use worker::{index_from_env, run_candidate, CandidateRun, INDEX_VARIABLES};

use crate::error::{Result, TrainError};
use crate::run::{read_json, write_json};
use crate::trainer::{Accelerator, Silent};
use effnet_arch::Coefficients;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The settings of a search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchConfig {
    /// Training images, one folder per class.
    pub data: PathBuf,
    /// Validation images (default: a seeded split of `data`).
    pub val: Option<PathBuf>,
    /// Share held out when there is no validation folder.
    pub val_fraction: f64,
    /// The base network: a model name or TF block strings.
    pub base: String,
    /// Resolution of the unscaled base.
    pub img_size: u32,
    /// The compound coefficient of the search (1 in the paper).
    pub phi: f64,
    /// The target of `alpha * beta^2 * gamma^2` (2 in the paper).
    pub target: f64,
    /// How far a candidate's product may be from the target.
    pub tolerance: f64,
    /// Grid step of each coefficient.
    pub grid: f64,
    /// Epochs per candidate.
    pub epochs: usize,
    /// Images per step.
    pub batch: usize,
    /// Seed shared by every candidate.
    pub seed: u64,
    /// Learning rate (default: the official recipe's for the batch).
    pub lr: Option<f64>,
    /// Batch-norm momentum (TF convention) given by the user; otherwise the scaled recipe's choice per
    /// candidate, or [`FIXED_BN_MOMENTUM`] for every candidate with the fixed recipe.
    #[serde(default)]
    pub bn_momentum: Option<f64>,
    /// How the candidates' regularisation is set. Searches created before the choice existed used the
    /// fixed recipe.
    #[serde(default = "Regularisation::fixed")]
    pub regularisation: Regularisation,
    /// Candidates trained at the same time by a local search.
    pub jobs: usize,
    /// Where each candidate trains.
    #[serde(default)]
    pub accelerator: Accelerator,
}

impl SearchConfig {
    /// The folders of images the candidates read: `data`, and `val` when given.
    pub fn image_folders(&self) -> Vec<&Path> {
        std::iter::once(self.data.as_path())
            .chain(self.val.as_deref())
            .collect()
    }
}

/// Batch-norm momentum of every candidate with the fixed recipe unless given: short runs need fast
/// statistics.
pub const FIXED_BN_MOMENTUM: f64 = 0.9;

/// How each candidate is regularised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Regularisation {
    /// `train --recipe auto`'s choices for each candidate's own resolution and run: larger candidates
    /// are not under-regularised and small ones not crushed.
    Scaled,
    /// The same official recipe for every candidate, as in the paper.
    Fixed,
}

impl Regularisation {
    fn fixed() -> Self {
        Self::Fixed
    }

    /// Parses a command-line name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "scaled" => Some(Self::Scaled),
            "fixed" => Some(Self::Fixed),
            _ => None,
        }
    }
}

/// What a candidate is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A point of the compound grid.
    Compound,
    /// The unscaled base (`alpha = beta = gamma = 1`).
    Baseline,
    /// Depth scaled alone to the target MACs.
    Depth,
    /// Width scaled alone to the target MACs.
    Width,
    /// Resolution scaled alone to the target MACs.
    Resolution,
}

/// A network to train: its kind and coefficients.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// What it is.
    pub kind: Kind,
    /// Depth coefficient.
    pub alpha: f64,
    /// Width coefficient.
    pub beta: f64,
    /// Resolution coefficient.
    pub gamma: f64,
}

impl Candidate {
    /// A name that is unique within a search, used for its run folder.
    pub fn id(&self) -> String {
        let kind = format!("{:?}", self.kind).to_lowercase();
        format!(
            "{kind}-a{:.4}-b{:.4}-g{:.4}",
            self.alpha, self.beta, self.gamma
        )
    }

    /// `alpha * beta^2 * gamma^2`.
    pub fn product(&self) -> f64 {
        self.alpha * self.beta * self.beta * self.gamma * self.gamma
    }

    fn coefficients(&self) -> Coefficients {
        Coefficients {
            alpha: self.alpha,
            beta: self.beta,
            gamma: self.gamma,
        }
    }
}

/// A trained and evaluated candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateResult {
    /// The candidate as it trained.
    #[serde(flatten)]
    pub plan: CandidatePlan,
    /// Real MACs over the base's.
    pub macs_ratio: f64,
    /// `(alpha * beta^2 * gamma^2)^phi`: what the formula predicts for that ratio.
    pub formula_ratio: f64,
    /// Best validation accuracy over its epochs.
    pub val_accuracy: f64,
    /// Validation accuracy after the last epoch.
    pub final_accuracy: f64,
    /// Training time in seconds.
    pub train_seconds: f64,
}

/// The coefficients that won.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Winner {
    /// Depth coefficient.
    pub alpha: f64,
    /// Width coefficient.
    pub beta: f64,
    /// Resolution coefficient.
    pub gamma: f64,
    /// Its validation accuracy.
    pub val_accuracy: f64,
}

/// Everything `results.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResults {
    /// The settings.
    pub search: SearchConfig,
    /// Finished candidates, best first.
    pub candidates: Vec<CandidateResult>,
    /// The best compound candidate so far (ties: fewer MACs).
    pub winner: Option<Winner>,
    /// Candidates without a result: not started, training, or stopped before their last epoch.
    #[serde(default)]
    pub unfinished: Vec<Unfinished>,
    /// Candidates whose last attempt failed, with the error.
    #[serde(default)]
    pub failed: Vec<Failure>,
}

impl SearchResults {
    /// Reads `results.json`.
    pub fn read(path: &Path) -> Result<Self> {
        read_json(path)
    }

    fn rank(&mut self) {
        self.candidates.sort_by(|a, b| {
            b.val_accuracy
                .total_cmp(&a.val_accuracy)
                .then(a.plan.macs.cmp(&b.plan.macs))
                .then(a.plan.id.cmp(&b.plan.id))
        });
        self.winner = self
            .candidates
            .iter()
            .find(|c| c.plan.candidate.kind == Kind::Compound)
            .map(|c| Winner {
                alpha: c.plan.candidate.alpha,
                beta: c.plan.candidate.beta,
                gamma: c.plan.candidate.gamma,
                val_accuracy: c.val_accuracy,
            });
    }
}

/// A candidate without a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unfinished {
    /// Its index in `candidates.json`.
    pub index: usize,
    /// Its folder name under `candidates/`.
    pub id: String,
    /// Epochs it has committed (0: not started).
    pub epochs_done: usize,
}

/// A candidate whose last attempt failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// Its index in `candidates.json`.
    pub index: usize,
    /// Its folder name under `candidates/`.
    pub id: String,
    /// What went wrong.
    pub error: String,
    /// The machine it ran on.
    pub host: String,
}

/// Hears about a search's progress.
pub trait SearchObserver: Sync {
    /// A candidate starts training.
    fn started(&self, _candidate: &Candidate, _index: usize, _total: usize) {}
    /// A candidate finished and is recorded.
    fn finished(&self, _result: &CandidateResult, _index: usize, _total: usize) {}
}

impl SearchObserver for Silent {}

/// Paths of a search folder.
pub struct SearchDir {
    /// The folder.
    pub root: PathBuf,
}

impl SearchDir {
    /// The search folder at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `search.json`.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("search.json")
    }

    /// `candidates.json`.
    pub fn candidates_path(&self) -> PathBuf {
        self.root.join("candidates.json")
    }

    /// `results.json`.
    pub fn results_path(&self) -> PathBuf {
        self.root.join("results.json")
    }

    /// The run folder of a candidate.
    pub fn candidate_dir(&self, candidate: &Candidate) -> PathBuf {
        self.root.join("candidates").join(candidate.id())
    }

    /// The result of a finished candidate.
    pub fn result_path(&self, candidate: &Candidate) -> PathBuf {
        self.candidate_dir(candidate).join("result.json")
    }

    /// The error of a candidate's failed attempt.
    pub fn failure_path(&self, candidate: &Candidate) -> PathBuf {
        self.candidate_dir(candidate).join("failure.json")
    }

    /// Whether the folder holds a search.
    pub fn exists(&self) -> bool {
        self.config_path().exists()
    }
}

fn validate(config: &SearchConfig) -> Result<()> {
    let checks = [
        (
            !(config.target >= 1.0 && config.target.is_finite()),
            "--target must be at least 1",
        ),
        (
            !(config.tolerance >= 0.0 && config.tolerance.is_finite()),
            "--tolerance must not be negative",
        ),
        (
            !(config.grid > 0.0 && config.grid <= 1.0),
            "--grid must be in (0, 1]",
        ),
        (
            !(config.phi > 0.0 && config.phi.is_finite()),
            "--phi must be positive",
        ),
    ];
    match checks.iter().find(|(bad, _)| *bad) {
        Some((_, message)) => Err(TrainError::Options((*message).into())),
        None => Ok(()),
    }
}

/// A search folder's settings and candidates.
#[derive(Debug, Clone, PartialEq)]
pub struct Search {
    /// The settings.
    pub config: SearchConfig,
    /// The candidates, in index order.
    pub candidates: Vec<Candidate>,
}

/// Creates the search folder `root`: checks the settings, resolves every candidate and fixes them (with
/// their [`plan`]s) in `candidates.json`. Nothing is trained.
pub fn create(root: &Path, config: SearchConfig) -> Result<Search> {
    let dir = SearchDir::new(root);
    if dir.exists() {
        return Err(TrainError::run(
            root,
            "already holds a search; continue it with --resume, or choose another --out",
        ));
    }
    validate(&config)?;
    let search = Search {
        candidates: candidates(&config)?,
        config,
    };
    let plans = plan(&search)?;
    std::fs::create_dir_all(root)
        .map_err(|e| TrainError::run(root, format!("cannot create: {e}")))?;
    write_json(&dir.candidates_path(), &plans)?;
    // search.json last: a folder is a search once its candidates are fixed.
    write_json(&dir.config_path(), &search.config)?;
    Ok(search)
}

/// Opens the search folder `root`.
pub fn open(root: &Path) -> Result<Search> {
    let dir = SearchDir::new(root);
    if !dir.exists() {
        return Err(TrainError::run(
            root,
            "is not a search folder (no search.json)",
        ));
    }
    let config: SearchConfig = read_json(&dir.config_path())?;
    if !dir.candidates_path().exists() {
        return upgrade(&dir, config);
    }
    let candidates: Vec<Candidate> = read_json(&dir.candidates_path())?;
    Ok(Search { config, candidates })
}

/// Gives a search folder from before `candidates.json` existed (its candidates were derived from
/// `search.json`, its results kept only in `results.json`) the present layout, so that resuming it
/// retrains nothing that had finished.
fn upgrade(dir: &SearchDir, config: SearchConfig) -> Result<Search> {
    let search = Search {
        candidates: candidates(&config)?,
        config,
    };
    let plans = plan(&search)?;
    if dir.results_path().exists() {
        for result in SearchResults::read(&dir.results_path())?.candidates {
            if let Some(plan) = plans.iter().find(|p| p.id == result.plan.id) {
                let result = CandidateResult {
                    plan: plan.clone(),
                    ..result
                };
                let folder = dir.candidate_dir(&plan.candidate);
                std::fs::create_dir_all(&folder)
                    .map_err(|e| TrainError::run(&folder, format!("cannot create: {e}")))?;
                write_json(&dir.result_path(&plan.candidate), &result)?;
            }
        }
    }
    write_json(&dir.candidates_path(), &plans)?;
    Ok(search)
}

/// Runs (or, with `resume`, continues) the search in `root` on this machine: trains every candidate without
/// a result, `jobs` at a time (`config.jobs` for a new search), then collects the ranking.
pub fn search(
    root: &Path,
    config: SearchConfig,
    resume: bool,
    observer: &dyn SearchObserver,
) -> Result<SearchResults> {
    let jobs = config.jobs;
    if jobs == 0 {
        return Err(TrainError::Options("--jobs must be at least 1".into()));
    }
    let search = if resume {
        open(root)?
    } else {
        create(root, config)?
    };
    let dir = SearchDir::new(root);
    let total = search.candidates.len();
    let pending: VecDeque<(usize, Candidate)> = search
        .candidates
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, c)| !dir.result_path(c).exists())
        .collect();
    let queue = Mutex::new(pending);
    let failure: Mutex<Option<TrainError>> = Mutex::new(None);
    let workers = jobs.min(total).max(1);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                if failure.lock().expect("not poisoned").is_some() {
                    return;
                }
                let Some((index, candidate)) = queue.lock().expect("not poisoned").pop_front()
                else {
                    return;
                };
                observer.started(&candidate, index, total);
                // results.json is rewritten after each candidate, so it shows the search so far.
                match worker::train_and_record(&dir, &search, index, workers)
                    .and_then(|result| collect(root).map(|_| result))
                {
                    Ok(result) => observer.finished(&result, index, total),
                    Err(e) => {
                        failure.lock().expect("not poisoned").get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().expect("not poisoned") {
        return Err(e);
    }
    collect(root)
}

/// A B0 search's settings at `img_size`, for the unit tests (no data: nothing is trained).
#[cfg(test)]
fn sample_config(img_size: u32) -> SearchConfig {
    SearchConfig {
        data: PathBuf::new(),
        val: None,
        val_fraction: 0.2,
        base: "b0".into(),
        img_size,
        phi: 1.0,
        target: 2.0,
        tolerance: 0.1,
        grid: 0.1,
        epochs: 1,
        batch: 8,
        seed: 0,
        lr: None,
        bn_momentum: Some(0.9),
        regularisation: Regularisation::Fixed,
        jobs: 1,
        accelerator: Accelerator::Cpu,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_from_before_the_choice_keeps_the_fixed_recipe_and_its_momentum() {
        let mut old = serde_json::to_value(sample_config(32)).unwrap();
        let fields = old.as_object_mut().unwrap();
        fields.remove("regularisation");
        fields.insert("bn_momentum".into(), 0.95.into());
        let config: SearchConfig = serde_json::from_value(old).unwrap();
        assert_eq!(config.regularisation, Regularisation::Fixed);
        assert_eq!(config.bn_momentum, Some(0.95));
    }

    #[test]
    fn a_folder_from_before_candidates_json_keeps_its_finished_candidates() {
        let root =
            std::env::temp_dir().join(format!("effnet-search-upgrade-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let config = sample_config(32);
        let dir = SearchDir::new(&root);
        write_json(&dir.config_path(), &config).unwrap();
        // results.json as it was written then: no index, no training memory.
        let width = candidates(&config).unwrap()[2];
        assert_eq!(width.kind, Kind::Width);
        let old = r#"{"search": SEARCH, "winner": null, "candidates": [{"id": "ID",
            "kind": "width", "alpha": 1.0, "beta": BETA, "gamma": 1.0, "d": 1.0, "w": BETA, "r": 32,
            "params": 10672254, "macs": 19630000, "macs_ratio": 2.015, "formula_ratio": 2.188,
            "val_accuracy": 0.349, "final_accuracy": 0.3, "train_seconds": 19.6}]}"#
            .replace("SEARCH", &serde_json::to_string(&config).unwrap())
            .replace("ID", &width.id())
            .replace("BETA", &width.beta.to_string());
        std::fs::write(dir.results_path(), old).unwrap();

        let search = open(&root).unwrap();
        assert_eq!(search.candidates, candidates(&config).unwrap());
        let plans: Vec<CandidatePlan> = read_json(&dir.candidates_path()).unwrap();
        assert_eq!(plans.len(), search.candidates.len());
        let width = plans
            .iter()
            .find(|p| p.candidate.kind == Kind::Width)
            .unwrap();
        let result: CandidateResult = read_json(&dir.result_path(&width.candidate)).unwrap();
        assert_eq!(
            result.plan, *width,
            "the plan is recomputed, index included"
        );
        assert_eq!(result.val_accuracy, 0.349);
        // Only that candidate counts as finished.
        let collected = collect(&root).unwrap();
        assert_eq!(collected.candidates.len(), 1);
        assert_eq!(collected.unfinished.len(), search.candidates.len() - 1);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
