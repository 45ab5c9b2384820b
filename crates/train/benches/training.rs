//! `cargo bench -p effnet-train`: B0's whole training step at the two sizes users train at (224 px at
//! batch 8, and 64 px at batch 32, the fine-tuning and search regime), and each fused training kernel's
//! forward and backward passes on shapes from those two steps.

use criterion::{criterion_group, Criterion};
use effnet_arch::{resolve, Variant};
use effnet_train::kernels::batch_norm::BatchNorm;
use effnet_train::kernels::depthwise::Depthwise;
use effnet_train::kernels::pointwise::Pointwise;
use effnet_train::trainer::TimedSteps;
use std::hint::black_box;

/// `n` values spread over [-0.5, 0.5).
fn values(n: usize) -> Vec<f32> {
    (0..n).map(|i| (i % 97) as f32 / 97.0 - 0.5).collect()
}

/// One pass of a convolution kernel on two operands.
type Pass<'a> = &'a dyn Fn(&[f32], &[f32]) -> Vec<f32>;

/// Benchmarks a convolution's forward pass `(x, weight)`, input gradient `(weight, dy)` and weight
/// gradient `(x, dy)` on operands of the given lengths, named by filling the `{}` of `name` with the pass.
fn convolution(c: &mut Criterion, name: &str, [x, weight, y]: [usize; 3], passes: [Pass; 3]) {
    let (x, weight, dy) = (values(x), values(weight), values(y));
    let [forward, input, gradient] = passes;
    for (pass, run, a, b) in [
        ("forward", forward, &x, &weight),
        ("input gradient", input, &weight, &dy),
        ("weight gradient", gradient, &x, &dy),
    ] {
        c.bench_function(&name.replace("{}", pass), |bench| {
            bench.iter(|| run(black_box(a), b))
        });
    }
}

fn steps(c: &mut Criterion) {
    let mut group = c.benchmark_group("training step");
    group.sample_size(10);
    for (resolution, batch) in [(224, 8), (64, 32)] {
        let mut config = Variant::by_name("b0").unwrap().config();
        config.resolution = resolution;
        let plan = resolve(&config).unwrap();
        let mut stepper = TimedSteps::new(&plan, batch).unwrap();
        group.bench_function(format!("b0 {resolution} px batch {batch}"), |b| {
            b.iter(|| black_box(stepper.step()))
        });
    }
    group.finish();
}

fn depthwise(c: &mut Criterion) {
    // B0 at 224 px: the first stride-2 depthwise (96 channels, 112x112, TF-SAME pads after);
    // at 64 px: a 5x5 stride-1 one on 8x8 maps.
    let shapes = [
        (
            "3x3 s2 batch 8 x 96 x 112x112",
            Depthwise {
                batch: 8,
                channels: 96,
                input: [112, 112],
                kernel: 3,
                stride: 2,
                pad_begin: [0, 0],
                pad_end: [1, 1],
            },
        ),
        (
            "5x5 s1 batch 32 x 240 x 8x8",
            Depthwise {
                batch: 32,
                channels: 240,
                input: [8, 8],
                kernel: 5,
                stride: 1,
                pad_begin: [2, 2],
                pad_end: [2, 2],
            },
        ),
    ];
    for (name, d) in shapes {
        let [oh, ow] = d.output();
        let planes = d.batch * d.channels;
        let lengths = [
            planes * d.input[0] * d.input[1],
            d.channels * d.kernel * d.kernel,
            planes * oh * ow,
        ];
        let passes: [Pass; 3] = [
            &|x, w| d.forward(x, w),
            &|w, dy| d.input_grad(w, dy),
            &|x, dy| d.weight_grad(x, dy),
        ];
        convolution(c, &format!("depthwise {{}} {name}"), lengths, passes);
    }
}

fn pointwise(c: &mut Criterion) {
    // B0 at 224 px: block 2's expansion (16 -> 96 on 112x112); at 64 px: the last block's projection
    // (1152 -> 320 on 2x2).
    let shapes = [
        (
            "batch 8, 16 -> 96, 112x112",
            Pointwise {
                batch: 8,
                in_channels: 16,
                out_channels: 96,
                pixels: 112 * 112,
            },
        ),
        (
            "batch 32, 1152 -> 320, 2x2",
            Pointwise {
                batch: 32,
                in_channels: 1152,
                out_channels: 320,
                pixels: 4,
            },
        ),
    ];
    for (name, p) in shapes {
        let images = p.batch * p.pixels;
        let lengths = [
            images * p.in_channels,
            p.out_channels * p.in_channels,
            images * p.out_channels,
        ];
        let passes: [Pass; 3] = [
            &|x, w| p.forward(x, w),
            &|w, dy| p.input_grad(w, dy),
            &|x, dy| p.weight_grad(x, dy),
        ];
        convolution(c, &format!("pointwise {{}} {name}"), lengths, passes);
    }
}

fn batch_norm(c: &mut Criterion) {
    // Batch norm + swish after block 2's expansion at 224 px, and after a 240-channel expansion at 64 px.
    let shapes = [
        ("batch 8 x 96 x 112x112", (8, 96, 112 * 112)),
        ("batch 32 x 240 x 8x8", (32, 240, 64)),
    ];
    for (name, (batch, channels, pixels)) in shapes {
        let bn = BatchNorm {
            batch,
            channels,
            pixels,
            epsilon: 1e-3,
            swish: true,
        };
        let x = values(batch * channels * pixels);
        let (gamma, beta) = (vec![1.0; channels], vec![0.0; channels]);
        let dy = values(x.len());
        let normalized = bn.forward(&x, &gamma, &beta);
        c.bench_function(&format!("batch norm + swish forward {name}"), |b| {
            b.iter(|| bn.forward(black_box(&x), &gamma, &beta))
        });
        c.bench_function(&format!("batch norm + swish backward {name}"), |b| {
            b.iter(|| {
                bn.backward(
                    black_box(&x),
                    &gamma,
                    &beta,
                    &normalized.mean,
                    &normalized.variance,
                    &dy,
                )
            })
        });
    }
}

criterion_group!(benches, steps, depthwise, pointwise, batch_norm);

fn main() {
    // As the `effnet` binary does when it trains, so the kernels reuse their output buffers.
    effnet_train::allocator::keep_freed_memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
