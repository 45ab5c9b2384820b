//! The fused kernels against burn's own operations (forward values and autodiff gradients) on odd
//! shapes: 1x1 maps, widths that are not a multiple of the vector length, stride 2 on odd and even
//! sizes, TF "SAME" and symmetric padding, batches smaller and larger than the thread count.

use super::*;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{activation, Device, Distribution, Tensor};

/// Largest difference relative to the reference's largest magnitude (and at least 1).
fn relative_error<const D: usize>(got: Tensor<D>, want: Tensor<D>) -> f32 {
    let scale = want.clone().abs().max().into_scalar::<f32>().max(1.0);
    (got - want).abs().max().into_scalar::<f32>() / scale
}

const TOLERANCE: f32 = 1e-5;

fn device() -> Device {
    Device::flex().autodiff()
}

fn random<const D: usize>(shape: [usize; D]) -> Tensor<D> {
    normal(shape, 0.0, 1.0)
}

fn normal<const D: usize>(shape: [usize; D], mean: f64, std: f64) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(mean, std), &device()).require_grad()
}

/// Values of the output and of each input's gradient under the loss `Σ output * probe`.
fn run<const D: usize>(
    inputs: &[Tensor<D>],
    extra: &[Tensor<1>],
    op: impl Fn(&[Tensor<D>], &[Tensor<1>]) -> Tensor<4>,
    probe: &Tensor<4>,
) -> (Tensor<4>, Vec<Tensor<D>>, Vec<Tensor<1>>) {
    let out = op(inputs, extra);
    let grads = (out.clone() * probe.clone()).sum().backward();
    let g = inputs
        .iter()
        .map(|t| t.grad(&grads).expect("tracked"))
        .collect();
    let e = extra
        .iter()
        .map(|t| t.grad(&grads).expect("tracked"))
        .collect();
    (out.inner(), g, e)
}

fn assert_close<const D: usize>(what: &str, got: Tensor<D>, want: Tensor<D>) {
    let err = relative_error(got, want);
    assert!(err < TOLERANCE, "{what}: relative error {err}");
}

#[test]
fn pointwise_matches_burns_convolution() {
    for (batch, cin, cout, h, w) in [(1, 5, 7, 4, 3), (3, 17, 9, 1, 1), (4, 8, 33, 6, 5)] {
        let x = random([batch, cin, h, w]);
        let weight = random([cout, cin, 1, 1]);
        let probe = random([batch, cout, h, w]).inner();
        let fast = run(
            &[x.clone(), weight.clone()],
            &[],
            |t, _| pointwise_conv(t[0].clone(), t[1].clone()),
            &probe.clone().to_device(&device()),
        );
        let reference = run(
            &[x, weight],
            &[],
            |t, _| {
                conv2d(
                    t[0].clone(),
                    t[1].clone(),
                    None,
                    ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
                )
            },
            &probe.to_device(&device()),
        );
        let case = format!("batch {batch}, {cin}->{cout}, {h}x{w}");
        assert_close(&format!("{case}: output"), fast.0, reference.0);
        for (i, (g, r)) in fast.1.into_iter().zip(reference.1).enumerate() {
            assert_close(&format!("{case}: gradient {i}"), g.inner(), r.inner());
        }
    }
}

#[test]
fn depthwise_matches_burns_grouped_convolution() {
    // (batch, channels, height, width, kernel, stride, [top, left, bottom, right])
    let cases = [
        (2, 3, 7, 17, 3, 1, [1, 1, 1, 1]),
        (1, 4, 8, 8, 3, 2, [0, 0, 1, 1]),
        (3, 2, 9, 33, 5, 2, [2, 2, 2, 2]),
        (2, 5, 10, 10, 5, 2, [1, 1, 2, 2]),
        (2, 3, 1, 1, 3, 1, [1, 1, 1, 1]),
        (1, 2, 6, 40, 5, 1, [2, 2, 2, 2]),
        (2, 2, 5, 4, 3, 2, [1, 0, 1, 1]),
        // The last input row and column are never read.
        (2, 3, 6, 6, 1, 2, [0, 0, 0, 0]),
        (1, 2, 8, 8, 3, 2, [1, 1, 1, 1]),
    ];
    for (batch, c, h, w, k, s, pad) in cases {
        let x = random([batch, c, h, w]);
        let weight = random([c, 1, k, k]);
        let options =
            ConvOptions::new_with_padding([s, s], [(pad[0], pad[2]), (pad[1], pad[3])], [1, 1], c);
        let [oh, ow] = [
            (h + pad[0] + pad[2] - k) / s + 1,
            (w + pad[1] + pad[3] - k) / s + 1,
        ];
        let probe = random([batch, c, oh, ow]).inner().to_device(&device());
        let fast = run(
            &[x.clone(), weight.clone()],
            &[],
            |t, _| depthwise_conv(t[0].clone(), t[1].clone(), s, pad),
            &probe,
        );
        let reference = run(
            &[x, weight],
            &[],
            |t, _| conv2d(t[0].clone(), t[1].clone(), None, options.clone()),
            &probe,
        );
        let case = format!("{batch}x{c}x{h}x{w}, k{k} s{s} pad {pad:?}");
        assert_close(&format!("{case}: output"), fast.0, reference.0);
        for (i, (g, r)) in fast.1.into_iter().zip(reference.1).enumerate() {
            assert_close(&format!("{case}: gradient {i}"), g.inner(), r.inner());
        }
    }
}

#[test]
fn batch_norm_matches_burns_batch_norm_with_and_without_swish() {
    for (swish, [batch, c, h, w]) in [
        (true, [3, 5, 7, 9]),
        (false, [2, 4, 1, 1]),
        (true, [1, 3, 4, 33]),
    ] {
        let x = normal([batch, c, h, w], 0.5, 3.0);
        let (gamma, beta) = (random([c]), random([c]));
        let probe = random([batch, c, h, w]).inner().to_device(&device());
        let eps = 1e-3;
        let fast = run(
            std::slice::from_ref(&x),
            &[gamma.clone(), beta.clone()],
            |t, e| batch_norm_train(t[0].clone(), e[0].clone(), e[1].clone(), eps, swish).output,
            &probe,
        );
        let reference = run(
            std::slice::from_ref(&x),
            &[gamma.clone(), beta.clone()],
            |t, e| {
                let y = burn::tensor::module::batch_norm_train(
                    t[0].clone(),
                    e[0].clone(),
                    e[1].clone(),
                    eps,
                )
                .output;
                if swish {
                    activation::silu(y)
                } else {
                    y
                }
            },
            &probe,
        );
        let case = format!("swish {swish}, {batch}x{c}x{h}x{w}");
        assert_close(&format!("{case}: output"), fast.0, reference.0);
        assert_close(
            &format!("{case}: input gradient"),
            fast.1[0].clone().inner(),
            reference.1[0].clone().inner(),
        );
        for (i, (g, r)) in fast.2.into_iter().zip(reference.2).enumerate() {
            assert_close(
                &format!("{case}: parameter gradient {i}"),
                g.inner(),
                r.inner(),
            );
        }
        let stats = batch_norm_train(x.clone(), gamma.clone(), beta.clone(), eps, swish);
        let want = burn::tensor::module::batch_norm_train(x, gamma, beta, eps);
        assert_close(
            &format!("{case}: mean"),
            stats.mean.inner(),
            want.mean.inner(),
        );
        assert_close(
            &format!("{case}: variance"),
            stats.variance.inner(),
            want.variance.inner(),
        );
    }
}

#[test]
fn the_kernels_run_only_on_the_cpu_backend() {
    assert!(supports(&Device::flex()));
    assert!(supports(&Device::flex().autodiff()));
}
