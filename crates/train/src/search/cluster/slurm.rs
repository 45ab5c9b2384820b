//! Slurm: the candidates as one job array (task `I` trains candidate `I`, requeued tasks resume), and a
//! collect job that runs once every array task has ended, however it ended (`afterany`).

use super::Resources;
use crate::error::{Result, TrainError};
use effnet_weights::atomic::write_atomically;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The two batch scripts of a search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmScripts {
    /// `RUN/slurm/search.sbatch`: the array job.
    pub array: PathBuf,
    /// `RUN/slurm/collect.sbatch`: the collect job.
    pub collect: PathBuf,
}

/// The job ids `sbatch` gave the two scripts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmSubmission {
    /// The array job.
    pub array: String,
    /// The collect job, dependent on the array.
    pub collect: String,
}

/// `text` as one shell word: as it is when it has no character a shell or sbatch would read specially
/// (sbatch directives then read like hand-written ones), quoted otherwise.
fn quote(text: &str) -> Result<String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_=:,./%+@".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        return Ok(text.to_owned());
    }
    shlex::try_quote(text)
        .map(|q| q.into_owned())
        .map_err(|_| TrainError::Options(format!("{text:?} cannot be quoted for a shell script")))
}

fn path_text(path: &Path) -> Result<String> {
    path.to_str().map(str::to_owned).ok_or_else(|| {
        TrainError::run(path, "is not valid UTF-8 and cannot go into a batch script")
    })
}

/// Splits `--sbatch-args` the way a shell would into one `#SBATCH` directive per option (an option's
/// separate value words stay on its line, quoted), refusing what it cannot split.
fn sbatch_lines(extra: &str) -> Result<Vec<String>> {
    let words = shlex::split(extra).ok_or_else(|| {
        TrainError::Options(format!("--sbatch-args {extra:?} has an unbalanced quote"))
    })?;
    let mut lines: Vec<String> = Vec::new();
    for word in words {
        match lines.last_mut() {
            _ if word.starts_with('-') => lines.push(format!("#SBATCH {}", quote(&word)?)),
            Some(line) => {
                line.push(' ');
                line.push_str(&quote(&word)?);
            }
            None => {
                return Err(TrainError::Options(format!(
                    "--sbatch-args: {word:?} is not an sbatch option (options start with -)"
                )))
            }
        }
    }
    Ok(lines)
}

/// Writes `RUN/slurm/search.sbatch` (one array task per candidate, each with `resources`) and
/// `RUN/slurm/collect.sbatch`, both running `effnet`, the binary at that path on every node. `extra`
/// (sbatch options, as one shell-quoted string) goes into both after effnet's own directives, so it can
/// override them. Task logs go to `RUN/slurm/candidate-I.log`, appended to by a requeued or resubmitted task.
pub fn write_slurm_scripts(
    root: &Path,
    candidates: usize,
    resources: &Resources,
    effnet: &Path,
    extra: &str,
) -> Result<SlurmScripts> {
    let dir = root.join("slurm");
    std::fs::create_dir_all(&dir)
        .map_err(|e| TrainError::run(&dir, format!("cannot create: {e}")))?;
    let (run, bin, logs) = (
        quote(&path_text(root)?)?,
        quote(&path_text(effnet)?)?,
        path_text(&dir)?,
    );
    let extra = sbatch_lines(extra)?;
    let script = |lines: Vec<String>, command: String| {
        let mut text = String::from("#!/bin/bash\n");
        for line in lines.into_iter().chain(extra.iter().cloned()) {
            text.push_str(&line);
            text.push('\n');
        }
        text.push_str("set -euo pipefail\n");
        text.push_str(&command);
        text.push('\n');
        text
    };
    let mut array = vec![
        "# One task per candidate of the search; task I trains candidate I, resuming it if an earlier".into(),
        "# attempt stopped. Retry one with: sbatch --array=I this-file".into(),
        "#SBATCH --job-name=effnet-search".into(),
        format!("#SBATCH --array=0-{}", candidates.saturating_sub(1)),
        "#SBATCH --ntasks=1".into(),
        format!("#SBATCH --cpus-per-task={}", resources.cpus),
        format!("#SBATCH --mem={}M", resources.memory_mib),
        "#SBATCH --requeue".into(),
        "#SBATCH --open-mode=append".into(),
        quote(&format!("--output={logs}/candidate-%a.log"))
            .map(|q| format!("#SBATCH {q}"))?,
    ];
    if resources.gpus > 0 {
        array.push(format!("#SBATCH --gpus-per-task={}", resources.gpus));
    }
    let collect = vec![
        "# Ranks the finished candidates into results.json and results.png; safe to run any time."
            .into(),
        "#SBATCH --job-name=effnet-collect".into(),
        "#SBATCH --ntasks=1".into(),
        "#SBATCH --cpus-per-task=1".into(),
        "#SBATCH --mem=512M".into(),
        "#SBATCH --open-mode=append".into(),
        quote(&format!("--output={logs}/collect.log")).map(|q| format!("#SBATCH {q}"))?,
    ];
    let scripts = SlurmScripts {
        array: dir.join("search.sbatch"),
        collect: dir.join("collect.sbatch"),
    };
    for (path, text) in [
        (
            &scripts.array,
            script(array, format!("exec {bin} search --out {run}")),
        ),
        (
            &scripts.collect,
            script(collect, format!("exec {bin} search --out {run} --collect")),
        ),
    ] {
        write_atomically(path, text.as_bytes()).map_err(|e| TrainError::run(path, e.reason))?;
    }
    Ok(scripts)
}

fn sbatch(args: &[&str]) -> Result<String> {
    let output = Command::new("sbatch")
        .arg("--parsable")
        .args(args)
        .output()
        .map_err(|e| {
            TrainError::Options(format!(
                "cannot run sbatch ({e}): is this a Slurm login node? --dry-run writes the scripts only"
            ))
        })?;
    if !output.status.success() {
        return Err(TrainError::Options(format!(
            "sbatch {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    // `--parsable` prints `id` or `id;cluster`.
    let text = String::from_utf8_lossy(&output.stdout);
    let id = text.trim().split(';').next().unwrap_or_default().to_owned();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TrainError::Options(format!(
            "sbatch printed {:?}, not a job id",
            text.trim()
        )));
    }
    Ok(id)
}

/// Submits the array job, then the collect job to run after every array task has ended.
pub fn submit_slurm(scripts: &SlurmScripts) -> Result<SlurmSubmission> {
    let (array_script, collect_script) = (path_text(&scripts.array)?, path_text(&scripts.collect)?);
    let by_hand = |e: TrainError, what: &str| {
        TrainError::Options(format!(
            "{e}\n{what}; the scripts are written: id=$(sbatch --parsable {array_script}); sbatch --dependency=afterany:$id {collect_script}"
        ))
    };
    let array = sbatch(&[&array_script]).map_err(|e| by_hand(e, "nothing was submitted"))?;
    let collect =
        sbatch(&[&format!("--dependency=afterany:{array}"), &collect_script]).map_err(|e| {
            by_hand(
                e,
                &format!("array job {array} was submitted, the collect job was not"),
            )
        })?;
    Ok(SlurmSubmission { array, collect })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sbatch_args_become_directives_and_odd_ones_are_refused() {
        assert_eq!(
            sbatch_lines("--partition=gpu -A lab --comment 'two words'").unwrap(),
            [
                "#SBATCH --partition=gpu",
                "#SBATCH -A lab",
                "#SBATCH --comment 'two words'"
            ]
        );
        assert!(sbatch_lines("gpu").is_err());
        assert!(sbatch_lines("--comment 'open").is_err());
        assert!(sbatch_lines("").unwrap().is_empty());
    }
}
