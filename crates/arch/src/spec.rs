//! The TF block-string grammar (`r1_k3_s11_e1_i32_o16_se0.25`), decoded into [`BlockArgs`] and encoded back.
//!
//! The grammar is the official TensorFlow `BlockDecoder`: options separated by `_`, each a key made of letters
//! followed by its value. Supported keys: `r` repeats, `k` kernel, `s` stride pair (two digits, equal), `e`
//! expand ratio, `i`/`o` input/output filters, `se` squeeze-excite ratio, `noskip`. Options this crate cannot
//! resolve (`c` fused conv types, `d` space-to-depth, `cc` condconv, `a` activation overrides) are rejected
//! with a clear error rather than silently ignored.

use crate::error::{ArchError, Result};
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// One stage of a base network: a repeated MBConv block, as written in a TF block string.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlockArgs {
    /// How many times the block repeats in the unscaled network.
    pub repeats: u32,
    /// Depthwise kernel size (square).
    pub kernel: u32,
    /// Stride of the first block of the stage (the others use 1).
    pub stride: u32,
    /// Expansion ratio of the inverted bottleneck (1 means no expand convolution).
    pub expand_ratio: u32,
    /// Input filters of the stage in the unscaled network.
    pub input_filters: u32,
    /// Output filters of the stage in the unscaled network.
    pub output_filters: u32,
    /// Squeeze-excite ratio relative to the block's input filters; `None` means no SE.
    pub se_ratio: Option<f64>,
    /// Whether the identity skip is allowed (false when the string says `noskip`).
    pub id_skip: bool,
}

fn bad(block: &str, reason: impl Into<String>) -> ArchError {
    ArchError::BadBlockString {
        block: block.to_string(),
        reason: reason.into(),
    }
}

fn parse_positive(block: &str, key: &str, value: &str) -> Result<u32> {
    let n: u32 = value.parse().map_err(|_| {
        bad(
            block,
            format!("option `{key}` needs a whole number, got `{value}`"),
        )
    })?;
    if n == 0 {
        return Err(bad(block, format!("option `{key}` must be at least 1")));
    }
    Ok(n)
}

impl FromStr for BlockArgs {
    type Err = ArchError;

    fn from_str(block: &str) -> Result<Self> {
        let block = block.trim();
        let (mut repeats, mut kernel, mut stride, mut expand) = (None, None, None, None);
        let (mut input, mut output, mut se_ratio, mut id_skip) = (None, None, None, true);
        for op in block.split('_') {
            let split = op
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(op.len());
            let (key, value) = op.split_at(split);
            match key {
                "r" => repeats = Some(parse_positive(block, key, value)?),
                "k" => kernel = Some(parse_positive(block, key, value)?),
                "e" => expand = Some(parse_positive(block, key, value)?),
                "i" => input = Some(parse_positive(block, key, value)?),
                "o" => output = Some(parse_positive(block, key, value)?),
                "s" => {
                    let digits: Vec<u32> = value.chars().filter_map(|c| c.to_digit(10)).collect();
                    if value.len() != 2 || digits.len() != 2 {
                        return Err(bad(
                            block,
                            format!("stride `s{value}` must be two digits, e.g. s11 or s22"),
                        ));
                    }
                    if digits[0] != digits[1] || digits[0] == 0 {
                        return Err(bad(
                            block,
                            format!("stride `s{value}` must be square and non-zero"),
                        ));
                    }
                    stride = Some(digits[0]);
                }
                "se" => {
                    let ratio: f64 = value
                        .parse()
                        .map_err(|_| bad(block, format!("SE ratio `se{value}` is not a number")))?;
                    if !(ratio > 0.0 && ratio <= 1.0) {
                        return Err(bad(
                            block,
                            format!("SE ratio `se{value}` must be in (0, 1]"),
                        ));
                    }
                    se_ratio = Some(ratio);
                }
                "noskip" if value.is_empty() => id_skip = false,
                "" => return Err(bad(block, format!("empty or keyless option `{op}`"))),
                _ => return Err(bad(block, format!("unsupported option `{op}`"))),
            }
        }
        let need = |v: Option<u32>, key: &str| {
            v.ok_or_else(|| bad(block, format!("missing option `{key}`")))
        };
        let kernel = need(kernel, "k")?;
        if kernel % 2 == 0 {
            return Err(bad(block, format!("kernel k{kernel} must be odd")));
        }
        Ok(BlockArgs {
            repeats: need(repeats, "r")?,
            kernel,
            stride: need(stride, "s")?,
            expand_ratio: need(expand, "e")?,
            input_filters: need(input, "i")?,
            output_filters: need(output, "o")?,
            se_ratio,
            id_skip,
        })
    }
}

impl fmt::Display for BlockArgs {
    /// Encodes in the official order (`r k s e i o se noskip`), the inverse of [`BlockArgs::from_str`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "r{}_k{}_s{}{}_e{}_i{}_o{}",
            self.repeats,
            self.kernel,
            self.stride,
            self.stride,
            self.expand_ratio,
            self.input_filters,
            self.output_filters
        )?;
        if let Some(ratio) = self.se_ratio {
            write!(f, "_se{ratio}")?;
        }
        if !self.id_skip {
            write!(f, "_noskip")?;
        }
        Ok(())
    }
}

/// Decodes a list of block strings separated by commas or white space.
pub fn decode_blocks(text: &str) -> Result<Vec<BlockArgs>> {
    let blocks: Vec<BlockArgs> = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<Result<_>>()?;
    if blocks.is_empty() {
        return Err(ArchError::BadSpec("no block strings given".into()));
    }
    Ok(blocks)
}

/// Encodes blocks as a comma-separated list, the inverse of [`decode_blocks`].
pub fn encode_blocks(blocks: &[BlockArgs]) -> String {
    blocks
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The seven stages of EfficientNet-B0 (TF `_DEFAULT_BLOCKS_ARGS`).
pub const B0_BLOCKS: &str = "r1_k3_s11_e1_i32_o16_se0.25,r2_k3_s22_e6_i16_o24_se0.25,r2_k5_s22_e6_i24_o40_se0.25,\
r3_k3_s22_e6_i40_o80_se0.25,r3_k5_s11_e6_i80_o112_se0.25,r4_k5_s22_e6_i112_o192_se0.25,r1_k3_s11_e6_i192_o320_se0.25";

/// The Lite stages: B0's without squeeze-excite (TF `efficientnet_lite_builder.py`).
pub const LITE_BLOCKS: &str = "r1_k3_s11_e1_i32_o16,r2_k3_s22_e6_i16_o24,r2_k5_s22_e6_i24_o40,\
r3_k3_s22_e6_i40_o80,r3_k5_s11_e6_i80_o112,r4_k5_s22_e6_i112_o192,r1_k3_s11_e6_i192_o320";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_official_first_block() {
        let b: BlockArgs = "r1_k3_s11_e1_i32_o16_se0.25".parse().unwrap();
        assert_eq!(
            b,
            BlockArgs {
                repeats: 1,
                kernel: 3,
                stride: 1,
                expand_ratio: 1,
                input_filters: 32,
                output_filters: 16,
                se_ratio: Some(0.25),
                id_skip: true
            }
        );
    }

    #[test]
    fn round_trips_every_shipped_spec() {
        for text in [B0_BLOCKS, LITE_BLOCKS, "r2_k5_s22_e4_i8_o16_se0.5_noskip"] {
            let blocks = decode_blocks(text).unwrap();
            assert_eq!(encode_blocks(&blocks), text);
            assert_eq!(decode_blocks(&encode_blocks(&blocks)).unwrap(), blocks);
        }
    }

    #[test]
    fn option_order_does_not_matter_but_encoding_is_canonical() {
        let b: BlockArgs = "o24_i16_se0.25_e6_s22_k3_r2".parse().unwrap();
        assert_eq!(b.to_string(), "r2_k3_s22_e6_i16_o24_se0.25");
    }

    #[test]
    fn rejects_malformed_strings_with_the_reason() {
        for (text, needle) in [
            ("r1_k3_s1_e1_i32_o16", "two digits"),
            ("r1_k3_s12_e1_i32_o16", "square"),
            ("r1_k4_s11_e1_i32_o16", "odd"),
            ("r1_k3_s11_e1_i32", "missing option `o`"),
            ("r1_k3_s11_e1_i32_o16_c1", "unsupported option `c1`"),
            ("r0_k3_s11_e1_i32_o16", "at least 1"),
            ("r1.5_k3_s11_e1_i32_o16", "whole number"),
            ("rx_k3_s11_e1_i32_o16", "unsupported option `rx`"),
            ("r1_k3_s11_e1_i32_o16_se2", "(0, 1]"),
            ("r1__k3", "empty"),
        ] {
            let err = text.parse::<BlockArgs>().unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
            assert!(err.contains(text), "error should name the block: {err}");
        }
    }
}
