//! The compound-scaling search of the paper, run for real on the user's data.
//!
//! Step 1 fixes `phi` (1 by default) and enumerates every `(alpha, beta, gamma)` on a grid (`1, 1 + step,
//! ...`, each at least 1) with `|alpha * beta^2 * gamma^2 - target| <= tolerance`. Each candidate is resolved
//! (its real MACs, not just the formula's, are reported), trained from scratch with the same seed, epochs and
//! recipe, and evaluated. The unscaled base and the three single-dimension scalings (depth, width or
//! resolution alone, each at the real MACs the target asks for) are trained too, so the result shows whether
//! compound scaling wins on this data. Step 2 is `effnet fit` / `effnet scale` with `--from-search`.
//!
//! ```text
//! RUN/search.json                 the search settings
//! RUN/results.json                every finished candidate and the winner (rewritten atomically after each)
//! RUN/candidates/<id>/            each candidate's training run (resumable like any run)
//! ```

use crate::config::{Recipe, TrainConfig};
use crate::error::{Result, TrainError};
use crate::run::{read_json, write_json, RunDir};
use crate::trainer::{train, Begin, Silent};
use effnet_arch::scaling::compound;
use effnet_arch::variant::network_by_name_or_blocks;
use effnet_arch::{account, resolve, Coefficients, NetworkConfig};
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
    /// Batch-norm momentum (TF convention).
    pub bn_momentum: f64,
    /// Candidates trained at the same time.
    pub jobs: usize,
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
    /// Its folder name under `candidates/`.
    pub id: String,
    /// The candidate.
    #[serde(flatten)]
    pub candidate: Candidate,
    /// Depth multiplier after scaling.
    pub d: f64,
    /// Width multiplier after scaling.
    pub w: f64,
    /// Resolution after scaling.
    pub r: u32,
    /// Parameters.
    pub params: u64,
    /// Multiply-adds per image.
    pub macs: u64,
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
                .then(a.macs.cmp(&b.macs))
                .then(a.id.cmp(&b.id))
        });
        self.winner = self
            .candidates
            .iter()
            .find(|c| c.candidate.kind == Kind::Compound)
            .map(|c| Winner {
                alpha: c.candidate.alpha,
                beta: c.candidate.beta,
                gamma: c.candidate.gamma,
                val_accuracy: c.val_accuracy,
            });
    }
}

/// Every grid point with each coefficient in `[1, ...]` and `|alpha * beta^2 * gamma^2 - target| <= tolerance`.
pub fn grid(target: f64, tolerance: f64, step: f64) -> Vec<Candidate> {
    let values = |max: f64| -> Vec<f64> {
        let n = ((max - 1.0) / step + 1e-9).floor().max(0.0) as usize;
        (0..=n).map(|i| 1.0 + i as f64 * step).collect()
    };
    let hi = target + tolerance;
    let mut out = Vec::new();
    for &alpha in &values(hi) {
        for &beta in &values(hi.sqrt()) {
            for &gamma in &values(hi.sqrt()) {
                let c = Candidate {
                    kind: Kind::Compound,
                    alpha,
                    beta,
                    gamma,
                };
                if (c.product() - target).abs() <= tolerance + 1e-9 {
                    out.push(c);
                }
            }
        }
    }
    out
}

/// The base network at the search's base resolution.
pub fn base_network(config: &SearchConfig) -> Result<NetworkConfig> {
    let mut base = network_by_name_or_blocks(&config.base)?;
    base.resolution = config.img_size;
    base.preprocessing = base.preprocessing.at_resolution(config.img_size);
    Ok(base)
}

fn scaled(base: &NetworkConfig, phi: f64, c: &Candidate) -> Result<NetworkConfig> {
    Ok(compound(base, phi, c.coefficients())?)
}

fn macs(config: &NetworkConfig) -> Result<u64> {
    Ok(account(&resolve(config)?).macs)
}

/// The smallest coefficient of one dimension whose real MACs reach `target_macs` (bisection: MACs never
/// fall as a coefficient grows).
fn single_dimension(
    base: &NetworkConfig,
    phi: f64,
    kind: Kind,
    target: f64,
    target_macs: u64,
) -> Result<Candidate> {
    let make = |c: f64| Candidate {
        kind,
        alpha: if kind == Kind::Depth { c } else { 1.0 },
        beta: if kind == Kind::Width { c } else { 1.0 },
        gamma: if kind == Kind::Resolution { c } else { 1.0 },
    };
    let (mut lo, mut hi) = (1.0f64, target.max(1.0) * 2.0);
    while macs(&scaled(base, phi, &make(hi))?)? < target_macs {
        if hi > 64.0 {
            return Err(TrainError::Options(format!(
                "{kind:?} scaling alone cannot reach {target_macs} multiply-adds"
            )));
        }
        (lo, hi) = (hi, hi * 2.0);
    }
    for _ in 0..40 {
        let mid = 0.5 * (lo + hi);
        if macs(&scaled(base, phi, &make(mid))?)? >= target_macs {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(make((hi * 1e4).ceil() / 1e4))
}

/// The candidates of a search: the base, the three single-dimension scalings and the compound grid.
pub fn candidates(config: &SearchConfig) -> Result<Vec<Candidate>> {
    let base = base_network(config)?;
    let target_macs = (macs(&base)? as f64 * config.target.powf(config.phi)).round() as u64;
    let mut out = vec![Candidate {
        kind: Kind::Baseline,
        alpha: 1.0,
        beta: 1.0,
        gamma: 1.0,
    }];
    for kind in [Kind::Depth, Kind::Width, Kind::Resolution] {
        out.push(single_dimension(
            &base,
            config.phi,
            kind,
            config.target,
            target_macs,
        )?);
    }
    out.extend(grid(config.target, config.tolerance, config.grid));
    Ok(out)
}

/// Hears about a search's progress.
pub trait SearchObserver: Sync {
    /// A candidate starts training.
    fn started(&self, _candidate: &Candidate, _index: usize, _total: usize) {}
    /// A candidate finished and is recorded.
    fn finished(&self, _result: &CandidateResult, _done: usize, _total: usize) {}
}

/// Paths of a search folder.
pub struct SearchDir {
    /// The folder.
    pub root: PathBuf,
}

impl SearchDir {
    /// `search.json`.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("search.json")
    }

    /// `results.json`.
    pub fn results_path(&self) -> PathBuf {
        self.root.join("results.json")
    }

    /// The run folder of a candidate.
    pub fn candidate_dir(&self, candidate: &Candidate) -> PathBuf {
        self.root.join("candidates").join(candidate.id())
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
        (config.jobs == 0, "--jobs must be at least 1"),
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

fn train_candidate(
    dir: &SearchDir,
    config: &SearchConfig,
    base: &NetworkConfig,
    base_macs: u64,
    candidate: &Candidate,
) -> Result<CandidateResult> {
    let network = scaled(base, config.phi, candidate)?;
    let plan = resolve(&network)?;
    let cost = account(&plan);
    let run = RunDir::new(dir.candidate_dir(candidate));
    let resume = run.state_path().exists();
    if !resume && run.root.exists() {
        // Interrupted before its first epoch: nothing to keep.
        std::fs::remove_dir_all(&run.root)
            .map_err(|e| TrainError::run(&run.root, format!("cannot remove: {e}")))?;
    }
    let mut train_config = TrainConfig::recipe(
        Recipe::Official,
        config.data.clone(),
        config.epochs,
        config.batch,
        network.resolution,
    );
    train_config.val = config.val.clone();
    train_config.val_fraction = config.val_fraction;
    train_config.seed = config.seed;
    train_config.bn_momentum = config.bn_momentum;
    if let Some(lr) = config.lr {
        train_config.lr = lr;
    }
    train_config.network = Some(network.clone());
    train_config.workers = (train_config.workers / config.jobs).max(1);
    let begin = if resume {
        Begin::Resume { epochs: None }
    } else {
        Begin::New(Box::new(train_config))
    };
    let state = train(&run, begin, &Silent)?;
    let seconds = state.records.iter().map(|r| r.seconds).sum::<f64>();
    Ok(CandidateResult {
        id: candidate.id(),
        candidate: *candidate,
        d: network.depth,
        w: network.width,
        r: network.resolution,
        params: cost.params,
        macs: cost.macs,
        macs_ratio: cost.macs as f64 / base_macs as f64,
        formula_ratio: candidate.product().powf(config.phi),
        val_accuracy: state.best_accuracy,
        final_accuracy: state.records.last().map_or(0.0, |r| r.val_accuracy),
        train_seconds: seconds,
    })
}

/// Runs (or, with `resume`, continues) the search in `root`: trains every candidate not yet recorded in
/// `results.json`, `config.jobs` at a time, recording each as it finishes.
pub fn search(
    root: &Path,
    config: SearchConfig,
    resume: bool,
    observer: &dyn SearchObserver,
) -> Result<SearchResults> {
    let dir = SearchDir {
        root: root.to_path_buf(),
    };
    let (config, mut results) = if resume {
        if !dir.config_path().exists() {
            return Err(TrainError::run(
                root,
                "is not a search folder (no search.json)",
            ));
        }
        let saved: SearchConfig = read_json(&dir.config_path())?;
        let results = if dir.results_path().exists() {
            SearchResults::read(&dir.results_path())?
        } else {
            SearchResults {
                search: saved.clone(),
                candidates: Vec::new(),
                winner: None,
            }
        };
        (
            SearchConfig {
                jobs: config.jobs,
                ..saved
            },
            results,
        )
    } else {
        if dir.config_path().exists() {
            return Err(TrainError::run(
                root,
                "already holds a search; continue it with --resume, or choose another --out",
            ));
        }
        std::fs::create_dir_all(root)
            .map_err(|e| TrainError::run(root, format!("cannot create: {e}")))?;
        write_json(&dir.config_path(), &config)?;
        let results = SearchResults {
            search: config.clone(),
            candidates: Vec::new(),
            winner: None,
        };
        (config, results)
    };
    validate(&config)?;
    let base = base_network(&config)?;
    let base_macs = macs(&base)?;
    let all = candidates(&config)?;
    let total = all.len();
    let pending: VecDeque<(usize, Candidate)> = all
        .into_iter()
        .enumerate()
        .filter(|(_, c)| !results.candidates.iter().any(|r| r.id == c.id()))
        .collect();
    let queue = Mutex::new(pending);
    let shared = Mutex::new(&mut results);
    let failure: Mutex<Option<TrainError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..config.jobs {
            scope.spawn(|| loop {
                if failure.lock().expect("not poisoned").is_some() {
                    return;
                }
                let Some((index, candidate)) = queue.lock().expect("not poisoned").pop_front()
                else {
                    return;
                };
                observer.started(&candidate, index, total);
                let outcome = train_candidate(&dir, &config, &base, base_macs, &candidate)
                    .and_then(|result| {
                        let mut results = shared.lock().expect("not poisoned");
                        results.candidates.push(result.clone());
                        results.rank();
                        write_json(&dir.results_path(), &**results)?;
                        observer.finished(&result, results.candidates.len(), total);
                        Ok(())
                    });
                if let Err(e) = outcome {
                    failure.lock().expect("not poisoned").get_or_insert(e);
                    return;
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().expect("not poisoned") {
        return Err(e);
    }
    results.rank();
    write_json(&dir.results_path(), &results)?;
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_holds_exactly_the_admissible_points() {
        let points = grid(2.0, 0.1, 0.1);
        assert_eq!(points.len(), 22);
        assert!(points
            .iter()
            .all(|c| (c.product() - 2.0).abs() <= 0.1 + 1e-9));
        assert!(points
            .iter()
            .all(|c| c.alpha >= 1.0 && c.beta >= 1.0 && c.gamma >= 1.0));
        // The paper's (1.2, 1.1, 1.15) product is 1.92: on a 0.05 grid it is admissible.
        let fine = grid(2.0, 0.1, 0.05);
        assert!(fine.iter().any(|c| (c.alpha - 1.2).abs() < 1e-9
            && (c.beta - 1.1).abs() < 1e-9
            && (c.gamma - 1.15).abs() < 1e-9));
        // Brute force over a wider box finds nothing the grid missed.
        let mut count = 0;
        for a in 0..=30 {
            for b in 0..=30 {
                for g in 0..=30 {
                    let (a, b, g) = (
                        1.0 + a as f64 * 0.1,
                        1.0 + b as f64 * 0.1,
                        1.0 + g as f64 * 0.1,
                    );
                    count += usize::from((a * b * b * g * g - 2.0).abs() <= 0.1 + 1e-9);
                }
            }
        }
        assert_eq!(count, points.len());
    }

    #[test]
    fn single_dimension_baselines_reach_the_target_macs_and_no_further() {
        let config = SearchConfig {
            data: PathBuf::new(),
            val: None,
            val_fraction: 0.2,
            base: "b0".into(),
            img_size: 64,
            phi: 1.0,
            target: 2.0,
            tolerance: 0.1,
            grid: 0.1,
            epochs: 1,
            batch: 8,
            seed: 0,
            lr: None,
            bn_momentum: 0.99,
            jobs: 1,
        };
        let all = candidates(&config).unwrap();
        let base = base_network(&config).unwrap();
        let base_macs = macs(&base).unwrap();
        for c in &all[1..4] {
            let m = macs(&scaled(&base, 1.0, c).unwrap()).unwrap();
            assert!(
                m as f64 >= 2.0 * base_macs as f64,
                "{c:?}: {m} vs {base_macs}"
            );
            // A slightly smaller coefficient falls short: the baseline is the cheapest that reaches the target.
            let mut less = *c;
            match c.kind {
                Kind::Depth => less.alpha -= 0.01,
                Kind::Width => less.beta -= 0.01,
                _ => less.gamma -= 0.01,
            }
            let m_less = macs(&scaled(&base, 1.0, &less).unwrap()).unwrap();
            assert!(
                (m_less as f64) < 2.0 * base_macs as f64,
                "{less:?}: {m_less}"
            );
        }
        assert_eq!(all.len(), 4 + 22);
    }
}
