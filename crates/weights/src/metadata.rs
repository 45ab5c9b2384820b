//! Metadata stored with every weights file effnet writes: the network, its runtime conventions, its
//! preprocessing, its labels and where the weights came from. Stored as the safetensors string map.

use crate::error::{Result, WeightsError};
use effnet_arch::preprocess::{CropMode, Interpolation, Preprocessing};
use effnet_arch::scaling::{MULTIPLIER_RANGE, RESOLUTION_RANGE};
use effnet_arch::spec::{decode_blocks, encode_blocks};
use effnet_arch::variant::{Activation, BaseNetwork};
use effnet_arch::{NetworkConfig, Padding};
use std::collections::HashMap;
use std::path::Path;

/// The key that marks a file as written by effnet, with the metadata format version.
pub const FORMAT_KEY: &str = "effnet.format";
/// The current metadata format.
pub const FORMAT_VERSION: &str = "1";

/// Where weights came from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Provenance {
    /// Where the weights were obtained (package, URL, training run).
    pub source: String,
    /// Their licence.
    pub license: String,
    /// sha256 of the file they were converted from.
    pub source_sha256: String,
}

/// Everything the metadata says.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightMetadata {
    /// The network, with padding, BN epsilon and preprocessing.
    pub config: NetworkConfig,
    /// Class labels, one per output (empty: unknown).
    pub labels: Vec<String>,
    /// Where the weights came from.
    pub provenance: Provenance,
}

fn join(values: &[f32]) -> String {
    values
        .iter()
        .map(|v| format!("{v:?}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl WeightMetadata {
    /// Encodes as the string map stored in the file.
    pub fn to_map(&self) -> HashMap<String, String> {
        let c = &self.config;
        let p = &c.preprocessing;
        let mut m: HashMap<String, String> = [
            (FORMAT_KEY, FORMAT_VERSION.to_string()),
            ("model", c.name.clone()),
            ("blocks", encode_blocks(&c.base.blocks)),
            ("stem_filters", c.base.stem_filters.to_string()),
            ("head_filters", c.base.head_filters.to_string()),
            ("base_resolution", c.base.resolution.to_string()),
            ("activation", c.base.activation.name().to_string()),
            ("fix_head_stem", c.base.fix_head_stem.to_string()),
            ("width", format!("{:?}", c.width)),
            ("depth", format!("{:?}", c.depth)),
            ("resolution", c.resolution.to_string()),
            ("dropout", format!("{:?}", c.dropout)),
            ("drop_path_rate", format!("{:?}", c.drop_path_rate)),
            ("num_classes", c.num_classes.to_string()),
            ("padding", c.padding.name().to_string()),
            ("bn_eps", format!("{:?}", c.bn_eps)),
            ("mean", join(&p.mean)),
            ("std", join(&p.std)),
            ("crop_pct", format!("{:?}", p.crop_pct)),
            ("crop_mode", p.crop_mode.name().to_string()),
            (
                "interpolation",
                format!("{:?}", p.interpolation).to_lowercase(),
            ),
            ("source", self.provenance.source.clone()),
            ("license", self.provenance.license.clone()),
            ("source_sha256", self.provenance.source_sha256.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if !self.labels.is_empty() {
            m.insert(
                "labels".into(),
                serde_json::to_string(&self.labels).expect("strings serialise"),
            );
        }
        m
    }

    /// Decodes the map of a file effnet wrote; `None` if the file carries no effnet metadata.
    pub fn from_map(path: &Path, m: &HashMap<String, String>) -> Result<Option<Self>> {
        if !m.contains_key(FORMAT_KEY) {
            return Ok(None);
        }
        let get = |key: &str| {
            m.get(key)
                .map(String::as_str)
                .ok_or_else(|| WeightsError::file(path, format!("metadata lacks `{key}`")))
        };
        fn parse<T: std::str::FromStr>(path: &Path, key: &str, text: &str) -> Result<T> {
            text.parse().map_err(|_| {
                WeightsError::file(path, format!("metadata `{key}` = `{text}` is not valid"))
            })
        }
        let num = |key: &str| -> Result<f64> { parse(path, key, get(key)?) };
        let int = |key: &str| -> Result<u32> { parse(path, key, get(key)?) };
        let triple = |key: &str| -> Result<[f32; 3]> {
            let v: Vec<f32> = get(key)?
                .split(',')
                .map(|t| parse(path, key, t))
                .collect::<Result<_>>()?;
            v.try_into().map_err(|_| {
                WeightsError::file(path, format!("metadata `{key}` needs three values"))
            })
        };
        let activation = Activation::from_name(get("activation")?)
            .ok_or_else(|| WeightsError::file(path, "metadata `activation` is unknown"))?;
        let base = BaseNetwork {
            blocks: decode_blocks(get("blocks")?)?,
            stem_filters: int("stem_filters")?,
            head_filters: int("head_filters")?,
            resolution: int("base_resolution")?,
            activation,
            fix_head_stem: parse(path, "fix_head_stem", get("fix_head_stem")?)?,
        };
        base.validate()?;
        let preprocessing = Preprocessing {
            mean: triple("mean")?,
            std: triple("std")?,
            crop_pct: num("crop_pct")?,
            interpolation: Interpolation::from_name(get("interpolation")?)
                .ok_or_else(|| WeightsError::file(path, "metadata `interpolation` is unknown"))?,
            // Files written before crop modes existed used TF's crop.
            crop_mode: match m.get("crop_mode") {
                Some(name) => CropMode::from_name(name)
                    .ok_or_else(|| WeightsError::file(path, "metadata `crop_mode` is unknown"))?,
                None => CropMode::Tf,
            },
        };
        let config = NetworkConfig {
            name: get("model")?.to_string(),
            base,
            width: num("width")?,
            depth: num("depth")?,
            resolution: int("resolution")?,
            dropout: num("dropout")?,
            drop_path_rate: num("drop_path_rate")?,
            num_classes: int("num_classes")?,
            padding: Padding::from_name(get("padding")?)
                .ok_or_else(|| WeightsError::file(path, "metadata `padding` is unknown"))?,
            bn_eps: num("bn_eps")?,
            preprocessing,
        };
        check_values(path, &config)?;
        let labels = match m.get("labels") {
            Some(text) => serde_json::from_str(text)
                .map_err(|e| WeightsError::file(path, format!("metadata `labels`: {e}")))?,
            None => Vec::new(),
        };
        let text = |key: &str| m.get(key).cloned().unwrap_or_default();
        let provenance = Provenance {
            source: text("source"),
            license: text("license"),
            source_sha256: text("source_sha256"),
        };
        Ok(Some(Self {
            config,
            labels,
            provenance,
        }))
    }
}

/// Refuses metadata values that the same settings given as flags would refuse: a NaN or out-of-range
/// epsilon, std, crop fraction, resolution or multiplier would give NaN scores or a 1-pixel crop.
fn check_values(path: &Path, c: &NetworkConfig) -> Result<()> {
    let p = &c.preprocessing;
    let (rmin, rmax) = RESOLUTION_RANGE;
    let (mmin, mmax) = MULTIPLIER_RANGE;
    let checks: [(&str, bool, String); 9] = [
        (
            "bn_eps",
            c.bn_eps > 0.0 && c.bn_eps < 1.0,
            "in (0, 1)".into(),
        ),
        (
            "crop_pct",
            p.crop_pct > 0.0 && p.crop_pct <= 1.0,
            "in (0, 1]".into(),
        ),
        (
            "std",
            p.std.iter().all(|s| s.is_finite() && *s > 0.0),
            "positive".into(),
        ),
        (
            "mean",
            p.mean.iter().all(|m| m.is_finite()),
            "finite".into(),
        ),
        (
            "resolution",
            (rmin..=rmax).contains(&c.resolution),
            format!("in {rmin}..={rmax}"),
        ),
        (
            "width",
            (mmin..=mmax).contains(&c.width),
            format!("in [{mmin}, {mmax}]"),
        ),
        (
            "depth",
            (mmin..=mmax).contains(&c.depth),
            format!("in [{mmin}, {mmax}]"),
        ),
        (
            "dropout",
            (0.0..1.0).contains(&c.dropout),
            "in [0, 1)".into(),
        ),
        ("num_classes", c.num_classes >= 1, "at least 1".into()),
    ];
    match checks.into_iter().find(|(_, ok, _)| !ok) {
        Some((key, _, rule)) => Err(WeightsError::file(
            path,
            format!(
                "metadata `{key}` must be {rule}: the file is damaged or was not written by effnet"
            ),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use effnet_arch::scaling::compound;
    use effnet_arch::{Coefficients, Variant};

    #[test]
    fn metadata_round_trips_named_and_custom_networks() {
        let custom = compound(
            &Variant::by_name("lite0").unwrap().config(),
            0.7,
            Coefficients::default(),
        )
        .unwrap();
        for config in [Variant::by_name("b3").unwrap().config(), custom] {
            let m = WeightMetadata {
                config,
                labels: vec!["brick".into(), "grass \"green\"".into()],
                provenance: Provenance {
                    source: "test".into(),
                    license: "CC0".into(),
                    source_sha256: "ab".into(),
                },
            };
            let back = WeightMetadata::from_map(Path::new("x"), &m.to_map())
                .unwrap()
                .unwrap();
            assert_eq!(back, m);
        }
    }

    #[test]
    fn foreign_files_have_no_metadata_and_broken_metadata_is_named() {
        assert_eq!(
            WeightMetadata::from_map(Path::new("x"), &HashMap::new()).unwrap(),
            None
        );
        let mut m = WeightMetadata {
            config: Variant::by_name("b0").unwrap().config(),
            labels: vec![],
            provenance: Provenance::default(),
        }
        .to_map();
        m.insert("padding".into(), "sideways".into());
        let e = WeightMetadata::from_map(Path::new("w.safetensors"), &m)
            .unwrap_err()
            .to_string();
        assert!(e.contains("w.safetensors") && e.contains("padding"), "{e}");
    }
}
