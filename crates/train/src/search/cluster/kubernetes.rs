//! Kubernetes: the candidates as an Indexed Job (pod `I` trains candidate `I`, a retried pod resumes) and a
//! collect Job that waits for every candidate to finish or fail. The run folder lives on a
//! PersistentVolumeClaim mounted at the same path as on the machine that created the run, so the absolute
//! paths in `search.json` hold inside the pods too.

use super::Resources;
use crate::error::{Result, TrainError};
use crate::search::Search;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Where the pods run and what they mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesOptions {
    /// The container image with `effnet` on its `PATH`.
    pub image: String,
    /// The PersistentVolumeClaim holding the run folder and the images.
    pub claim: String,
    /// Where the claim is mounted in the pods: the same path it has where the run was created.
    pub mount_path: PathBuf,
    /// Candidates trained at the same time (`None`: all).
    pub parallelism: Option<usize>,
}

impl KubernetesOptions {
    /// Refuses options the pods could not run with: `root` or one of `paths` outside the mount path, no
    /// parallelism.
    pub fn check(&self, root: &Path, paths: &[&Path]) -> Result<()> {
        for path in std::iter::once(&root).chain(paths) {
            if !path.starts_with(&self.mount_path) {
                return Err(TrainError::run(
                    path,
                    format!(
                        "is not under --mount-path {}, where the claim is mounted: the pods would not see it",
                        self.mount_path.display()
                    ),
                ));
            }
        }
        if self.parallelism == Some(0) {
            return Err(TrainError::Options(
                "--parallelism must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Retries of a failed candidate's pod before its index counts as failed.
const RETRIES_PER_CANDIDATE: u32 = 2;

/// A Job name from the run folder's name: a DNS label (lowercase letters, digits, `-`) that leaves room
/// for the `-collect` suffix.
fn job_name(root: &Path) -> String {
    let folder = root
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let mut name: String = format!("effnet-search-{folder}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    name.truncate(63 - "-collect".len());
    name.trim_end_matches('-').to_owned()
}

fn text(path: &Path) -> Result<&str> {
    path.to_str()
        .ok_or_else(|| TrainError::run(path, "is not valid UTF-8 and cannot go into a manifest"))
}

/// The pod template of one container running `command`.
fn pod(
    name: &str,
    options: &KubernetesOptions,
    command: Vec<&str>,
    resources: Value,
    restart: &str,
) -> Result<Value> {
    Ok(json!({
        "metadata": {"labels": {"app.kubernetes.io/name": "effnet"}},
        "spec": {
            "restartPolicy": restart,
            "containers": [{
                "name": name,
                "image": options.image,
                "command": command,
                "resources": resources,
                "volumeMounts": [{"name": "search", "mountPath": text(&options.mount_path)?}],
            }],
            "volumes": [{"name": "search", "persistentVolumeClaim": {"claimName": options.claim}}],
        },
    }))
}

/// The manifest (YAML, two documents) of `search`, whose folder is `root`: the Indexed Job and the
/// collect Job. The run folder and the images must lie under the mount path.
pub fn kubernetes_manifest(
    root: &Path,
    search: &Search,
    resources: &Resources,
    options: &KubernetesOptions,
) -> Result<String> {
    options.check(root, &search.config.image_folders())?;
    let candidates = search.candidates.len();
    let name = job_name(root);
    let run = text(root)?;
    let mut candidate_resources = json!({
        "requests": {
            "cpu": resources.cpus.to_string(),
            "memory": format!("{}Mi", resources.memory_mib),
        },
    });
    if resources.gpus > 0 {
        candidate_resources["limits"] = json!({"nvidia.com/gpu": resources.gpus});
    }
    let workers = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "effnet"}},
        "spec": {
            "completionMode": "Indexed",
            "completions": candidates,
            "parallelism": options.parallelism.unwrap_or(candidates).min(candidates).max(1),
            "backoffLimitPerIndex": RETRIES_PER_CANDIDATE,
            // Every pod gets its index in JOB_COMPLETION_INDEX; a retried pod resumes its candidate.
            "template": pod(
                "candidate",
                options,
                vec!["effnet", "search", "--out", run],
                candidate_resources,
                "Never",
            )?,
        },
    });
    let collect = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": format!("{name}-collect"), "labels": {"app.kubernetes.io/name": "effnet"}},
        "spec": {
            "backoffLimit": RETRIES_PER_CANDIDATE,
            "template": pod(
                "collect",
                options,
                vec!["effnet", "search", "--out", run, "--collect", "--wait"],
                json!({"requests": {"cpu": "100m", "memory": "256Mi"}}),
                "OnFailure",
            )?,
        },
    });
    let mut manifest = String::new();
    for document in [workers, collect] {
        manifest.push_str("---\n");
        manifest.push_str(
            &serde_norway::to_string(&document)
                .map_err(|e| TrainError::Options(format!("cannot write the manifest: {e}")))?,
        );
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_are_dns_labels_with_room_for_the_suffix() {
        assert_eq!(
            job_name(Path::new("/runs/My_Search.v2")),
            "effnet-search-my-search-v2"
        );
        let long = job_name(Path::new(&"x".repeat(100)));
        assert_eq!(long.len(), 55);
        assert_eq!(job_name(Path::new("/runs/a__")), "effnet-search-a");
    }
}
