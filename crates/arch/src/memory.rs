//! Activation memory: the peak of one f32 inference (buffer liveness over the op sequence) and the
//! activations a training step keeps for the backward pass.
//!
//! Inference model: batch norm and activations run in place on their convolution's output, the SE scale
//! multiplies the depthwise output in place and the residual add writes into the project output. A buffer is
//! live from the op that writes it to the last op that reads it; the peak is the largest live total at any op.
//!
//! Training model (what effnet's CPU trainer keeps for backward): every convolution and the classifier keep
//! their input, batch norm keeps its input, an activation keeps its input unless it is a swish fused into
//! the batch norm before it (the fused kernel recomputes it from the batch norm's input), and the SE
//! multiply keeps both operands. Pooling, residual adds and drop-path keep nothing of activation size.
//! (PyTorch eager, which keeps every activation's input, keeps more.)

use crate::plan::{Conv, Plan};
use crate::variant::Activation;

/// Bytes of an f32.
pub const F32_BYTES: u64 = 4;

/// Memory an effnet process needs besides a network's weights and activations: the binary, thread
/// stacks, the allocator's own structures and the kernels' small scratch vectors. An empty run (a network
/// of a few kilobytes) peaks well below it; docs/memory.md has the measurements.
pub const RUNTIME_BYTES: u64 = 16 << 20;

/// f32 copies of the parameters that training with the official recipe keeps: the weights, their
/// gradients, RMSProp's mean square and momentum, and the exponential moving average.
pub const RECIPE_PARAMETER_COPIES: u64 = 5;

/// Live and saved activation memory, per layer (in [`Plan::layers`] order) and in total.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationMemory {
    /// Bytes live while each layer runs (batch 1, f32).
    pub live_bytes: Vec<u64>,
    /// Bytes each layer keeps for the backward pass (per image, f32).
    pub saved_bytes: Vec<u64>,
}

impl ActivationMemory {
    /// Peak live bytes of one inference.
    pub fn inference_peak(&self) -> u64 {
        self.live_bytes.iter().copied().max().unwrap_or(0)
    }

    /// Total bytes kept for backward by one training image.
    pub fn training_total(&self) -> u64 {
        self.saved_bytes.iter().sum()
    }
}

#[derive(Default)]
struct Liveness {
    buffers: Vec<(u64, usize, usize)>, // elements, first op, last op
    op: usize,
}

impl Liveness {
    fn input(&mut self, elements: u64) -> usize {
        self.buffers.push((elements, 0, 0));
        self.buffers.len() - 1
    }

    /// A new op reads `inputs` and, if `elements > 0`, writes a new buffer.
    fn op(&mut self, inputs: &[usize], elements: u64) -> usize {
        self.op += 1;
        for &i in inputs {
            self.buffers[i].2 = self.op;
        }
        self.buffers.push((elements, self.op, self.op));
        self.buffers.len() - 1
    }

    fn live_elements_at(&self, op: usize) -> u64 {
        self.buffers
            .iter()
            .filter(|(_, first, last)| *first <= op && op <= *last)
            .map(|b| b.0)
            .sum()
    }
}

fn elements(channels: u32, size: u32) -> u64 {
    u64::from(channels) * u64::from(size) * u64::from(size)
}

/// Elements a convolution keeps for backward: its input, BN's input, and the activation's input unless
/// the activation is a swish fused into the batch norm.
fn conv_saved(c: &Conv) -> u64 {
    let out = elements(c.out_channels, c.output_size);
    let fused_swish = c.batch_norm && c.activation == Some(Activation::Swish);
    elements(c.in_channels, c.input_size)
        + u64::from(c.batch_norm) * out
        + u64::from(c.activation.is_some() && !fused_swish) * out
}

/// Computes both memory figures for a plan.
pub fn activation_memory(plan: &Plan) -> ActivationMemory {
    let mut tape = Liveness::default();
    let mut layer_ops = Vec::new();
    let mut saved = Vec::new();
    let mut conv = |tape: &mut Liveness, c: &Conv, input: usize, saved_extra: u64| {
        let id = tape.op(&[input], elements(c.out_channels, c.output_size));
        layer_ops.push(tape.op);
        saved.push((conv_saved(c) + saved_extra) * F32_BYTES);
        id
    };
    let image = tape.input(elements(3, plan.stem.input_size));
    let mut x = conv(&mut tape, &plan.stem, image, 0);
    for b in &plan.blocks {
        let block_input = x;
        let expanded = match &b.expand {
            Some(e) => conv(&mut tape, e, x, 0),
            None => x,
        };
        let dw = conv(&mut tape, &b.depthwise, expanded, 0);
        if let Some(se) = &b.se {
            let pooled = tape.op(&[dw], u64::from(se.reduce.in_channels));
            let reduced = conv(&mut tape, &se.reduce, pooled, 0);
            // The in-place multiply keeps the depthwise output and the gate for backward: attributed to SE expand.
            let kept = elements(b.depthwise.out_channels, b.depthwise.output_size)
                + u64::from(se.expand.out_channels);
            let gate = conv(&mut tape, &se.expand, reduced, kept);
            tape.op(&[dw, gate], 0);
        }
        let projected = conv(&mut tape, &b.project, dw, 0);
        if b.residual {
            tape.op(&[projected, block_input], 0);
        }
        x = projected;
    }
    let head = conv(&mut tape, &plan.head, x, 0);
    let pooled = tape.op(&[head], u64::from(plan.head.out_channels));
    tape.op(&[pooled], u64::from(plan.classifier.out_features));
    layer_ops.push(tape.op);
    saved.push(u64::from(plan.classifier.in_features) * F32_BYTES);
    let live_bytes = layer_ops
        .iter()
        .map(|&op| tape.live_elements_at(op) * F32_BYTES)
        .collect();
    ActivationMemory {
        live_bytes,
        saved_bytes: saved,
    }
}
