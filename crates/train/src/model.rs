//! The resolved [`Plan`] as a burn module: convolutions with explicit (TF "SAME" or symmetric) padding,
//! batch norm that trains with TF's momentum 0.99 and the weights' epsilon, squeeze-excite, swish or ReLU6,
//! per-sample drop-path with each block's rate, and dropout before the classifier.
//!
//! Every parameter is named by its canonical name (`blocks.3.depthwise.bn.weight`, ...) and gets a
//! [`ParamId`] derived from that name, so optimizer state saved by one process resumes in another.

use crate::error::{Result, TrainError};
use crate::kernels;
use burn::module::{Flag, Module, Param, ParamId, RunningState};
use burn::nn::{BatchNorm, Dropout, DropoutConfig};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{activation, Device, Distribution, Tensor, TensorData};
use effnet_arch::plan::{Block, Conv};
use effnet_arch::variant::Activation;
use effnet_arch::Plan;
use effnet_weights::layout::params;
use effnet_weights::random::fnv1a64;
use effnet_weights::Tensor as WeightTensor;
use std::collections::BTreeMap;

/// TF's batch-norm momentum: `running = 0.99 * running + 0.01 * batch`.
pub const TF_BN_MOMENTUM: f64 = 0.99;

/// Canonical tensors by name.
pub type Tensors = BTreeMap<String, WeightTensor>;

/// A stable parameter id from a canonical name (FNV-1a), so optimizer state matches across processes.
pub fn param_id(name: &str) -> ParamId {
    ParamId::from(fnv1a64(name))
}

fn tensor<const D: usize>(tensors: &Tensors, name: &str, device: &Device) -> Result<Tensor<D>> {
    let t = tensors
        .get(name)
        .ok_or_else(|| TrainError::Model(format!("the weights lack `{name}`")))?;
    if t.shape.len() != D {
        return Err(TrainError::Model(format!(
            "`{name}` has shape {:?}, expected rank {D}",
            t.shape
        )));
    }
    Ok(Tensor::from_data(
        TensorData::new(t.data.clone(), t.shape.clone()),
        device,
    ))
}

fn param<const D: usize>(
    tensors: &Tensors,
    name: &str,
    device: &Device,
) -> Result<Param<Tensor<D>>> {
    // `from_tensor` marks the parameter trainable; the id is then made stable.
    let mut p = Param::from_tensor(tensor(tensors, name, device)?);
    p.id = param_id(name);
    Ok(p)
}

/// Reads a burn tensor back into a canonical tensor.
pub fn to_weight_tensor<const D: usize>(t: Tensor<D>) -> WeightTensor {
    let shape = t.dims().to_vec();
    let data = t
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("converted to f32");
    WeightTensor::new(shape, data)
}

fn activate<const D: usize>(x: Tensor<D>, a: Activation) -> Tensor<D> {
    match a {
        Activation::Swish => activation::silu(x),
        Activation::Relu6 => activation::relu6(x),
        Activation::Sigmoid => activation::sigmoid(x),
    }
}

/// Which fused CPU kernel computes a convolution (see [`kernels`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FusedConv {
    /// 1x1, stride 1, no bias.
    Pointwise,
    /// Depthwise with `stride` and padding `[top, left, bottom, right]`, no bias.
    Depthwise { stride: usize, padding: [usize; 4] },
    /// Anything else (the stem, the SE convolutions) runs on burn's convolution.
    None,
}

impl FusedConv {
    fn of(conv: &Conv) -> Self {
        let (begin, end) = (conv.pad.begin as usize, conv.pad.end as usize);
        if conv.bias {
            Self::None
        } else if conv.kernel == 1 && conv.stride == 1 && conv.groups == 1 && begin + end == 0 {
            Self::Pointwise
        } else if conv.is_depthwise() && conv.out_channels == conv.in_channels {
            Self::Depthwise {
                stride: conv.stride as usize,
                padding: [begin, begin, end, end],
            }
        } else {
            Self::None
        }
    }
}

/// A convolution with its optional bias, batch norm and activation.
#[derive(Module, Debug)]
pub struct ConvUnit {
    /// Kernel `[out, in / groups, k, k]`.
    pub weight: Param<Tensor<4>>,
    /// Bias (SE convolutions only).
    pub bias: Option<Param<Tensor<1>>>,
    /// Batch norm, if the plan has one here.
    pub bn: Option<BatchNorm>,
    #[module(skip)]
    name: String,
    #[module(skip)]
    options: ConvOptions<2>,
    #[module(skip)]
    activation: Option<Activation>,
    #[module(skip)]
    fused: FusedConv,
}

impl ConvUnit {
    fn new(
        name: &str,
        conv: &Conv,
        tensors: &Tensors,
        bn_eps: f64,
        device: &Device,
    ) -> Result<Self> {
        let bn = if conv.batch_norm {
            let p = |field: &str| format!("{name}.bn.{field}");
            let running = |field: &str| -> Result<RunningState<Tensor<1>>> {
                Ok(RunningState::with_id(
                    param_id(&p(field)),
                    tensor(tensors, &p(field), device)?,
                ))
            };
            Some(BatchNorm {
                gamma: param(tensors, &p("weight"), device)?,
                beta: param(tensors, &p("bias"), device)?,
                training: Param::from_bool(true),
                running_mean: running("running_mean")?,
                running_var: running("running_var")?,
                momentum: 1.0 - TF_BN_MOMENTUM,
                epsilon: bn_eps,
            })
        } else {
            None
        };
        let bias = if conv.bias {
            Some(param(tensors, &format!("{name}.bias"), device)?)
        } else {
            None
        };
        let s = conv.stride as usize;
        let pad = (conv.pad.begin as usize, conv.pad.end as usize);
        Ok(Self {
            weight: param(tensors, &format!("{name}.weight"), device)?,
            bias,
            bn,
            name: name.to_string(),
            options: ConvOptions::new_with_padding(
                [s, s],
                [pad, pad],
                [1, 1],
                conv.groups as usize,
            ),
            activation: conv.activation,
            fused: FusedConv::of(conv),
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let fused = kernels::supports(&x.device());
        let y = match self.fused {
            FusedConv::Pointwise if fused => kernels::pointwise_conv(x, self.weight.val()),
            FusedConv::Depthwise { stride, padding } if fused => {
                kernels::depthwise_conv(x, self.weight.val(), stride, padding)
            }
            _ => conv2d(
                x,
                self.weight.val(),
                self.bias.as_ref().map(Param::val),
                self.options.clone(),
            ),
        };
        let mut activation = self.activation;
        let y = match &self.bn {
            Some(bn) if fused && y.device().is_autodiff() && bn.training.is_enabled() => {
                let swish = activation == Some(Activation::Swish);
                if swish {
                    activation = None;
                }
                batch_norm_train_fused(bn, y, swish)
            }
            Some(bn) => bn.forward(y),
            None => y,
        };
        match activation {
            Some(a) => activate(y, a),
            None => y,
        }
    }

    fn export(&self, out: &mut Tensors) {
        out.insert(
            format!("{}.weight", self.name),
            to_weight_tensor(self.weight.val()),
        );
        if let Some(b) = &self.bias {
            out.insert(format!("{}.bias", self.name), to_weight_tensor(b.val()));
        }
        if let Some(bn) = &self.bn {
            let n = &self.name;
            out.insert(format!("{n}.bn.weight"), to_weight_tensor(bn.gamma.val()));
            out.insert(format!("{n}.bn.bias"), to_weight_tensor(bn.beta.val()));
            out.insert(
                format!("{n}.bn.running_mean"),
                to_weight_tensor(bn.running_mean.value_sync()),
            );
            out.insert(
                format!("{n}.bn.running_var"),
                to_weight_tensor(bn.running_var.value_sync()),
            );
        }
    }
}

/// Training-mode batch norm (then swish if `swish`) on the fused CPU kernel, updating the running
/// statistics exactly as burn's [`BatchNorm`] does.
fn batch_norm_train_fused(bn: &BatchNorm, x: Tensor<4>, swish: bool) -> Tensor<4> {
    let device = x.device();
    let out = kernels::batch_norm_train(x, bn.gamma.val(), bn.beta.val(), bn.epsilon, swish);
    let blend = |running: &RunningState<Tensor<1>>, batch: Tensor<1>| {
        let updated = running
            .value_sync()
            .to_device(&device)
            .mul_scalar(1.0 - bn.momentum)
            .add(batch.detach().mul_scalar(bn.momentum));
        running.update(updated.detach());
    };
    blend(&bn.running_mean, out.mean);
    blend(&bn.running_var, out.variance);
    out.output
}

/// Squeeze-excite: global mean, reduce, activation, expand, sigmoid, channel-wise scale.
#[derive(Module, Debug)]
pub struct SqueezeExcite {
    /// `mid -> reduced` with bias and the block's activation.
    pub reduce: ConvUnit,
    /// `reduced -> mid` with bias and a sigmoid.
    pub expand: ConvUnit,
}

impl SqueezeExcite {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let pooled = x.clone().mean_dims(&[2, 3]);
        let gate = self.expand.forward(self.reduce.forward(pooled));
        x * gate
    }
}

/// One MBConv block.
#[derive(Module, Debug)]
pub struct MbConv {
    /// Expand 1x1 convolution (absent when the expand ratio is 1).
    pub expand: Option<ConvUnit>,
    /// Depthwise convolution.
    pub depthwise: ConvUnit,
    /// Squeeze-excite.
    pub se: Option<SqueezeExcite>,
    /// Project 1x1 convolution.
    pub project: ConvUnit,
    /// Whether drop-path is active (cleared when the block is frozen).
    pub training: Param<Flag>,
    #[module(skip)]
    residual: bool,
    #[module(skip)]
    drop_path_rate: f64,
}

impl MbConv {
    fn new(block: &Block, tensors: &Tensors, bn_eps: f64, device: &Device) -> Result<Self> {
        let prefix = format!("blocks.{}", block.index);
        let unit = |part: &str, conv: &Conv| {
            ConvUnit::new(&format!("{prefix}.{part}"), conv, tensors, bn_eps, device)
        };
        Ok(Self {
            expand: block
                .expand
                .as_ref()
                .map(|c| unit("expand", c))
                .transpose()?,
            depthwise: unit("depthwise", &block.depthwise)?,
            se: block
                .se
                .as_ref()
                .map(|se| -> Result<SqueezeExcite> {
                    Ok(SqueezeExcite {
                        reduce: unit("se.reduce", &se.reduce)?,
                        expand: unit("se.expand", &se.expand)?,
                    })
                })
                .transpose()?,
            project: unit("project", &block.project)?,
            training: Param::from_bool(true),
            residual: block.residual,
            drop_path_rate: block.drop_path_rate,
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut y = match &self.expand {
            Some(e) => e.forward(x.clone()),
            None => x.clone(),
        };
        y = self.depthwise.forward(y);
        if let Some(se) = &self.se {
            y = se.forward(y);
        }
        y = self.project.forward(y);
        if !self.residual {
            return y;
        }
        let rate = if self.training.is_enabled() {
            self.drop_path_rate
        } else {
            0.0
        };
        drop_path(y, rate) + x
    }

    fn units_mut(&mut self) -> impl Iterator<Item = &mut ConvUnit> {
        let se = self.se.as_mut().map(|se| [&mut se.reduce, &mut se.expand]);
        self.expand
            .iter_mut()
            .chain(std::iter::once(&mut self.depthwise))
            .chain(se.into_iter().flatten())
            .chain(std::iter::once(&mut self.project))
    }

    fn export(&self, out: &mut Tensors) {
        if let Some(e) = &self.expand {
            e.export(out);
        }
        self.depthwise.export(out);
        if let Some(se) = &self.se {
            se.reduce.export(out);
            se.expand.export(out);
        }
        self.project.export(out);
    }
}

/// Stochastic depth: while training, drops each sample's residual branch with probability `rate` and
/// scales the kept ones by `1 / (1 - rate)`; the identity at evaluation.
fn drop_path(x: Tensor<4>, rate: f64) -> Tensor<4> {
    if rate <= 0.0 || !x.device().is_autodiff() {
        return x;
    }
    let keep = 1.0 - rate;
    let [n, _, _, _] = x.dims();
    let mask = Tensor::<4>::random([n, 1, 1, 1], Distribution::Bernoulli(keep), &x.device());
    x * mask.div_scalar(keep)
}

/// The classifier: `logits = features · weightᵀ + bias`.
#[derive(Module, Debug)]
pub struct Classifier {
    /// Weight `[out, in]` (PyTorch order, as in the canonical layout).
    pub weight: Param<Tensor<2>>,
    /// Bias `[out]`.
    pub bias: Param<Tensor<1>>,
}

/// An EfficientNet built from a [`Plan`].
#[derive(Module, Debug)]
pub struct EfficientNet {
    /// Stem convolution.
    pub stem: ConvUnit,
    /// MBConv blocks in order.
    pub blocks: Vec<MbConv>,
    /// Head 1x1 convolution.
    pub head: ConvUnit,
    /// Dropout before the classifier.
    pub dropout: Dropout,
    /// The classifier.
    pub classifier: Classifier,
}

/// Global average pooling of an NCHW map to `[N, C]`.
pub fn pool(map: Tensor<4>) -> Tensor<2> {
    let [n, c, _, _] = map.dims();
    map.mean_dims(&[2, 3]).reshape([n, c])
}

/// Checks that `tensors` holds every parameter of `plan` with the right shape, naming the first that does not.
pub fn check_tensors(plan: &Plan, tensors: &Tensors) -> Result<()> {
    for p in params(plan) {
        match tensors.get(&p.name) {
            None => return Err(TrainError::Model(format!("the weights lack `{}`", p.name))),
            Some(t) if t.shape != p.shape => {
                return Err(TrainError::Model(format!(
                    "`{}` has shape {:?} but {} needs {:?}",
                    p.name, t.shape, plan.config.name, p.shape
                )))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

impl EfficientNet {
    /// Builds the network of `plan` on `device` from canonical tensors (every parameter must be present
    /// with its shape).
    pub fn new(plan: &Plan, tensors: &Tensors, device: &Device) -> Result<Self> {
        check_tensors(plan, tensors)?;
        let eps = plan.config.bn_eps;
        Ok(Self {
            stem: ConvUnit::new("stem", &plan.stem, tensors, eps, device)?,
            blocks: plan
                .blocks
                .iter()
                .map(|b| MbConv::new(b, tensors, eps, device))
                .collect::<Result<_>>()?,
            head: ConvUnit::new("head", &plan.head, tensors, eps, device)?,
            dropout: DropoutConfig::new(plan.config.dropout).init(),
            classifier: Classifier {
                weight: param(tensors, "classifier.weight", device)?,
                bias: param(tensors, "classifier.bias", device)?,
            },
        })
    }

    /// Builds the network on `device` with autodiff enabled, every parameter trainable.
    pub fn trainable(plan: &Plan, tensors: &Tensors, device: &Device) -> Result<Self> {
        Ok(Self::new(plan, tensors, device)?.train())
    }

    /// The stem and the first `blocks` blocks on an NCHW batch.
    pub fn forward_to(&self, x: Tensor<4>, blocks: usize) -> Tensor<4> {
        let mut y = self.stem.forward(x);
        for b in &self.blocks[..blocks] {
            y = b.forward(y);
        }
        y
    }

    /// The blocks from index `first` on and the head convolution, on the output `y` of block `first - 1`
    /// (of the stem when `first` is 0): the head's map, which [`pool`] turns into the features.
    pub fn head_map_from(&self, mut y: Tensor<4>, first: usize) -> Tensor<4> {
        for b in &self.blocks[first..] {
            y = b.forward(y);
        }
        self.head.forward(y)
    }

    /// Pooled features `[N, head channels]` of an NCHW batch.
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        pool(self.head_map_from(self.forward_to(x, 0), 0))
    }

    /// The classifier on pooled features (without the dropout before it).
    pub fn classify(&self, features: Tensor<2>) -> Tensor<2> {
        features.matmul(self.classifier.weight.val().transpose())
            + self.classifier.bias.val().unsqueeze()
    }

    /// Logits `[N, classes]` of an NCHW batch.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.classify(self.dropout.forward(self.features(x)))
    }

    /// Sets the TF-convention batch-norm momentum of every layer (`running = m * running + (1 - m) * batch`).
    pub fn set_bn_momentum(&mut self, momentum: f64) {
        let units = std::iter::once(&mut self.stem)
            .chain(self.blocks.iter_mut().flat_map(MbConv::units_mut))
            .chain(std::iter::once(&mut self.head));
        for bn in units.filter_map(|u| u.bn.as_mut()) {
            bn.momentum = 1.0 - momentum;
        }
    }

    /// Freezes (or unfreezes) everything but the classifier: no gradients, batch norm on its running
    /// statistics, no drop-path.
    pub fn with_frozen_backbone(self, frozen: bool) -> Self {
        let set = |m: ConvUnit| if frozen { m.freeze() } else { m.unfreeze() };
        Self {
            stem: set(self.stem),
            blocks: self
                .blocks
                .into_iter()
                .map(|b| if frozen { b.freeze() } else { b.unfreeze() })
                .collect(),
            head: set(self.head),
            ..self
        }
    }

    /// Every parameter and running statistic under its canonical name.
    pub fn export(&self) -> Tensors {
        let mut out = Tensors::new();
        self.stem.export(&mut out);
        for b in &self.blocks {
            b.export(&mut out);
        }
        self.head.export(&mut out);
        out.insert(
            "classifier.weight".into(),
            to_weight_tensor(self.classifier.weight.val()),
        );
        out.insert(
            "classifier.bias".into(),
            to_weight_tensor(self.classifier.bias.val()),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::{initial_weights, small_b0};
    use crate::optim::OptimizerKind;
    use burn::optim::GradientsParams;

    #[test]
    fn a_frozen_backbone_leaves_everything_but_the_classifier_untouched() {
        let plan = small_b0(32, 3);
        let before = initial_weights(&plan, 3);
        let model = EfficientNet::trainable(&plan, &before, &Device::flex())
            .unwrap()
            .with_frozen_backbone(true);
        let x = Tensor::<4>::random(
            [4, 3, 32, 32],
            Distribution::Normal(0.0, 1.0),
            &Device::flex().autodiff(),
        );
        let loss = model.forward(x).square().mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let after = OptimizerKind::Adamw
            .init(0.01)
            .step(1e-2, model, grads)
            .valid()
            .export();
        for (name, old) in &before {
            let changed = old.data != after[name].data;
            // Running statistics included: frozen batch norm uses them instead of updating them.
            assert_eq!(changed, name.starts_with("classifier"), "{name}");
        }
    }
}
