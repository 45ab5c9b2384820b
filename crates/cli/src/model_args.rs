//! The command-line description of a network: a named variant, or a base scaled by `phi` or by `(w, d, r)`.

use anyhow::{bail, Context, Result};
use clap::Args;
use effnet_arch::scaling::{compound, custom};
use effnet_arch::variant::network_by_name_or_blocks;
use effnet_arch::{Coefficients, NetworkConfig, Padding};
use effnet_train::search::SearchResults;
use std::path::PathBuf;

/// Which network to describe.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// A named model (b0..b8, l2, lite0..lite4); with scaling flags, the base that is scaled.
    #[arg(value_name = "MODEL")]
    pub model: Option<String>,
    /// The same as MODEL, given as a flag (as `predict` and `train` take it).
    #[arg(long = "model", value_name = "MODEL", conflicts_with = "model")]
    pub model_flag: Option<String>,
    /// Base to scale: a model name or comma-separated TF block strings (default b0).
    #[arg(long)]
    pub base: Option<String>,
    #[command(flatten)]
    pub scaling: ScalingArgs,
    /// Width multiplier of a custom network (relative to the unscaled base).
    #[arg(long, allow_hyphen_values = true)]
    pub width: Option<f64>,
    /// Depth multiplier of a custom network (relative to the unscaled base).
    #[arg(long, allow_hyphen_values = true)]
    pub depth: Option<f64>,
    /// Input resolution of a custom network.
    #[arg(long)]
    pub resolution: Option<u32>,
    /// Number of classifier outputs.
    #[arg(long, default_value_t = 1000)]
    pub num_classes: u32,
    /// Padding convention: tf-same or symmetric.
    #[arg(long)]
    pub padding: Option<String>,
}

/// Compound scaling flags: `phi` and the per-dimension bases.
#[derive(Debug, Clone, Args)]
pub struct ScalingArgs {
    /// Compound coefficient: depth * alpha^phi, width * beta^phi, resolution * gamma^phi.
    #[arg(long, allow_hyphen_values = true)]
    pub phi: Option<f64>,
    /// Depth base of compound scaling.
    #[arg(long, default_value_t = 1.2)]
    pub alpha: f64,
    /// Width base of compound scaling.
    #[arg(long, default_value_t = 1.1)]
    pub beta: f64,
    /// Resolution base of compound scaling.
    #[arg(long, default_value_t = 1.15)]
    pub gamma: f64,
    /// Use the winning alpha, beta, gamma of an `effnet search` (its results.json) instead.
    #[arg(long, conflicts_with_all = ["alpha", "beta", "gamma"])]
    pub from_search: Option<PathBuf>,
}

impl ScalingArgs {
    /// The coefficients, validated.
    pub fn coefficients(&self) -> Result<Coefficients> {
        let c = match &self.from_search {
            Some(path) => {
                let results = SearchResults::read(path)?;
                let w = results.winner.with_context(|| {
                    format!(
                        "{}: the search has no finished compound candidate yet",
                        path.display()
                    )
                })?;
                Coefficients {
                    alpha: w.alpha,
                    beta: w.beta,
                    gamma: w.gamma,
                }
            }
            None => Coefficients {
                alpha: self.alpha,
                beta: self.beta,
                gamma: self.gamma,
            },
        };
        c.validate()?;
        Ok(c)
    }
}

/// Resolves `--base` (or a positional model used as base) to a configuration (default b0).
pub fn base_config(base: Option<&str>) -> Result<NetworkConfig> {
    Ok(network_by_name_or_blocks(base.unwrap_or("b0"))?)
}

impl ModelArgs {
    /// The configuration these flags describe.
    pub fn config(&self) -> Result<NetworkConfig> {
        let model = self.model.as_deref().or(self.model_flag.as_deref());
        if model.is_some() && self.base.is_some() {
            bail!("give either a model name or --base, not both");
        }
        let base = base_config(self.base.as_deref().or(model))?;
        let custom_dims = self.width.is_some() || self.depth.is_some() || self.resolution.is_some();
        let mut config = match (self.scaling.phi, custom_dims) {
            (Some(_), true) => bail!("--phi and --width/--depth/--resolution exclude each other"),
            (Some(phi), false) => compound(&base, phi, self.scaling.coefficients()?)?,
            (None, true) => custom(
                &base,
                self.width.unwrap_or(base.width),
                self.depth.unwrap_or(base.depth),
                self.resolution.unwrap_or(base.resolution),
            )?,
            (None, false) => base,
        };
        if self.num_classes == 0 {
            bail!("--num-classes must be at least 1");
        }
        config.num_classes = self.num_classes;
        if let Some(name) = &self.padding {
            config.padding = parse_padding(name)?;
        }
        Ok(config)
    }
}

/// Parses `--padding`.
pub fn parse_padding(name: &str) -> Result<Padding> {
    Padding::from_name(name)
        .with_context(|| format!("unknown padding `{name}`: use tf-same or symmetric"))
}

/// Checks `--resolution`: 16 to 4096 pixels.
pub fn check_resolution(resolution: u32) -> Result<u32> {
    anyhow::ensure!(
        (16..=4096).contains(&resolution),
        "--resolution must be between 16 and 4096, got {resolution}"
    );
    Ok(resolution)
}

/// Parses a count such as `1.8e9`, `400M`, `2G` (decimal) or `64MiB`, `1GiB` (binary).
pub fn parse_count(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    if number.is_empty() {
        return Err(format!("`{text}` is not a number"));
    }
    let scale: f64 = match unit.to_ascii_lowercase().as_str() {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "t" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "unknown unit `{unit}` in `{text}` (use K, M, G, T, KiB, MiB or GiB)"
            ))
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    let count = value * scale;
    if !(1.0..=1e18).contains(&count) {
        return Err(format!("`{text}` must be a positive count below 1e18"));
    }
    Ok(count as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_count;

    #[test]
    fn counts_accept_scientific_and_unit_notation() {
        assert_eq!(parse_count("1.8e9"), Ok(1_800_000_000));
        assert_eq!(parse_count("400M"), Ok(400_000_000));
        assert_eq!(parse_count("64MiB"), Ok(64 << 20));
        assert_eq!(parse_count("1GiB"), Ok(1 << 30));
        assert!(parse_count("-5").is_err());
        assert!(parse_count("12 parsecs").is_err());
        assert!(parse_count("nan").is_err());
    }
}
