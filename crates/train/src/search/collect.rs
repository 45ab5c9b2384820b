//! The ranking of what a search has finished so far. Safe to run at any time, by any number of processes at
//! once: it reads the candidates' own result files and rewrites `results.json` atomically.

use super::{open, CandidateResult, Failure, Search, SearchDir, SearchResults, Unfinished};
use crate::error::Result;
use crate::run::{read_json, write_json, RunDir};
use std::path::Path;
use std::time::Duration;

/// How many times [`collect`] rewrites `results.json` when workers keep finishing while it writes.
const ROUNDS: usize = 16;

/// Reads every candidate's state, ranks the finished ones and writes `results.json`.
///
/// Another collector may have scanned before a worker finished and write after this one: each collector
/// scans again after writing and rewrites when the set of finished or failed candidates changed, so the
/// last write always holds everything finished before it.
pub fn collect(root: &Path) -> Result<SearchResults> {
    let search = open(root)?;
    let dir = SearchDir::new(root);
    let mut results = scan(&dir, &search)?;
    for _ in 0..ROUNDS {
        write_json(&dir.results_path(), &results)?;
        let again = scan(&dir, &search)?;
        if same_outcomes(&results, &again) {
            break;
        }
        results = again;
    }
    Ok(results)
}

/// Waits until no candidate is left without a result or a failure (checking every `poll`), then
/// [`collect`]s.
pub fn wait_and_collect(root: &Path, poll: Duration) -> Result<SearchResults> {
    let search = open(root)?;
    let dir = SearchDir::new(root);
    while !scan(&dir, &search)?.unfinished.is_empty() {
        std::thread::sleep(poll);
    }
    collect(root)
}

fn same_outcomes(a: &SearchResults, b: &SearchResults) -> bool {
    fn ids(r: &SearchResults) -> (Vec<&str>, Vec<&str>) {
        let mut finished: Vec<&str> = r.candidates.iter().map(|c| c.plan.id.as_str()).collect();
        finished.sort_unstable();
        (finished, r.failed.iter().map(|f| f.id.as_str()).collect())
    }
    ids(a) == ids(b)
}

fn scan(dir: &SearchDir, search: &Search) -> Result<SearchResults> {
    let mut results = SearchResults {
        search: search.config.clone(),
        candidates: Vec::new(),
        winner: None,
        unfinished: Vec::new(),
        failed: Vec::new(),
    };
    for (index, candidate) in search.candidates.iter().enumerate() {
        let (result, failure) = (dir.result_path(candidate), dir.failure_path(candidate));
        if result.exists() {
            results
                .candidates
                .push(read_json::<CandidateResult>(&result)?);
        } else if failure.exists() {
            results.failed.push(read_json::<Failure>(&failure)?);
        } else {
            let run = RunDir::new(dir.candidate_dir(candidate));
            let epochs_done = if run.state_path().exists() {
                run.read_state()?.epoch
            } else {
                0
            };
            results.unfinished.push(Unfinished {
                index,
                id: candidate.id(),
                epochs_done,
            });
        }
    }
    results.rank();
    Ok(results)
}
