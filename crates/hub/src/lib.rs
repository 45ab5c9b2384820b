//! EfficientNet weights by name. `hf:ORG/NAME[@REVISION]` downloads a pytorch-image-models repository from
//! the Hugging Face hub into the hub's own cache layout (shared with Python's `huggingface_hub`);
//! `torchvision:efficientnet_b0` downloads torchvision's published file into torch's checkpoint cache; a
//! folder holding a timm `config.json` and its weights is read the same way. The name brings the
//! preprocessing the weights were trained with (timm's test-time size and crop by default).

pub mod cache;
pub mod hf;
mod http;
pub mod known;
pub mod timm;
pub mod torchvision;

use effnet_arch::NetworkConfig;
use effnet_weights::Layout;
use std::path::{Path, PathBuf};

/// An error finding or downloading weights.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The name cannot be understood.
    #[error("{0}")]
    BadName(String),
    /// The server said the repository or file does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The repository needs a token that was not given (or was refused).
    #[error("{0}")]
    Unauthorized(String),
    /// The server could not be reached, or answered unexpectedly.
    #[error("{0}")]
    Network(String),
    /// Offline mode, and the cache does not hold what was asked for.
    #[error("{0}")]
    NotCached(String),
    /// A download does not match its published size or hash.
    #[error("{0}")]
    Corrupt(String),
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A timm `config.json` that cannot be used.
    #[error("{path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

impl HubError {
    pub(crate) fn io(path: &Path, e: impl std::fmt::Display) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }
}

/// Result of the hub functions.
pub type Result<T> = std::result::Result<T, HubError>;

/// What `--weights` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightsName {
    /// A Hugging Face hub repository at a revision (a branch, tag or commit).
    Hf {
        /// `ORG/NAME`.
        repo: String,
        /// Branch, tag or commit (`main` when not given).
        revision: String,
    },
    /// A torchvision weights enum: `efficientnet_b0` (its default) or `efficientnet_b1.IMAGENET1K_V1`.
    Torchvision(String),
    /// A file, or a folder with a timm `config.json` and its weights.
    Path(PathBuf),
}

impl WeightsName {
    /// Parses `hf:ORG/NAME[@REVISION]`, `torchvision:NAME[.ENUM]`, or a path.
    pub fn parse(text: &str) -> Result<Self> {
        if let Some(rest) = text.strip_prefix("hf:") {
            let (repo, revision) = rest.split_once('@').unwrap_or((rest, "main"));
            let valid = |part: &str| {
                !part.is_empty()
                    && part != "."
                    && part != ".."
                    && part
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            };
            let parts: Vec<&str> = repo.split('/').collect();
            if parts.len() != 2 || !parts.iter().all(|p| valid(p)) {
                return Err(HubError::BadName(format!(
                    "`{text}`: a hub name is hf:ORG/NAME or hf:ORG/NAME@REVISION"
                )));
            }
            if revision.is_empty() || revision.contains("..") || revision.starts_with('/') {
                return Err(HubError::BadName(format!(
                    "`{text}`: bad revision `{revision}`"
                )));
            }
            return Ok(Self::Hf {
                repo: repo.to_string(),
                revision: revision.to_string(),
            });
        }
        if let Some(name) = text.strip_prefix("torchvision:") {
            return Ok(Self::Torchvision(name.to_string()));
        }
        Ok(Self::Path(PathBuf::from(text)))
    }
}

/// Weights found by name: the file to load and what the name says about them.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched {
    /// The weights file.
    pub file: PathBuf,
    /// The network, classes and preprocessing, when the name says (a timm config, torchvision's table).
    pub model: Option<NetworkConfig>,
    /// The key layout of the file.
    pub layout: Option<Layout>,
    /// Class names, when the name brings them.
    pub labels: Vec<String>,
    /// Where the weights come from.
    pub source: String,
    /// Their licence, when known.
    pub license: String,
}

/// Reports a download's progress (a progress bar in the command line).
pub trait Progress {
    /// A download of `total` bytes (when known) starts; `done` are already there (a resumed download).
    fn start(&self, what: &str, total: Option<u64>, done: u64);
    /// `bytes` more arrived.
    fn advance(&self, bytes: u64);
    /// The download ended.
    fn finish(&self);
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: &str, _: Option<u64>, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// Finds the weights `name` refers to, downloading them when they are not in the cache.
pub fn fetch(name: &WeightsName, progress: &dyn Progress) -> Result<Fetched> {
    match name {
        WeightsName::Hf { repo, revision } => {
            let settings = hf::HfSettings::from_env();
            let snapshot = hf::snapshot(&settings, repo, revision, progress)?;
            timm_folder(&snapshot, &format!("hf:{repo}@{revision}"))
        }
        WeightsName::Torchvision(name) => torchvision::fetch(name, progress),
        WeightsName::Path(path) if path.join(timm::CONFIG_FILE).is_file() => {
            timm_folder(path, &path.display().to_string())
        }
        WeightsName::Path(path) => Ok(Fetched {
            file: path.clone(),
            model: None,
            layout: None,
            labels: Vec::new(),
            source: String::new(),
            license: String::new(),
        }),
    }
}

/// The weights of a folder holding a timm `config.json` and `model.safetensors` (or
/// `pytorch_model.bin`), described by the config.
fn timm_folder(folder: &Path, source: &str) -> Result<Fetched> {
    let config = timm::TimmConfig::read(&folder.join(timm::CONFIG_FILE))?;
    let file = hf::WEIGHT_FILES
        .iter()
        .map(|f| folder.join(f))
        .find(|f| f.is_file())
        .ok_or_else(|| {
            HubError::io(
                folder,
                format!(
                    "holds {} but no {}",
                    timm::CONFIG_FILE,
                    hf::WEIGHT_FILES.join(" or ")
                ),
            )
        })?;
    Ok(Fetched {
        model: Some(config.network()?),
        layout: Some(Layout::Timm),
        labels: config.labels(),
        source: source.to_string(),
        license: config.license().unwrap_or_default().to_string(),
        file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_bad_ones_say_the_form() {
        assert_eq!(
            WeightsName::parse("hf:timm/efficientnet_b0.ra_in1k").unwrap(),
            WeightsName::Hf {
                repo: "timm/efficientnet_b0.ra_in1k".into(),
                revision: "main".into()
            }
        );
        assert_eq!(
            WeightsName::parse("hf:timm/x@v1.0").unwrap(),
            WeightsName::Hf {
                repo: "timm/x".into(),
                revision: "v1.0".into()
            }
        );
        for bad in [
            "hf:timm", "hf:a/b/c", "hf:../x", "hf:a/..", "hf:a/b@", "hf:a b/c",
        ] {
            assert!(WeightsName::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            WeightsName::parse("torchvision:efficientnet_b0").unwrap(),
            WeightsName::Torchvision("efficientnet_b0".into())
        );
        assert_eq!(
            WeightsName::parse("w.safetensors").unwrap(),
            WeightsName::Path("w.safetensors".into())
        );
    }
}
