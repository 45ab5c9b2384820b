//! `effnet search --slurm` and `--kubernetes`: the search's run folder handed to a cluster's scheduler, one
//! job per candidate plus one that collects.

use crate::output::{bytes, check_output_file, print_json};
use anyhow::{bail, Context, Result};
use clap::Args;
use effnet_train::search::cluster::{
    kubernetes_manifest, submit_slurm, write_slurm_scripts, KubernetesOptions, Resources,
};
use effnet_train::search::{CandidatePlan, Search};
use effnet_weights::atomic::write_atomically;
use serde_json::json;
use std::path::{Path, PathBuf};

/// Where a new search runs when not on this machine.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Create the run and submit it to Slurm: a job array with one task per candidate, and a collect job
    /// that runs after every task has ended. The effnet binary and the run folder must be at the same
    /// paths on the compute nodes (a shared filesystem).
    #[arg(long, conflicts_with = "kubernetes")]
    slurm: bool,
    /// sbatch options written into both scripts after effnet's own, e.g. "--partition=gpu --time=12:00:00".
    #[arg(
        long,
        requires = "slurm",
        allow_hyphen_values = true,
        value_name = "OPTIONS"
    )]
    sbatch_args: Option<String>,
    /// With --slurm: write RUN/slurm/*.sbatch without submitting them.
    #[arg(long, requires = "slurm")]
    dry_run: bool,
    /// Create the run and write a Kubernetes manifest: an Indexed Job (one pod per candidate) and a
    /// collect Job, for `kubectl apply -f FILE.yaml`.
    #[arg(long, value_name = "FILE.yaml")]
    kubernetes: Option<PathBuf>,
    /// The container image with effnet on its PATH [default: effnet:latest].
    #[arg(long, requires = "kubernetes")]
    image: Option<String>,
    /// The PersistentVolumeClaim holding the run folder and the images.
    #[arg(long, requires = "kubernetes", value_name = "CLAIM")]
    pvc: Option<String>,
    /// Where the pods mount the claim [default: the deepest folder holding the run folder and the
    /// images]; they must be under it, at the same paths as here.
    #[arg(long, requires = "kubernetes")]
    mount_path: Option<PathBuf>,
    /// Candidates trained at the same time [default: all].
    #[arg(long, requires = "kubernetes")]
    parallelism: Option<usize>,
    /// CPU cores each candidate's job asks for.
    #[arg(long, default_value_t = 2)]
    cpus_per_task: u32,
}

impl ClusterArgs {
    /// Whether the search goes to a cluster.
    pub fn requested(&self) -> bool {
        self.slurm || self.kubernetes.is_some()
    }

    /// The Kubernetes options (with --kubernetes), checked against the run folder `root` and the image
    /// folders `paths` before the run is created.
    pub fn kubernetes_options(
        &self,
        root: &Path,
        paths: &[&Path],
    ) -> Result<Option<KubernetesOptions>> {
        let Some(file) = &self.kubernetes else {
            return Ok(None);
        };
        check_output_file(file)?;
        let claim = self
            .pvc
            .clone()
            .context("--kubernetes needs --pvc CLAIM: the PersistentVolumeClaim holding the run folder and the images")?;
        let options = KubernetesOptions {
            image: self.image.clone().unwrap_or_else(|| "effnet:latest".into()),
            claim,
            mount_path: match &self.mount_path {
                Some(path) => std::path::absolute(path)?,
                None => common_folder(root, paths)?,
            },
            parallelism: self.parallelism,
        };
        options.check(root, paths)?;
        Ok(Some(options))
    }
}

/// The deepest folder holding the run folder and every image folder: where the claim is mounted by default.
fn common_folder(root: &Path, paths: &[&Path]) -> Result<PathBuf> {
    let mut common = root.parent().unwrap_or(root).to_path_buf();
    for path in paths {
        while !path.starts_with(&common) {
            common = common.parent().unwrap_or(Path::new("/")).to_path_buf();
        }
    }
    if common.parent().is_none() {
        bail!(
            "the run folder {} and the images share no folder but {}: put them on one claim and give --mount-path",
            root.display(),
            common.display()
        );
    }
    Ok(common)
}

/// Writes the job files of the new search `search` in `root` (the Kubernetes manifest with `kubernetes`,
/// the options [`ClusterArgs::kubernetes_options`] gave) and, for Slurm without --dry-run, submits them.
pub fn submit(
    args: &ClusterArgs,
    kubernetes: Option<KubernetesOptions>,
    root: &Path,
    search: &Search,
    plans: &[CandidatePlan],
    json: bool,
) -> Result<()> {
    let resources = Resources::of(search, plans, args.cpus_per_task)?;
    let count = search.candidates.len();
    let described = format!(
        "{count} candidates, each asking for {} cores and {}",
        resources.cpus,
        bytes(resources.memory_mib << 20)
    );
    if args.slurm {
        let effnet = std::env::current_exe().context("cannot find the effnet binary's path")?;
        let scripts = write_slurm_scripts(
            root,
            count,
            &resources,
            &effnet,
            args.sbatch_args.as_deref().unwrap_or_default(),
        )?;
        if args.dry_run {
            if json {
                return print_json(&json!({
                    "run": root, "array_script": scripts.array, "collect_script": scripts.collect,
                    "resources": resources,
                }));
            }
            println!(
                "wrote {} and {} ({described}); submit with:",
                scripts.array.display(),
                scripts.collect.display()
            );
            println!("  id=$(sbatch --parsable {})", scripts.array.display());
            println!(
                "  sbatch --dependency=afterany:$id {}",
                scripts.collect.display()
            );
            return Ok(());
        }
        let jobs = submit_slurm(&scripts)?;
        if json {
            return print_json(&json!({
                "run": root, "array_script": scripts.array, "collect_script": scripts.collect,
                "resources": resources, "array_job": jobs.array, "collect_job": jobs.collect,
            }));
        }
        println!(
            "submitted array job {} ({described}) and collect job {} after it; results in {}",
            jobs.array,
            jobs.collect,
            root.join("results.json").display()
        );
        return Ok(());
    }
    let (Some(file), Some(options)) = (&args.kubernetes, kubernetes) else {
        bail!("neither --slurm nor --kubernetes was given");
    };
    let manifest = kubernetes_manifest(root, search, &resources, &options)?;
    write_atomically(file, manifest.as_bytes())?;
    if json {
        return print_json(&json!({
            "run": root, "manifest": file, "resources": resources,
            "mount_path": options.mount_path, "claim": options.claim, "image": options.image,
        }));
    }
    println!(
        "wrote {} ({described}, {} at a time, claim {} at {}); start it with: kubectl apply -f {}",
        file.display(),
        options.parallelism.unwrap_or(count).min(count),
        options.claim,
        options.mount_path.display(),
        file.display()
    );
    Ok(())
}
