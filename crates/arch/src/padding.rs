//! Convolution padding: TensorFlow "SAME" (asymmetric, extra pixel at the end) and PyTorch-style symmetric.

use serde::{Deserialize, Serialize};

/// How a convolution pads its input; weights are trained with one of these and must run with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Padding {
    /// TF "SAME": `out = ceil(in / s)`, total pad `max((out-1)*s + k - in, 0)`, the larger half at the end.
    TfSame,
    /// Symmetric `(k-1)/2` on each side (timm native, torchvision).
    Symmetric,
}

impl Padding {
    /// Pads before and after, and the output size, along one spatial dimension.
    pub fn along(self, input: u32, kernel: u32, stride: u32) -> AxisPad {
        match self {
            Padding::TfSame => {
                let output = input.div_ceil(stride);
                let total = ((output - 1) * stride + kernel).saturating_sub(input);
                AxisPad {
                    begin: total / 2,
                    end: total - total / 2,
                    output,
                }
            }
            Padding::Symmetric => {
                let pad = (kernel - 1) / 2;
                let output = (input + 2 * pad - kernel) / stride + 1;
                AxisPad {
                    begin: pad,
                    end: pad,
                    output,
                }
            }
        }
    }

    /// The name used on the command line and in weight metadata.
    pub fn name(self) -> &'static str {
        match self {
            Padding::TfSame => "tf-same",
            Padding::Symmetric => "symmetric",
        }
    }

    /// Parses [`Padding::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "tf-same" | "same" => Some(Padding::TfSame),
            "symmetric" => Some(Padding::Symmetric),
            _ => None,
        }
    }
}

/// Padding and output size along one axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AxisPad {
    /// Zeros before the first input pixel (top or left).
    pub begin: u32,
    /// Zeros after the last input pixel (bottom or right).
    pub end: u32,
    /// Output size.
    pub output: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf_same_matches_the_published_b0_pads() {
        // efficientnet-facts.md §1.1: stem k3 s2 @224 -> (0,1); k5 s2 @56 -> (1,2); k5 s1 -> (2,2).
        let p = Padding::TfSame;
        assert_eq!(
            p.along(224, 3, 2),
            AxisPad {
                begin: 0,
                end: 1,
                output: 112
            }
        );
        assert_eq!(
            p.along(56, 5, 2),
            AxisPad {
                begin: 1,
                end: 2,
                output: 28
            }
        );
        assert_eq!(
            p.along(14, 5, 1),
            AxisPad {
                begin: 2,
                end: 2,
                output: 14
            }
        );
        assert_eq!(
            p.along(15, 3, 2),
            AxisPad {
                begin: 1,
                end: 1,
                output: 8
            }
        );
        assert_eq!(
            p.along(1, 3, 2),
            AxisPad {
                begin: 1,
                end: 1,
                output: 1
            }
        );
    }

    #[test]
    fn symmetric_matches_pytorch() {
        let p = Padding::Symmetric;
        assert_eq!(
            p.along(224, 3, 2),
            AxisPad {
                begin: 1,
                end: 1,
                output: 112
            }
        );
        assert_eq!(
            p.along(15, 5, 2),
            AxisPad {
                begin: 2,
                end: 2,
                output: 8
            }
        );
    }
}
