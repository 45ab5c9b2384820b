//! The resolver: a [`NetworkConfig`] in, a [`Plan`] out, following the official TF builder exactly
//! (round_filters, ceil repeats, SE width from the block input, `fix_head_stem`, drop-path by global index,
//! padding per layer at the plan's resolution).

use crate::error::{ArchError, Result};
use crate::plan::{Block, Conv, Linear, Plan, SqueezeExcite, Stage};
use crate::scaling::{round_filters, round_repeats};
use crate::variant::{Activation, NetworkConfig};

/// Most blocks a plan may have; larger networks are refused rather than resolved for minutes.
pub const MAX_BLOCKS: usize = 4096;

struct ConvBuilder<'a> {
    config: &'a NetworkConfig,
}

impl ConvBuilder<'_> {
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &self,
        in_channels: u32,
        out_channels: u32,
        kernel: u32,
        stride: u32,
        depthwise: bool,
        input_size: u32,
        activation: Option<Activation>,
    ) -> Conv {
        let pad = self.config.padding.along(input_size, kernel, stride);
        Conv {
            in_channels,
            out_channels,
            kernel,
            stride,
            groups: if depthwise { in_channels } else { 1 },
            input_size,
            output_size: pad.output,
            pad,
            bias: false,
            batch_norm: true,
            activation,
        }
    }

    /// A 1x1 convolution with bias on a 1x1 map (the SE convolutions).
    fn pointwise_with_bias(
        &self,
        in_channels: u32,
        out_channels: u32,
        activation: Activation,
    ) -> Conv {
        Conv {
            bias: true,
            batch_norm: false,
            ..self.conv(in_channels, out_channels, 1, 1, false, 1, Some(activation))
        }
    }
}

/// Resolves a configuration into a plan.
pub fn resolve(config: &NetworkConfig) -> Result<Plan> {
    let base = &config.base;
    base.validate()?;
    if config.num_classes == 0 {
        return Err(ArchError::BadCoefficient {
            name: "num_classes",
            value: 0.0,
            reason: "must be at least 1".into(),
        });
    }
    let act = base.activation;
    let fixed = base.fix_head_stem;
    let scale = |filters: u32| round_filters(filters, config.width);
    let last_stage = base.blocks.len() - 1;
    let repeats: Vec<u32> = base
        .blocks
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if fixed && (i == 0 || i == last_stage) {
                b.repeats
            } else {
                round_repeats(b.repeats, config.depth)
            }
        })
        .collect();
    let total: usize = repeats.iter().map(|&r| r as usize).sum();
    if total > MAX_BLOCKS {
        return Err(ArchError::BadCoefficient {
            name: "depth",
            value: config.depth,
            reason: format!("resolves to {total} blocks, more than the {MAX_BLOCKS} supported"),
        });
    }

    let builder = ConvBuilder { config };
    let stem_filters = if fixed {
        base.stem_filters
    } else {
        scale(base.stem_filters)
    };
    let stem = builder.conv(3, stem_filters, 3, 2, false, config.resolution, Some(act));
    let (mut channels, mut size) = (stem.out_channels, stem.output_size);
    let mut blocks = Vec::with_capacity(total);
    let mut stages = Vec::with_capacity(base.blocks.len());
    for (stage_index, (args, &stage_repeats)) in base.blocks.iter().zip(&repeats).enumerate() {
        let out_channels = scale(args.output_filters);
        let (stage_in, stage_size, first) = (channels, size, blocks.len());
        for index_in_stage in 0..stage_repeats as usize {
            let stride = if index_in_stage == 0 { args.stride } else { 1 };
            let in_channels = channels;
            let mid = in_channels * args.expand_ratio;
            let expand = (args.expand_ratio != 1)
                .then(|| builder.conv(in_channels, mid, 1, 1, false, size, Some(act)));
            let depthwise = builder.conv(mid, mid, args.kernel, stride, true, size, Some(act));
            let se = args.se_ratio.map(|ratio| {
                let reduced = ((f64::from(in_channels) * ratio) as u32).max(1);
                SqueezeExcite {
                    reduce: builder.pointwise_with_bias(mid, reduced, act),
                    expand: builder.pointwise_with_bias(reduced, mid, Activation::Sigmoid),
                }
            });
            let out_size = depthwise.output_size;
            let project = builder.conv(mid, out_channels, 1, 1, false, out_size, None);
            let index = blocks.len();
            blocks.push(Block {
                index,
                stage: stage_index,
                index_in_stage,
                expand,
                depthwise,
                se,
                project,
                residual: args.id_skip && stride == 1 && in_channels == out_channels,
                drop_path_rate: config.drop_path_rate * index as f64 / total as f64,
            });
            channels = out_channels;
            size = out_size;
        }
        stages.push(Stage {
            index: stage_index,
            kernel: args.kernel,
            stride: args.stride,
            expand_ratio: args.expand_ratio,
            in_channels: stage_in,
            out_channels,
            repeats: stage_repeats,
            input_size: stage_size,
            output_size: size,
            se: args.se_ratio.is_some(),
            blocks: first..blocks.len(),
        });
    }
    let head_filters = if fixed {
        base.head_filters
    } else {
        scale(base.head_filters)
    };
    let head = builder.conv(channels, head_filters, 1, 1, false, size, Some(act));
    let classifier = Linear {
        in_features: head_filters,
        out_features: config.num_classes,
    };
    Ok(Plan {
        config: config.clone(),
        stem,
        blocks,
        head,
        classifier,
        stages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::variant::Variant;

    fn plan(name: &str) -> Plan {
        resolve(&Variant::by_name(name).unwrap().config()).unwrap()
    }

    #[test]
    fn b0_blocks_match_the_per_block_table() {
        // efficientnet-facts.md §1.1: (k, s, in, mid, out, in_res, out_res, se_rd, skip, dw pad begin/end).
        #[rustfmt::skip]
        let table = [
            (3,1,32,32,16,112,112,8,false,1,1), (3,2,16,96,24,112,56,4,false,0,1), (3,1,24,144,24,56,56,6,true,1,1),
            (5,2,24,144,40,56,28,6,false,1,2), (5,1,40,240,40,28,28,10,true,2,2), (3,2,40,240,80,28,14,10,false,0,1),
            (3,1,80,480,80,14,14,20,true,1,1), (3,1,80,480,80,14,14,20,true,1,1), (5,1,80,480,112,14,14,20,false,2,2),
            (5,1,112,672,112,14,14,28,true,2,2), (5,1,112,672,112,14,14,28,true,2,2), (5,2,112,672,192,14,7,28,false,1,2),
            (5,1,192,1152,192,7,7,48,true,2,2), (5,1,192,1152,192,7,7,48,true,2,2), (5,1,192,1152,192,7,7,48,true,2,2),
            (3,1,192,1152,320,7,7,48,false,1,1),
        ];
        let p = plan("b0");
        assert_eq!(p.blocks.len(), 16);
        assert_eq!((p.stem.pad.begin, p.stem.pad.end), (0, 1));
        for (b, row) in p.blocks.iter().zip(table) {
            let dw = &b.depthwise;
            let se = b.se.as_ref().unwrap().reduce.out_channels;
            let got = (
                dw.kernel,
                dw.stride,
                b.in_channels(),
                b.mid_channels(),
                b.out_channels(),
                dw.input_size,
                dw.output_size,
                se,
                b.residual,
                dw.pad.begin,
                dw.pad.end,
            );
            assert_eq!(got, row, "block {}", b.index);
            assert!((b.drop_path_rate - 0.2 * b.index as f64 / 16.0).abs() < 1e-12);
        }
        assert_eq!(
            (p.head.in_channels, p.head.out_channels, p.final_size()),
            (320, 1280, 7)
        );
    }

    #[test]
    fn stage_repeats_and_channels_match_the_variant_table() {
        // efficientnet-facts.md §1.3 "repeats per stage (ch)", stem, head, final map.
        type Row = (&'static str, [(u32, u32); 7], u32, u32, u32);
        let table: [Row; 10] = [
            (
                "b0",
                [
                    (1, 16),
                    (2, 24),
                    (2, 40),
                    (3, 80),
                    (3, 112),
                    (4, 192),
                    (1, 320),
                ],
                32,
                1280,
                7,
            ),
            (
                "b1",
                [
                    (2, 16),
                    (3, 24),
                    (3, 40),
                    (4, 80),
                    (4, 112),
                    (5, 192),
                    (2, 320),
                ],
                32,
                1280,
                8,
            ),
            (
                "b2",
                [
                    (2, 16),
                    (3, 24),
                    (3, 48),
                    (4, 88),
                    (4, 120),
                    (5, 208),
                    (2, 352),
                ],
                32,
                1408,
                9,
            ),
            (
                "b3",
                [
                    (2, 24),
                    (3, 32),
                    (3, 48),
                    (5, 96),
                    (5, 136),
                    (6, 232),
                    (2, 384),
                ],
                40,
                1536,
                10,
            ),
            (
                "b4",
                [
                    (2, 24),
                    (4, 32),
                    (4, 56),
                    (6, 112),
                    (6, 160),
                    (8, 272),
                    (2, 448),
                ],
                48,
                1792,
                12,
            ),
            (
                "b5",
                [
                    (3, 24),
                    (5, 40),
                    (5, 64),
                    (7, 128),
                    (7, 176),
                    (9, 304),
                    (3, 512),
                ],
                48,
                2048,
                15,
            ),
            (
                "b6",
                [
                    (3, 32),
                    (6, 40),
                    (6, 72),
                    (8, 144),
                    (8, 200),
                    (11, 344),
                    (3, 576),
                ],
                56,
                2304,
                17,
            ),
            (
                "b7",
                [
                    (4, 32),
                    (7, 48),
                    (7, 80),
                    (10, 160),
                    (10, 224),
                    (13, 384),
                    (4, 640),
                ],
                64,
                2560,
                19,
            ),
            (
                "b8",
                [
                    (4, 32),
                    (8, 56),
                    (8, 88),
                    (11, 176),
                    (11, 248),
                    (15, 424),
                    (4, 704),
                ],
                72,
                2816,
                21,
            ),
            (
                "l2",
                [
                    (6, 72),
                    (11, 104),
                    (11, 176),
                    (16, 344),
                    (16, 480),
                    (22, 824),
                    (6, 1376),
                ],
                136,
                5504,
                25,
            ),
        ];
        for (name, stages, stem, head, final_size) in table {
            let p = plan(name);
            let got: Vec<(u32, u32)> = p
                .stages
                .iter()
                .map(|s| (s.repeats, s.out_channels))
                .collect();
            assert_eq!(got, stages, "{name}");
            assert_eq!(
                (p.stem.out_channels, p.head.out_channels, p.final_size()),
                (stem, head, final_size),
                "{name}"
            );
        }
    }

    #[test]
    fn lite_keeps_stem_head_and_outer_stages_fixed() {
        let p = plan("lite4");
        let got: Vec<(u32, u32)> = p
            .stages
            .iter()
            .map(|s| (s.repeats, s.out_channels))
            .collect();
        assert_eq!(
            got,
            [
                (1, 24),
                (4, 32),
                (4, 56),
                (6, 112),
                (6, 160),
                (8, 272),
                (1, 448)
            ]
        );
        assert_eq!(
            (p.stem.out_channels, p.head.out_channels, p.blocks.len()),
            (32, 1280, 30)
        );
        assert_eq!(
            p.blocks[0].in_channels(),
            32,
            "the first block takes the fixed stem's 32 channels"
        );
        assert!(p.blocks.iter().all(|b| b.se.is_none()));
        assert_eq!(p.stem.activation, Some(Activation::Relu6));
        let lite1: Vec<u32> = plan("lite1").stages.iter().map(|s| s.repeats).collect();
        assert_eq!(lite1, [1, 3, 3, 4, 4, 5, 1]);
    }
}
