//! The Hugging Face hub: a repository's `config.json` and weights at a revision, downloaded into the
//! hub's cache layout exactly as `huggingface_hub` writes it, so that both share the files:
//!
//! ```text
//! $HF_HUB_CACHE/models--ORG--NAME/blobs/<etag>                  the file, named by its etag (sha256 for LFS)
//! $HF_HUB_CACHE/models--ORG--NAME/snapshots/<commit>/<file>     a relative link to ../../blobs/<etag>
//! $HF_HUB_CACHE/models--ORG--NAME/refs/<revision>               the commit the revision pointed to
//! ```
//!
//! A download goes to `blobs/<etag>.incomplete` first (and resumes from it), is checked against the size
//! and, for LFS files, the sha256 the server announced, and only then takes its final name. A snapshot
//! that is complete in the cache is used without any request.

use crate::http::{head, Download, Head};
use crate::timm::CONFIG_FILE;
use crate::{HubError, Progress, Result};
use effnet_weights::load::sha256_file;
use std::path::{Path, PathBuf};

/// Weights files of a timm repository in order of preference (beside its `config.json`).
pub const WEIGHT_FILES: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];

/// Where and how to reach the hub, from the environment as `huggingface_hub` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfSettings {
    /// `HF_ENDPOINT` (default `https://huggingface.co`).
    pub endpoint: String,
    /// `HF_HUB_CACHE` (default `$HF_HOME/hub`, `HF_HOME` defaulting to `~/.cache/huggingface`).
    pub cache: PathBuf,
    /// `HF_HUB_OFFLINE=1`: use the cache only.
    pub offline: bool,
    /// `HF_TOKEN`, or the token file `$HF_HOME/token` that `huggingface-cli login` writes.
    pub token: Option<String>,
}

/// `~/.cache`, or `XDG_CACHE_HOME`.
pub(crate) fn user_cache() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"))
}

impl HfSettings {
    /// The settings the environment gives.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let home = var("HF_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| user_cache().join("huggingface"));
        let token = var("HF_TOKEN").or_else(|| {
            std::fs::read_to_string(home.join("token"))
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        });
        Self {
            endpoint: var("HF_ENDPOINT")
                .unwrap_or_else(|| "https://huggingface.co".into())
                .trim_end_matches('/')
                .to_string(),
            cache: var("HF_HUB_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join("hub")),
            offline: var("HF_HUB_OFFLINE")
                .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "yes")),
            token,
        }
    }

    /// The cache folder of a repository.
    pub fn repo_folder(&self, repo: &str) -> PathBuf {
        self.cache
            .join(format!("models--{}", repo.replace('/', "--")))
    }
}

/// Whether `text` is a full commit hash.
fn is_commit(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The files a complete snapshot folder holds: the config and one weights file.
fn complete(snapshot: &Path) -> bool {
    snapshot.join(CONFIG_FILE).is_file() && WEIGHT_FILES.iter().any(|f| snapshot.join(f).is_file())
}

/// The commit `revision` points to in the cache, if it is known there.
fn cached_commit(folder: &Path, revision: &str) -> Option<String> {
    if is_commit(revision) {
        return Some(revision.to_string());
    }
    let text = std::fs::read_to_string(folder.join("refs").join(revision)).ok()?;
    Some(text.trim().to_string()).filter(|c| is_commit(c))
}

/// The snapshot folder of `repo` at `revision` holding `config.json` and the weights, downloading what the
/// cache lacks (nothing when the snapshot is complete).
pub fn snapshot(
    settings: &HfSettings,
    repo: &str,
    revision: &str,
    progress: &dyn Progress,
) -> Result<PathBuf> {
    let folder = settings.repo_folder(repo);
    if let Some(commit) = cached_commit(&folder, revision) {
        let snapshot = folder.join("snapshots").join(&commit);
        if complete(&snapshot) {
            return Ok(snapshot);
        }
    }
    if settings.offline {
        return Err(HubError::NotCached(format!(
            "hf:{repo}@{revision} is not in the cache ({}) and HF_HUB_OFFLINE is set: run once without it",
            folder.display()
        )));
    }
    let client = Client {
        settings,
        repo,
        revision,
        folder: &folder,
    };
    let config = client.file(CONFIG_FILE, progress)?.ok_or_else(|| {
        HubError::NotFound(format!(
            "hf:{repo}@{revision} has no {CONFIG_FILE}: it is not a pytorch-image-models repository"
        ))
    })?;
    let mut weights = None;
    for file in WEIGHT_FILES {
        if let Some(found) = client.file(file, progress)? {
            weights = Some(found);
            break;
        }
    }
    let weights = weights.ok_or_else(|| {
        HubError::NotFound(format!(
            "hf:{repo}@{revision} has neither {}",
            WEIGHT_FILES.join(" nor ")
        ))
    })?;
    if weights != config {
        return Err(HubError::Network(format!(
            "hf:{repo}@{revision} moved to another commit during the download; run again"
        )));
    }
    if !is_commit(revision) {
        let refs = folder.join("refs");
        let path = refs.join(revision);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
        }
        effnet_weights::atomic::write_atomically(&path, config.as_bytes())
            .map_err(|e| HubError::io(&path, e))?;
    }
    Ok(folder.join("snapshots").join(config))
}

/// One repository at one revision on the endpoint.
struct Client<'a> {
    settings: &'a HfSettings,
    repo: &'a str,
    revision: &'a str,
    folder: &'a Path,
}

/// What a `HEAD` of a file on the hub says.
struct Metadata {
    commit: String,
    etag: String,
    size: Option<u64>,
    location: String,
}

impl Client<'_> {
    fn url(&self, file: &str) -> String {
        // A revision such as `refs/pr/1` is one path segment, as `huggingface_hub` quotes it.
        format!(
            "{}/{}/resolve/{}/{file}",
            self.settings.endpoint,
            self.repo,
            self.revision.replace('/', "%2F")
        )
    }

    fn hint(&self) -> &'static str {
        "; set HF_HUB_OFFLINE=1 to use the cache only, or check the connection (HF_ENDPOINT, proxies)"
    }

    /// What the hub says of `file`; `None` when the repository has no such file.
    fn metadata(&self, file: &str) -> Result<Option<Metadata>> {
        let url = self.url(file);
        let mut response = head(&url, self.settings.token.as_deref(), self.hint())?;
        let mut target = url.clone();
        // A relative redirect stays on the hub (a renamed repository): follow it for the headers.
        for _ in 0..5 {
            let Some(location) = response.header("location").filter(|l| l.starts_with('/')) else {
                break;
            };
            if !(300..400).contains(&response.status) || response.header("x-repo-commit").is_some()
            {
                break;
            }
            target = format!("{}{location}", self.settings.endpoint);
            response = head(&target, self.settings.token.as_deref(), self.hint())?;
        }
        let name = format!("hf:{}@{}", self.repo, self.revision);
        match response.status {
            200..=399 => {}
            404 if error_code(&response) == Some("EntryNotFound") => return Ok(None),
            404 => {
                return Err(HubError::NotFound(format!(
                    "{name}: no such repository or revision on {} (404)",
                    self.settings.endpoint
                )))
            }
            401 | 403 => {
                let reason = match (error_code(&response), &self.settings.token) {
                    (Some("GatedRepo"), None) => "is gated: accept its terms on the hub, then set HF_TOKEN",
                    (_, None) => "does not exist, or is private or gated and needs a token: set HF_TOKEN",
                    (_, Some(_)) => "refused the token in HF_TOKEN (is it valid, with access to this repository?)",
                };
                return Err(HubError::Unauthorized(format!(
                    "{name} {reason} ({})",
                    response.status
                )));
            }
            status => {
                return Err(HubError::Network(format!(
                    "{url}: the hub answered {status}"
                )))
            }
        }
        let header = |n: &str| response.header(n).map(str::to_string);
        let commit = header("x-repo-commit")
            .filter(|c| is_commit(c))
            .ok_or_else(|| {
                HubError::Network(format!(
                    "{url}: the answer has no X-Repo-Commit header; is HF_ENDPOINT a hub?"
                ))
            })?;
        let etag = header("x-linked-etag")
            .or_else(|| header("etag"))
            .map(|e| e.trim_start_matches("W/").trim_matches('"').to_string())
            .filter(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
            .ok_or_else(|| HubError::Network(format!("{url}: the answer has no usable ETag")))?;
        let size = header("x-linked-size")
            .or_else(|| header("content-length"))
            .and_then(|s| s.parse().ok());
        let location = match header("location") {
            Some(l) if l.starts_with('/') => format!("{}{l}", self.settings.endpoint),
            Some(l) if (300..400).contains(&response.status) => l,
            _ => target,
        };
        Ok(Some(Metadata {
            commit,
            etag,
            size,
            location,
        }))
    }

    /// Makes `file` present in its snapshot (downloading its blob if needed); returns the commit, or
    /// `None` when the repository has no such file.
    fn file(&self, file: &str, progress: &dyn Progress) -> Result<Option<String>> {
        let Some(meta) = self.metadata(file)? else {
            return Ok(None);
        };
        let blobs = self.folder.join("blobs");
        std::fs::create_dir_all(&blobs).map_err(|e| HubError::io(&blobs, e))?;
        let blob = blobs.join(&meta.etag);
        if !blob.is_file() {
            let partial = blobs.join(format!("{}.incomplete", meta.etag));
            // The token goes with the first request only; redirects (to a CDN) never carry it.
            let token = self
                .settings
                .token
                .as_deref()
                .filter(|_| same_host(&meta.location, &self.settings.endpoint));
            Download {
                url: &meta.location,
                token,
                partial: &partial,
                size: meta.size,
                what: file,
                hint: self.hint(),
            }
            .run(progress)?;
            if meta.etag.len() == 64 {
                let got = sha256_file(&partial).map_err(|e| HubError::io(&partial, e))?;
                if got != meta.etag {
                    let _ = std::fs::remove_file(&partial);
                    return Err(HubError::Corrupt(format!(
                        "hf:{}/{file}: the download's sha256 is {got}, the hub announced {}; removed it, run again",
                        self.repo, meta.etag
                    )));
                }
            }
            std::fs::rename(&partial, &blob).map_err(|e| HubError::io(&blob, e))?;
        }
        let snapshot = self.folder.join("snapshots").join(&meta.commit);
        std::fs::create_dir_all(&snapshot).map_err(|e| HubError::io(&snapshot, e))?;
        link(
            &blob,
            &snapshot.join(file),
            &format!("../../blobs/{}", meta.etag),
        )?;
        Ok(Some(meta.commit))
    }
}

/// The hub's `X-Error-Code` header.
fn error_code(response: &Head) -> Option<&str> {
    response.header("x-error-code")
}

/// Whether two URLs name the same scheme, host and port.
fn same_host(a: &str, b: &str) -> bool {
    let origin = |url: &str| -> String {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let host = rest.split('/').next().unwrap_or("");
        format!("{}://{host}", url.split("://").next().unwrap_or(""))
    };
    origin(a) == origin(b)
}

/// Points `link_path` at `blob` through the relative `target`, atomically (a link made beside it, then
/// renamed over it).
#[cfg(unix)]
fn link(_blob: &Path, link_path: &Path, target: &str) -> Result<()> {
    let temporary = link_path.with_extension(format!("effnet-{}.link", std::process::id()));
    let _ = std::fs::remove_file(&temporary);
    std::os::unix::fs::symlink(target, &temporary)
        .and_then(|()| std::fs::rename(&temporary, link_path))
        .map_err(|e| HubError::io(link_path, e))
}

/// Where links need privileges (Windows), `huggingface_hub` copies the blob into the snapshot; so does
/// effnet, through a temporary copy renamed into place.
#[cfg(not(unix))]
fn link(blob: &Path, link_path: &Path, _target: &str) -> Result<()> {
    let temporary = link_path.with_extension(format!("effnet-{}.copy", std::process::id()));
    std::fs::copy(blob, &temporary)
        .and_then(|_| std::fs::rename(&temporary, link_path))
        .map(|_| ())
        .map_err(|e| HubError::io(link_path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_map_to_the_hub_folder_names() {
        let settings = HfSettings {
            endpoint: "https://huggingface.co".into(),
            cache: PathBuf::from("/c"),
            offline: false,
            token: None,
        };
        assert_eq!(
            settings.repo_folder("timm/efficientnet_b0.ra_in1k"),
            PathBuf::from("/c/models--timm--efficientnet_b0.ra_in1k")
        );
        assert!(same_host("http://127.0.0.1:8/a/b", "http://127.0.0.1:8"));
        assert!(!same_host(
            "https://cdn.example/x",
            "https://huggingface.co"
        ));
        assert!(is_commit(&"a".repeat(40)) && !is_commit("main"));
        let client = Client {
            settings: &settings,
            repo: "timm/x",
            revision: "refs/pr/1",
            folder: Path::new("/c"),
        };
        assert_eq!(
            client.url("config.json"),
            "https://huggingface.co/timm/x/resolve/refs%2Fpr%2F1/config.json"
        );
    }
}
