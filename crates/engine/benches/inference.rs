//! `cargo bench -p effnet-engine`: each kernel on B0's largest shapes, and whole networks (random weights).

use criterion::{criterion_group, criterion_main, Criterion};
use effnet_arch::variant::Activation;
use effnet_arch::{resolve, Padding, Variant};
use effnet_engine::kernels::{conv_dense, depthwise, pointwise, squeeze_excite, Exec, FeatureMap};
use effnet_engine::layers::PreparedConv;
use effnet_engine::Engine;
use effnet_weights::random::RandomWeights;
use std::hint::black_box;

const SERIAL: Exec = Exec { parallel: false };

fn map(h: usize, w: usize, c: usize) -> FeatureMap {
    FeatureMap::new(
        &(0..h * w * c)
            .map(|i| (i % 97) as f32 / 97.0 - 0.5)
            .collect::<Vec<f32>>(),
        h,
        w,
        c,
    )
}

fn conv(cin: usize, cout: usize, k: usize, stride: usize, dw: bool) -> PreparedConv {
    let n = if dw { k * k * cout } else { k * k * cin * cout };
    let weights: Vec<f32> = (0..n).map(|i| (i % 13) as f32 / 130.0).collect();
    let (bias, activation) = (vec![0.01; cout], Some(Activation::Swish));
    if dw {
        PreparedConv::depthwise(cout, (k, stride), weights, bias, activation)
    } else {
        PreparedConv::new((cin, cout), (k, stride), weights, bias, activation)
    }
}

fn kernels(c: &mut Criterion) {
    let stem_in = map(224, 224, 3);
    let stem = conv(3, 32, 3, 2, false);
    c.bench_function("stem 3x3 s2 224x224x3 -> 32", |b| {
        b.iter(|| conv_dense(black_box(&stem_in), &stem, Padding::TfSame, SERIAL))
    });
    let x = map(112, 112, 96);
    let dw = conv(96, 96, 3, 2, true);
    c.bench_function("depthwise 3x3 s2 112x112x96", |b| {
        b.iter(|| depthwise(black_box(&x), &dw, Padding::TfSame, SERIAL))
    });
    let x5 = map(14, 14, 672);
    let dw5 = conv(672, 672, 5, 1, true);
    c.bench_function("depthwise 5x5 s1 14x14x672", |b| {
        b.iter(|| depthwise(black_box(&x5), &dw5, Padding::TfSame, SERIAL))
    });
    let e = map(112, 112, 16);
    let expand = conv(16, 96, 1, 1, false);
    c.bench_function("pointwise 112x112 16 -> 96", |b| {
        b.iter(|| pointwise(black_box(&e), &expand, None, SERIAL))
    });
    let p = map(7, 7, 1152);
    let project = conv(1152, 192, 1, 1, false);
    c.bench_function("pointwise 7x7 1152 -> 192", |b| {
        b.iter(|| pointwise(black_box(&p), &project, None, SERIAL))
    });
    let (reduce, se_expand) = (conv(240, 10, 1, 1, false), conv(10, 240, 1, 1, false));
    let s = map(28, 28, 240);
    c.bench_function("squeeze-excite 28x28x240", |b| {
        b.iter_batched(
            || s.clone(),
            |mut y| squeeze_excite(&mut y, &reduce, &se_expand, SERIAL),
            criterion::BatchSize::LargeInput,
        )
    });
}

fn networks(c: &mut Criterion) {
    let mut group = c.benchmark_group("network");
    group.sample_size(10);
    for name in ["b0", "lite0"] {
        let plan = resolve(&Variant::by_name(name).unwrap().config()).unwrap();
        let engine = Engine::new(&plan, RandomWeights::new(&plan, 0));
        let r = plan.resolution() as usize;
        let batch = vec![map(r, r, 3); 8];
        group.bench_function(format!("{name} batch 1"), |b| {
            b.iter(|| engine.logits_batch(black_box(&batch[..1])))
        });
        group.bench_function(format!("{name} batch 8"), |b| {
            b.iter(|| engine.logits_batch(black_box(&batch)))
        });
    }
    group.finish();
}

criterion_group!(benches, kernels, networks);
criterion_main!(benches);
