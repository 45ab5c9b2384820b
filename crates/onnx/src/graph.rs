//! The ONNX graph of a resolved plan: one `Conv` per convolution with its batch norm folded in, activations
//! as standard operators, squeeze-excite as `GlobalAveragePool` + `Conv` + `Sigmoid` + `Mul`, and the
//! classifier as `Flatten` + `Gemm`. It walks the [`Plan`]; it never runs the engine.

use crate::proto::{
    attribute_type, data_type, AttributeProto, Dimension, NodeProto, TensorProto, TensorShapeProto,
    TensorTypeProto, TypeProto, ValueInfoProto,
};
use crate::{ExportOptions, Head, InputLayout, SWISH_OPSET};
use effnet_arch::features::FeatureTap;
use effnet_arch::plan::Conv;
use effnet_arch::variant::Activation;
use effnet_arch::{Padding, Plan};
use effnet_weights::fold::{fold_conv, take_required};
use effnet_weights::TensorSource;

/// An attribute of a node.
pub(crate) enum Attr {
    /// An integer.
    Int(i64),
    /// A list of integers.
    Ints(Vec<i64>),
    /// A string.
    Str(&'static str),
}

fn attribute(name: &str, value: Attr) -> AttributeProto {
    let mut a = AttributeProto {
        name: name.into(),
        ..Default::default()
    };
    match value {
        Attr::Int(i) => (a.i, a.r#type) = (Some(i), attribute_type::INT),
        Attr::Ints(ints) => (a.ints, a.r#type) = (ints, attribute_type::INTS),
        Attr::Str(s) => (a.s, a.r#type) = (Some(s.as_bytes().to_vec()), attribute_type::STRING),
    }
    a
}

/// A float32 tensor value description; `None` dimensions are symbolic, named by the string.
pub(crate) fn value_info(name: &str, dims: &[Result<i64, String>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| match d {
            Ok(v) => Dimension {
                dim_value: Some(*v),
                dim_param: None,
            },
            Err(param) => Dimension {
                dim_value: None,
                dim_param: Some(param.clone()),
            },
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: data_type::FLOAT,
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
    }
}

/// A float32 constant.
pub(crate) fn float_tensor(name: &str, dims: &[usize], values: &[f32]) -> TensorProto {
    TensorProto {
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: data_type::FLOAT,
        name: name.into(),
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// The nodes and weights of a graph under construction.
pub(crate) struct Builder<'a, S: TensorSource> {
    pub nodes: Vec<NodeProto>,
    pub initializers: Vec<TensorProto>,
    tensors: &'a mut S,
    plan: &'a Plan,
    options: &'a ExportOptions,
    /// Whether the `Clip` bounds of ReLU6 are among the initializers yet.
    clip_bounds: bool,
}

impl<'a, S: TensorSource> Builder<'a, S> {
    pub fn new(plan: &'a Plan, tensors: &'a mut S, options: &'a ExportOptions) -> Self {
        Self {
            nodes: Vec::new(),
            initializers: Vec::new(),
            tensors,
            plan,
            options,
            clip_bounds: false,
        }
    }

    /// Adds a node named `name` and returns its output's name (`output`).
    fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        output: &str,
        attrs: Vec<(&str, Attr)>,
    ) -> String {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            name: name.into(),
            op_type: op.into(),
            attribute: attrs.into_iter().map(|(n, v)| attribute(n, v)).collect(),
        });
        output.into()
    }

    /// The padding attribute of `conv`: explicit pads from the plan at a fixed size; at a symbolic size,
    /// `SAME_UPPER` for TF "SAME" (the same rule: the extra pixel at the end) and explicit symmetric pads
    /// otherwise.
    fn padding(&self, conv: &Conv) -> (&'static str, Attr) {
        let (k, s) = (conv.kernel as i64, conv.stride);
        if !self.options.dynamic_size {
            let (b, e) = (i64::from(conv.pad.begin), i64::from(conv.pad.end));
            return ("pads", Attr::Ints(vec![b, b, e, e]));
        }
        match self.plan.config.padding {
            Padding::TfSame if k > 1 || s > 1 => ("auto_pad", Attr::Str("SAME_UPPER")),
            Padding::TfSame => ("pads", Attr::Ints(vec![0; 4])),
            Padding::Symmetric => ("pads", Attr::Ints(vec![(k - 1) / 2; 4])),
        }
    }

    /// The convolution named `name` (canonical layout) on `input`, batch norm folded, then its activation.
    pub fn conv(&mut self, conv: &Conv, name: &str, input: &str) -> String {
        let folded = fold_conv(conv, name, self.tensors, self.plan.config.bn_eps);
        let (w, b) = (format!("{name}.weight"), format!("{name}.bias"));
        self.initializers
            .push(float_tensor(&w, &conv.weight_shape(), &folded.weight));
        self.initializers.push(float_tensor(
            &b,
            &[conv.out_channels as usize],
            &folded.bias,
        ));
        let k = i64::from(conv.kernel);
        let s = i64::from(conv.stride);
        let attrs = vec![
            ("kernel_shape", Attr::Ints(vec![k, k])),
            ("strides", Attr::Ints(vec![s, s])),
            ("dilations", Attr::Ints(vec![1, 1])),
            ("group", Attr::Int(i64::from(conv.groups))),
            self.padding(conv),
        ];
        let out = self.node(
            "Conv",
            name,
            &[input, &w, &b],
            &format!("{name}.conv"),
            attrs,
        );
        match conv.activation {
            Some(activation) => self.activation(activation, name, &out),
            None => out,
        }
    }

    /// `activation` applied to `input`, the nodes named after `name`.
    fn activation(&mut self, activation: Activation, name: &str, input: &str) -> String {
        let out = format!("{name}.act");
        match activation {
            Activation::Swish if self.options.opset >= SWISH_OPSET => {
                self.node("Swish", &out, &[input], &out, vec![])
            }
            Activation::Swish => {
                let gate = self.node(
                    "Sigmoid",
                    &format!("{name}.sigmoid"),
                    &[input],
                    &format!("{name}.sigmoid"),
                    vec![],
                );
                self.node("Mul", &out, &[input, &gate], &out, vec![])
            }
            Activation::Sigmoid => self.node("Sigmoid", &out, &[input], &out, vec![]),
            Activation::Relu6 => {
                if !self.clip_bounds {
                    self.initializers
                        .push(float_tensor("relu6.min", &[], &[0.0]));
                    self.initializers
                        .push(float_tensor("relu6.max", &[], &[6.0]));
                    self.clip_bounds = true;
                }
                self.node(
                    "Clip",
                    &out,
                    &[input, "relu6.min", "relu6.max"],
                    &out,
                    vec![],
                )
            }
        }
    }

    /// The network on the NCHW value `input`: up to the classifier's output (the name of the logits or
    /// probabilities value), or up to the last feature level asked for (the names of the levels' values, in
    /// the order of `taps`).
    pub fn network(&mut self, input: &str, taps: &[FeatureTap]) -> Vec<String> {
        let plan = self.plan;
        let mut tapped: Vec<(FeatureTap, String)> = Vec::new();
        let mut x = self.conv(&plan.stem, "stem", input);
        tapped.push((FeatureTap::Stem, x.clone()));
        let last = if taps.is_empty() {
            plan.blocks.len()
        } else {
            taps.iter()
                .map(|t| match t {
                    FeatureTap::Stem => 0,
                    FeatureTap::BlockOutput(b) | FeatureTap::BeforeProject(b) => b + 1,
                })
                .max()
                .unwrap_or(0)
        };
        for b in &plan.blocks[..last] {
            let prefix = format!("blocks.{}", b.index);
            let input = x.clone();
            if let Some(e) = &b.expand {
                x = self.conv(e, &format!("{prefix}.expand"), &x);
            }
            x = self.conv(&b.depthwise, &format!("{prefix}.depthwise"), &x);
            if let Some(se) = &b.se {
                let pooled = format!("{prefix}.se.pool");
                self.node("GlobalAveragePool", &pooled, &[&x], &pooled, vec![]);
                let reduced = self.conv(&se.reduce, &format!("{prefix}.se.reduce"), &pooled);
                let gate = self.conv(&se.expand, &format!("{prefix}.se.expand"), &reduced);
                let scaled = format!("{prefix}.se.scale");
                x = self.node("Mul", &scaled, &[&x, &gate], &scaled, vec![]);
            }
            tapped.push((FeatureTap::BeforeProject(b.index), x.clone()));
            x = self.conv(&b.project, &format!("{prefix}.project"), &x);
            if b.residual {
                let sum = format!("{prefix}.residual");
                x = self.node("Add", &sum, &[&x, &input], &sum, vec![]);
            }
            tapped.push((FeatureTap::BlockOutput(b.index), x.clone()));
        }
        if !taps.is_empty() {
            return taps
                .iter()
                .map(|t| {
                    let (_, name) = tapped.iter().find(|(u, _)| u == t).expect("tap passed");
                    name.clone()
                })
                .collect();
        }
        self.classifier(&x)
    }

    /// Head convolution, global pooling and the classifier on `x`; the output's name.
    fn classifier(&mut self, x: &str) -> Vec<String> {
        let head = self.conv(&self.plan.head, "head", x);
        let pooled = self.node("GlobalAveragePool", "pool", &[&head], "pool", vec![]);
        let flat = self.node(
            "Flatten",
            "flatten",
            &[&pooled],
            "flatten",
            vec![("axis", Attr::Int(1))],
        );
        let c = &self.plan.classifier;
        let weight = take_required(self.tensors, "classifier.weight").data; // [out][in]
        let bias = take_required(self.tensors, "classifier.bias").data;
        let (o, i) = (c.out_features as usize, c.in_features as usize);
        self.initializers
            .push(float_tensor("classifier.weight", &[o, i], &weight));
        self.initializers
            .push(float_tensor("classifier.bias", &[o], &bias));
        let logits = self.node(
            "Gemm",
            "classifier",
            &[&flat, "classifier.weight", "classifier.bias"],
            "logits",
            vec![("transB", Attr::Int(1))],
        );
        match self.options.head {
            Head::Probabilities => vec![self.node(
                "Softmax",
                "softmax",
                &[&logits],
                "probabilities",
                vec![("axis", Attr::Int(1))],
            )],
            _ => vec![logits],
        }
    }

    /// The graph input `input` in the layout the options ask for, as an NCHW value.
    pub fn input_as_nchw(&mut self, input: &str) -> String {
        match self.options.layout {
            InputLayout::Nchw => input.into(),
            InputLayout::Nhwc => self.node(
                "Transpose",
                "input.to_nchw",
                &[input],
                "input.nchw",
                vec![("perm", Attr::Ints(vec![0, 3, 1, 2]))],
            ),
        }
    }

    /// `value` (NCHW) in the output layout, renamed `output`.
    pub fn output_as(&mut self, value: &str, output: &str) {
        match self.options.layout {
            InputLayout::Nhwc => {
                self.node(
                    "Transpose",
                    &format!("{output}.to_nhwc"),
                    &[value],
                    output,
                    vec![("perm", Attr::Ints(vec![0, 2, 3, 1]))],
                );
            }
            InputLayout::Nchw => self.rename(value, output),
        }
    }

    /// Renames the value `from` to `to` wherever a node writes or reads it.
    fn rename(&mut self, from: &str, to: &str) {
        for node in &mut self.nodes {
            for name in node.input.iter_mut().chain(node.output.iter_mut()) {
                if name == from {
                    *name = to.into();
                }
            }
        }
    }
}
