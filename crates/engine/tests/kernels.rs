//! Every kernel against a naive scalar reference written from the definitions, on awkward shapes: 1x1 maps,
//! channel counts that are not a multiple of the vector width, stride 2 on odd and even sizes, both paddings,
//! serial and split across threads.

use effnet_arch::variant::Activation;
use effnet_arch::Padding;
use effnet_engine::channel_split::{block_by_channels, splits_by_channels};
use effnet_engine::fused::{dense_depthwise, expand_depthwise};
use effnet_engine::kernels::{
    conv_dense, depthwise, depthwise_and_mean, linear, pointwise, pointwise_gated, squeeze_excite,
    Exec, FeatureMap,
};
use effnet_engine::layers::{PreparedBlock, PreparedConv, PreparedLinear};

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let z = (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ seed.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn act(a: Option<Activation>, v: f64) -> f64 {
    match a {
        None => v,
        Some(Activation::Swish) => v / (1.0 + (-v).exp()),
        Some(Activation::Relu6) => v.clamp(0.0, 6.0),
        Some(Activation::Sigmoid) => 1.0 / (1.0 + (-v).exp()),
    }
}

/// Reference convolution, NHWC, f64; `depthwise` uses weights `[ky][kx][c]`, dense `[ky][kx][in][out]`.
fn reference(
    x: &FeatureMap,
    c: &PreparedConv,
    padding: Padding,
    dw: bool,
    residual: Option<&FeatureMap>,
) -> Vec<f32> {
    let (k, s) = (c.kernel, c.stride);
    let rows = padding.along(x.height as u32, k as u32, s as u32);
    let cols = padding.along(x.width as u32, k as u32, s as u32);
    let (oh, ow) = (rows.output as usize, cols.output as usize);
    let weight = c.weight();
    let mut out = Vec::new();
    for oy in 0..oh {
        for ox in 0..ow {
            for o in 0..c.out_channels {
                let mut acc = f64::from(c.bias[o]);
                for ky in 0..k {
                    for kx in 0..k {
                        let iy = (oy * s + ky) as isize - rows.begin as isize;
                        let ix = (ox * s + kx) as isize - cols.begin as isize;
                        if iy < 0 || ix < 0 || iy >= x.height as isize || ix >= x.width as isize {
                            continue;
                        }
                        let at = (iy as usize * x.width + ix as usize) * x.channels;
                        if dw {
                            acc += f64::from(x.data[at + o])
                                * f64::from(weight[(ky * k + kx) * c.out_channels + o]);
                        } else {
                            for i in 0..c.in_channels {
                                let w = weight
                                    [((ky * k + kx) * c.in_channels + i) * c.out_channels + o];
                                acc += f64::from(x.data[at + i]) * f64::from(w);
                            }
                        }
                    }
                }
                let mut v = act(c.activation, acc);
                if let Some(r) = residual {
                    v += f64::from(r.data[(oy * ow + ox) * c.out_channels + o]);
                }
                out.push(v as f32);
            }
        }
    }
    out
}

fn conv(
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    dw: bool,
    activation: Option<Activation>,
    seed: u64,
) -> PreparedConv {
    let weights = if dw { k * k * cout } else { k * k * cin * cout };
    let (weights, bias) = (values(weights, seed), values(cout, seed + 1));
    if dw {
        PreparedConv::depthwise(cout, (k, stride), weights, bias, activation)
    } else {
        PreparedConv::new((cin, cout), (k, stride), weights, bias, activation)
    }
}

/// A squeeze-excite convolution (1x1, on a pooled vector) with deterministic weights.
fn vector_conv(cin: usize, cout: usize, activation: Option<Activation>, seed: u64) -> PreparedConv {
    PreparedConv::vector(
        (cin, cout),
        values(cin * cout, seed),
        values(cout, seed + 1),
        activation,
    )
}

fn close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: size");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
            "{what}: element {i}: {g} vs {w}"
        );
    }
}

/// Per-channel means of NHWC values, in f64.
fn channel_means(values: &[f32], channels: usize) -> Vec<f32> {
    let pixels = values.len() / channels;
    (0..channels)
        .map(|c| {
            let sum: f64 = (0..pixels)
                .map(|p| f64::from(values[p * channels + c]))
                .sum();
            (sum / pixels as f64) as f32
        })
        .collect()
}

const SIZES: [(usize, usize); 5] = [(1, 1), (2, 3), (7, 7), (8, 8), (15, 9)];
/// Maps at least 32 pixels wide, whose depthwise convolution reads the input where it is (taps in the
/// padding skipped or masked) rather than a zero-padded copy.
const WIDE: [(usize, usize); 2] = [(5, 37), (33, 34)];
const EXECS: [Exec; 2] = [Exec { parallel: false }, Exec { parallel: true }];

#[test]
fn depthwise_matches_the_reference_on_odd_shapes() {
    for (h, w) in SIZES.into_iter().chain(WIDE) {
        for ch in [1, 17, 40, 56] {
            for (k, stride) in [(3, 1), (3, 2), (5, 1), (5, 2)] {
                for padding in [Padding::TfSame, Padding::Symmetric] {
                    let x = FeatureMap::new(&values(h * w * ch, 3), h, w, ch);
                    let c = conv(ch, ch, k, stride, true, Some(Activation::Swish), 9);
                    let want = reference(&x, &c, padding, true, None);
                    let want_mean = channel_means(&want, ch);
                    for exec in EXECS {
                        let case =
                            format!("depthwise {h}x{w}x{ch} k{k} s{stride} {padding:?} {exec:?}");
                        let got = depthwise(&x, &c, padding, exec);
                        close(&got.data, &want, &case);
                        let (pooled, mean) = depthwise_and_mean(&x, &c, padding, exec);
                        close(&pooled.data, &want, &format!("{case} (pooled)"));
                        close(&mean, &want_mean, &format!("{case}: channel means"));
                    }
                }
            }
        }
    }
}

#[test]
fn dense_matches_the_reference_on_odd_shapes() {
    for (h, w) in SIZES {
        for (cin, cout) in [(3, 32), (3, 17), (5, 8)] {
            for (k, stride) in [(3, 2), (3, 1), (1, 1)] {
                for padding in [Padding::TfSame, Padding::Symmetric] {
                    let x = FeatureMap::new(&values(h * w * cin, 4), h, w, cin);
                    let c = conv(cin, cout, k, stride, false, Some(Activation::Relu6), 5);
                    let want = reference(&x, &c, padding, false, None);
                    for exec in EXECS {
                        let got = conv_dense(&x, &c, padding, exec);
                        close(
                            &got.data,
                            &want,
                            &format!(
                                "dense {h}x{w} {cin}->{cout} k{k} s{stride} {padding:?} {exec:?}"
                            ),
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn pointwise_with_and_without_residual_matches_the_reference() {
    for (h, w) in [(1, 1), (7, 7), (20, 13)] {
        for (cin, cout) in [(17, 33), (16, 16), (40, 7), (24, 80)] {
            for activation in [None, Some(Activation::Swish), Some(Activation::Sigmoid)] {
                let x = FeatureMap::new(&values(h * w * cin, 6), h, w, cin);
                let res = FeatureMap::new(&values(h * w * cout, 8), h, w, cout);
                let c = conv(cin, cout, 1, 1, false, activation, 2);
                // Squeeze-excite's gate scales each input channel before the GEMM.
                let gate = values(cin, 10);
                let gated_input: Vec<f32> = x
                    .data
                    .iter()
                    .enumerate()
                    .map(|(i, v)| v * gate[i % cin])
                    .collect();
                let gated_input = FeatureMap::new(&gated_input, h, w, cin);
                for residual in [None, Some(&res)] {
                    let want = reference(&x, &c, Padding::TfSame, false, residual);
                    let want_gated = reference(&gated_input, &c, Padding::TfSame, false, residual);
                    for exec in EXECS {
                        let case =
                            format!("pointwise {h}x{w} {cin}->{cout} {activation:?} {exec:?}");
                        close(&pointwise(&x, &c, residual, exec).data, &want, &case);
                        let gated = pointwise_gated(&x, Some(&gate), &c, residual, exec);
                        close(&gated.data, &want_gated, &format!("{case} gated"));
                    }
                }
            }
        }
    }
}

/// A fused stage (`run(exec, pool)`), serial and threaded, with and without its channel sums, against
/// the reference output `want`: the output and, when pooling, the channel means.
fn check_fused_stage(case: &str, want: &[f32], run: impl Fn(Exec, bool) -> (FeatureMap, Vec<f64>)) {
    for exec in EXECS {
        for pool in [false, true] {
            let case = format!("{case} {exec:?} pool {pool}");
            let (got, sums) = run(exec, pool);
            close(&got.data, want, &case);
            let n = (got.height * got.width) as f64;
            let mean: Vec<f32> = sums.iter().map(|s| (s / n) as f32).collect();
            let want_mean = if pool {
                channel_means(want, got.channels)
            } else {
                Vec::new()
            };
            close(&mean, &want_mean, &case);
        }
    }
}

#[test]
fn fused_expand_depthwise_matches_the_two_reference_convolutions() {
    // Wide maps and narrow ones (whose buffered rows carry the padding); tall enough for several tiles
    // and, threaded, two bands of rows. (The split by ranges of channels that narrow maps take inside a
    // network is tested with whole blocks, below.)
    for (h, w) in [
        (34, 33),
        (9, 40),
        (1, 32),
        (20, 35),
        (14, 14),
        (7, 7),
        (1, 1),
        (12, 5),
    ] {
        for (cin, mid) in [(5, 17), (8, 40), (16, 96)] {
            for (k, stride) in [(3, 1), (3, 2), (5, 1), (5, 2)] {
                for padding in [Padding::TfSame, Padding::Symmetric] {
                    let x = FeatureMap::new(&values(h * w * cin, 21), h, w, cin);
                    let e = conv(cin, mid, 1, 1, false, Some(Activation::Swish), 22);
                    let d = conv(mid, mid, k, stride, true, Some(Activation::Swish), 23);
                    let expanded = reference(&x, &e, padding, false, None);
                    let expanded = FeatureMap::new(&expanded, h, w, mid);
                    let want = reference(&expanded, &d, padding, true, None);
                    check_fused_stage(
                        &format!(
                            "expand+depthwise {h}x{w} {cin}->{mid} k{k} s{stride} {padding:?}"
                        ),
                        &want,
                        |exec, pool| expand_depthwise(&x, &e, &d, padding, exec, pool),
                    );
                }
            }
        }
    }
}

#[test]
fn fused_dense_depthwise_matches_the_two_reference_convolutions() {
    // The stem's shapes (3 -> 32, 3 x 3 at stride 2) and odd ones, on wide and narrow maps.
    for (h, w) in [(34, 33), (9, 70), (7, 7), (1, 1), (12, 5)] {
        for (cin, mid, stride) in [(3, 32, 2), (3, 17, 1), (5, 40, 2)] {
            for (k, dw_stride) in [(3, 1), (5, 2)] {
                for padding in [Padding::TfSame, Padding::Symmetric] {
                    let x = FeatureMap::new(&values(h * w * cin, 24), h, w, cin);
                    let stem = conv(cin, mid, 3, stride, false, Some(Activation::Swish), 25);
                    let d = conv(mid, mid, k, dw_stride, true, Some(Activation::Swish), 26);
                    let size = |n: usize| padding.along(n as u32, 3, stride as u32).output as usize;
                    let stemmed = reference(&x, &stem, padding, false, None);
                    let stemmed = FeatureMap::new(&stemmed, size(h), size(w), mid);
                    let want = reference(&stemmed, &d, padding, true, None);
                    check_fused_stage(
                        &format!(
                            "dense+depthwise {h}x{w} {cin}->{mid} s{stride}, k{k} s{dw_stride} {padding:?}"
                        ),
                        &want,
                        |exec, pool| dense_depthwise(&x, &stem, &d, padding, exec, pool),
                    );
                }
            }
        }
    }
}

/// Squeeze-excite from its definition, in f64: every channel of `x` scaled by
/// `sigmoid(expand(swish(reduce(mean))))`.
fn squeeze_excite_reference(
    x: &FeatureMap,
    reduce: &PreparedConv,
    expand: &PreparedConv,
) -> Vec<f32> {
    let (ch, rd, pixels) = (x.channels, reduce.out_channels, x.height * x.width);
    let (reduce_weight, expand_weight) = (reduce.weight(), expand.weight());
    let mean: Vec<f64> = (0..ch)
        .map(|c| {
            (0..pixels)
                .map(|p| f64::from(x.data[p * ch + c]))
                .sum::<f64>()
                / pixels as f64
        })
        .collect();
    let r: Vec<f64> = (0..rd)
        .map(|j| {
            act(
                reduce.activation,
                f64::from(reduce.bias[j])
                    + (0..ch)
                        .map(|c| mean[c] * f64::from(reduce_weight[c * rd + j]))
                        .sum::<f64>(),
            )
        })
        .collect();
    let gate: Vec<f64> = (0..ch)
        .map(|c| {
            act(
                Some(Activation::Sigmoid),
                f64::from(expand.bias[c])
                    + (0..rd)
                        .map(|j| r[j] * f64::from(expand_weight[j * ch + c]))
                        .sum::<f64>(),
            )
        })
        .collect();
    x.data
        .iter()
        .enumerate()
        .map(|(i, &v)| (f64::from(v) * gate[i % ch]) as f32)
        .collect()
}

#[test]
fn squeeze_excite_scales_each_channel_by_its_gate() {
    let (h, w, ch, rd) = (5, 3, 19, 4);
    let x = FeatureMap::new(&values(h * w * ch, 11), h, w, ch);
    let reduce = vector_conv(ch, rd, Some(Activation::Swish), 12);
    let expand = vector_conv(rd, ch, None, 13);
    let want = squeeze_excite_reference(&x, &reduce, &expand);
    for exec in EXECS {
        let mut y = x.clone();
        squeeze_excite(&mut y, &reduce, &expand, exec);
        close(&y.data, &want, &format!("squeeze-excite {exec:?}"));
    }
}

/// A whole MBConv block split by expanded channels across 1, 2 and 3 threads: expanded widths of one
/// partial panel, of whole panels and of panels that do not share out evenly; with and without
/// squeeze-excite and residual; 1x1 maps and strided odd sizes.
#[test]
fn block_split_by_channels_matches_the_reference_block() {
    for (h, w) in [(7, 7), (1, 1), (6, 9)] {
        for (cin, mid, cout) in [(16, 96, 16), (8, 40, 24), (24, 144, 24), (5, 17, 3)] {
            for (k, stride) in [(3, 1), (5, 2)] {
                for se in [true, false] {
                    let padding = Padding::TfSame;
                    let x = FeatureMap::new(&values(h * w * cin, 40), h, w, cin);
                    let block = PreparedBlock {
                        expand: Some(conv(cin, mid, 1, 1, false, Some(Activation::Swish), 41)),
                        depthwise: conv(mid, mid, k, stride, true, Some(Activation::Swish), 42),
                        se: se.then(|| {
                            let rd = mid.div_ceil(8);
                            (
                                vector_conv(mid, rd, Some(Activation::Swish), 43),
                                vector_conv(rd, mid, None, 44),
                            )
                        }),
                        project: conv(mid, cout, 1, 1, false, None, 45),
                        residual: stride == 1 && cin == cout,
                    };
                    let expand = block.expand.as_ref().unwrap();
                    let expanded = reference(&x, expand, padding, false, None);
                    let expanded = FeatureMap::new(&expanded, h, w, mid);
                    let dw = reference(&expanded, &block.depthwise, padding, true, None);
                    let (oh, ow) = (h.div_ceil(stride), w.div_ceil(stride));
                    let mut mid_map = FeatureMap::new(&dw, oh, ow, mid);
                    if let Some((reduce, excite)) = &block.se {
                        let gated = squeeze_excite_reference(&mid_map, reduce, excite);
                        mid_map = FeatureMap::new(&gated, oh, ow, mid);
                    }
                    let residual = block.residual.then_some(&x);
                    let want = reference(&mid_map, &block.project, padding, false, residual);
                    assert!(splits_by_channels(&x, &block));
                    for threads in [1, 2, 3] {
                        let pool = rayon::ThreadPoolBuilder::new()
                            .num_threads(threads)
                            .build()
                            .unwrap();
                        let got = pool.install(|| block_by_channels(&x, &block, padding));
                        let case = format!(
                            "block {h}x{w} {cin}->{mid}->{cout} k{k} s{stride} se {se} on {threads} threads"
                        );
                        assert_eq!(
                            (got.height, got.width, got.channels),
                            (oh, ow, cout),
                            "{case}"
                        );
                        close(&got.data, &want, &case);
                    }
                }
            }
        }
    }
}

#[test]
fn linear_matches_the_reference_serial_and_split_across_threads() {
    for (inputs, outputs) in [(5, 3), (777, 13), (1280, 40)] {
        let l = PreparedLinear {
            in_features: inputs,
            out_features: outputs,
            weight: values(inputs * outputs, 30),
            bias: values(outputs, 31),
        };
        let x = values(inputs, 32);
        let want: Vec<f32> = (0..outputs)
            .map(|o| {
                let dot: f64 = (0..inputs)
                    .map(|i| f64::from(x[i]) * f64::from(l.weight[i * outputs + o]))
                    .sum();
                (dot + f64::from(l.bias[o])) as f32
            })
            .collect();
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let got = pool.install(|| linear(&x, &l));
            close(
                &got,
                &want,
                &format!("linear {inputs}->{outputs} on {threads} threads"),
            );
        }
    }
}
