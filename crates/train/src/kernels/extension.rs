//! The burn side of the fused kernels: a backend-extension trait implemented for the CPU backend (the
//! forward kernels) and for autodiff over it (the forward plus a hand-written backward), and
//! device-independent wrappers on [`Tensor`].

use super::batch_norm::BatchNorm;
use super::depthwise::Depthwise;
use super::pointwise::Pointwise;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Backend, Dispatch, Flex, TensorMetadata};
use burn::tensor::{Device, Tensor, TensorData};

/// Padding and stride of a depthwise convolution, as passed through the extension.
pub type DepthwiseOptions = (usize, [usize; 4]);

/// The fused training operations.
#[backend_extension(Flex, Autodiff)]
pub trait TrainKernels: Backend {
    /// `[N, out, H, W]` from `[N, in, H, W]` and a `[out, in, 1, 1]` weight.
    fn pointwise_conv(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Depthwise convolution of `[N, C, H, W]` by a `[C, 1, k, k]` weight with
    /// `(stride, [top, left, bottom, right])`.
    fn depthwise_conv(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: DepthwiseOptions,
    ) -> FloatTensor<Self>;

    /// Training-mode batch norm of `[N, C, H, W]`, then swish if `swish`; returns the output, the batch
    /// mean and the biased batch variance.
    fn batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        swish: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// The values of a CPU tensor in row-major order (a copy only when it is a strided view).
fn values(t: &FlexTensor) -> FlexTensor {
    t.to_contiguous()
}

fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("the training kernels run on contiguous f32 tensors")
}

fn dims4(t: &FlexTensor) -> [usize; 4] {
    t.shape().dims()
}

fn flex(data: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, shape))
}

fn pointwise_shapes(x: &FlexTensor, weight: &FlexTensor) -> Pointwise {
    let [batch, in_channels, h, w] = dims4(x);
    Pointwise {
        batch,
        in_channels,
        out_channels: weight.shape()[0],
        pixels: h * w,
    }
}

fn depthwise_geometry(x: &FlexTensor, weight: &FlexTensor, options: DepthwiseOptions) -> Depthwise {
    let [batch, channels, h, w] = dims4(x);
    let (stride, [top, left, bottom, right]) = options;
    Depthwise {
        batch,
        channels,
        input: [h, w],
        kernel: weight.shape()[2],
        stride,
        pad_begin: [top, left],
        pad_end: [bottom, right],
    }
}

fn batch_norm_shapes(x: &FlexTensor, epsilon: f64, swish: bool) -> BatchNorm {
    let [batch, channels, h, w] = dims4(x);
    BatchNorm {
        batch,
        channels,
        pixels: h * w,
        epsilon,
        swish,
    }
}

impl TrainKernels for Flex {
    fn pointwise_conv(x: FlexTensor, weight: FlexTensor) -> FlexTensor {
        let (x, weight) = (values(&x), values(&weight));
        let p = pointwise_shapes(&x, &weight);
        let [n, _, h, w] = dims4(&x);
        flex(
            p.forward(slice(&x), slice(&weight)),
            vec![n, p.out_channels, h, w],
        )
    }

    fn depthwise_conv(x: FlexTensor, weight: FlexTensor, options: DepthwiseOptions) -> FlexTensor {
        let (x, weight) = (values(&x), values(&weight));
        let g = depthwise_geometry(&x, &weight, options);
        let [oh, ow] = g.output();
        flex(
            g.forward(slice(&x), slice(&weight)),
            vec![g.batch, g.channels, oh, ow],
        )
    }

    fn batch_norm_train(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
        swish: bool,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let (x, gamma, beta) = (values(&x), values(&gamma), values(&beta));
        let bn = batch_norm_shapes(&x, epsilon, swish);
        let out = bn.forward(slice(&x), slice(&gamma), slice(&beta));
        (
            flex(out.output, x.shape().to_vec()),
            flex(out.mean, vec![bn.channels]),
            flex(out.variance, vec![bn.channels]),
        )
    }
}

/// The two gradients of a convolution kernel.
trait ConvGradients {
    fn input_grad(&self, weight: &[f32], dy: &[f32]) -> Vec<f32>;
    fn weight_grad(&self, x: &[f32], dy: &[f32]) -> Vec<f32>;
}

impl ConvGradients for Pointwise {
    fn input_grad(&self, weight: &[f32], dy: &[f32]) -> Vec<f32> {
        Pointwise::input_grad(self, weight, dy)
    }
    fn weight_grad(&self, x: &[f32], dy: &[f32]) -> Vec<f32> {
        Pointwise::weight_grad(self, x, dy)
    }
}

impl ConvGradients for Depthwise {
    fn input_grad(&self, weight: &[f32], dy: &[f32]) -> Vec<f32> {
        Depthwise::input_grad(self, weight, dy)
    }
    fn weight_grad(&self, x: &[f32], dy: &[f32]) -> Vec<f32> {
        Depthwise::weight_grad(self, x, dy)
    }
}

/// Registers the input and weight gradients of a convolution, for whichever of the two are tracked.
fn register_conv_grads(
    conv: &impl ConvGradients,
    [node_x, node_weight]: [Option<NodeId>; 2],
    (x, weight): (&FlexTensor, &FlexTensor),
    grad: &FlexTensor,
    grads: &mut Gradients,
) {
    if let Some(id) = node_x {
        let dx = conv.input_grad(slice(weight), slice(grad));
        grads.register::<Flex>(id, flex(dx, x.shape().to_vec()));
    }
    if let Some(id) = node_weight {
        let dw = conv.weight_grad(slice(x), slice(grad));
        grads.register::<Flex>(id, flex(dw, weight.shape().to_vec()));
    }
}

#[derive(Debug)]
struct PointwiseBackward;

impl Backward<Flex, 2> for PointwiseBackward {
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = values(&grads.consume::<Flex>(&ops.node));
        let (x, weight) = ops.state;
        let nodes = ops.parents.map(|n| n.map(|n| n.id));
        let p = pointwise_shapes(&x, &weight);
        register_conv_grads(&p, nodes, (&x, &weight), &grad, grads);
    }
}

#[derive(Debug)]
struct DepthwiseBackward;

impl Backward<Flex, 2> for DepthwiseBackward {
    type State = (FlexTensor, FlexTensor, DepthwiseOptions);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = values(&grads.consume::<Flex>(&ops.node));
        let (x, weight, options) = ops.state;
        let nodes = ops.parents.map(|n| n.map(|n| n.id));
        let g = depthwise_geometry(&x, &weight, options);
        register_conv_grads(&g, nodes, (&x, &weight), &grad, grads);
    }
}

#[derive(Debug)]
struct BatchNormBackward;

impl Backward<Flex, 3> for BatchNormBackward {
    /// Input, gamma, beta, batch mean, batch variance, epsilon, swish.
    type State = (
        FlexTensor,
        FlexTensor,
        FlexTensor,
        FlexTensor,
        FlexTensor,
        f64,
        bool,
    );

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let grad = values(&grads.consume::<Flex>(&ops.node));
        let (x, gamma, beta, mean, variance, epsilon, swish) = ops.state;
        let bn = batch_norm_shapes(&x, epsilon, swish);
        let g = bn.backward(
            slice(&x),
            slice(&gamma),
            slice(&beta),
            slice(&mean),
            slice(&variance),
            slice(&grad),
        );
        let channels = vec![bn.channels];
        for (node, value, shape) in [
            (node_x, g.input, x.shape().to_vec()),
            (node_gamma, g.gamma, channels.clone()),
            (node_beta, g.beta, channels),
        ] {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, flex(value, shape));
            }
        }
    }
}

type AutodiffTensor = FloatTensor<Autodiff<Flex>>;

impl<C: CheckpointStrategy> TrainKernels for Autodiff<Flex, C> {
    fn pointwise_conv(x: AutodiffTensor, weight: AutodiffTensor) -> AutodiffTensor {
        let prep = PointwiseBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful();
        let (x, weight) = (values(x.primitive()), values(weight.primitive()));
        let y = Flex::pointwise_conv(x.clone(), weight.clone());
        match prep {
            OpsKind::Tracked(prep) => prep.finish((x, weight), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn depthwise_conv(
        x: AutodiffTensor,
        weight: AutodiffTensor,
        options: DepthwiseOptions,
    ) -> AutodiffTensor {
        let prep = DepthwiseBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful();
        let (x, weight) = (values(x.primitive()), values(weight.primitive()));
        let y = Flex::depthwise_conv(x.clone(), weight.clone(), options);
        match prep {
            OpsKind::Tracked(prep) => prep.finish((x, weight, options), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn batch_norm_train(
        x: AutodiffTensor,
        gamma: AutodiffTensor,
        beta: AutodiffTensor,
        epsilon: f64,
        swish: bool,
    ) -> (AutodiffTensor, AutodiffTensor, AutodiffTensor) {
        let prep = BatchNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful();
        let x = values(x.primitive());
        let (gamma, beta) = (values(gamma.primitive()), values(beta.primitive()));
        let (y, mean, variance) =
            Flex::batch_norm_train(x.clone(), gamma.clone(), beta.clone(), epsilon, swish);
        let stats = (
            AutodiffTensor::new(mean.clone()),
            AutodiffTensor::new(variance.clone()),
        );
        let y = match prep {
            OpsKind::Tracked(prep) => {
                prep.finish((x, gamma, beta, mean, variance, epsilon, swish), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        (y, stats.0, stats.1)
    }
}

/// Whether the fused kernels run on `device` (the CPU backend, with or without autodiff).
pub fn supports(device: &Device) -> bool {
    device.clone().inner() == Device::flex()
}

/// A 1x1, stride-1, unbiased convolution of `[N, in, H, W]` by `[out, in, 1, 1]`.
pub fn pointwise_conv(x: Tensor<4>, weight: Tensor<4>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as TrainKernels>::pointwise_conv(
        x.into_dispatch(),
        weight.into_dispatch(),
    ))
}

/// An unbiased depthwise convolution of `[N, C, H, W]` by `[C, 1, k, k]` with `stride` and padding
/// `[top, left, bottom, right]`.
pub fn depthwise_conv(
    x: Tensor<4>,
    weight: Tensor<4>,
    stride: usize,
    padding: [usize; 4],
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as TrainKernels>::depthwise_conv(
        x.into_dispatch(),
        weight.into_dispatch(),
        (stride, padding),
    ))
}

/// Output of [`batch_norm_train`].
#[derive(Debug, Clone)]
pub struct BatchNormTrain {
    /// The normalised (and activated) batch.
    pub output: Tensor<4>,
    /// Per-channel batch mean (not tracked).
    pub mean: Tensor<1>,
    /// Per-channel biased batch variance (not tracked).
    pub variance: Tensor<1>,
}

/// Training-mode batch norm of `[N, C, H, W]` with its own batch statistics, followed by swish if
/// `swish`.
pub fn batch_norm_train(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
    swish: bool,
) -> BatchNormTrain {
    let (output, mean, variance) = <Dispatch as TrainKernels>::batch_norm_train(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        epsilon,
        swish,
    );
    BatchNormTrain {
        output: Tensor::from_dispatch(output),
        mean: Tensor::from_dispatch(mean),
        variance: Tensor::from_dispatch(variance),
    }
}
