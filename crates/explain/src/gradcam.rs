//! Grad-CAM and Grad-CAM++ maps. The network runs as the training model on burn's CPU backend with
//! autodiff, frozen (batch norm on its running statistics, no drop-path, no dropout): the map `A` at the
//! chosen layer is made a leaf that requires gradients, the rest of the network runs from it, and the
//! gradient of the class's logit with respect to `A` comes from the exact backward pass. The weighting
//! follows pytorch-grad-cam (`GradCAM`, `GradCAMPlusPlus`), so maps can be compared with it.

use crate::error::{ExplainError, Result};
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use effnet_arch::Plan;
use effnet_train::model::{pool, Tensors};
use effnet_train::EfficientNet;
use serde::Serialize;

/// The layer whose activations are weighted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Layer {
    /// The head convolution's output (after its batch norm and activation): the last map before pooling.
    Head,
    /// The output of a stage, numbered as timm's `feature_info` numbers them: 0 is the stem, `N` the
    /// last block of the network's `N`th stage.
    Stage(usize),
}

impl Layer {
    /// Parses `head` or `stage:N`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.strip_prefix("stage:") {
            _ if name == "head" => Some(Self::Head),
            Some(n) => n.parse().ok().map(Self::Stage),
            None => None,
        }
    }

    /// The name [`Layer::from_name`] parses.
    pub fn name(&self) -> String {
        match self {
            Self::Head => "head".into(),
            Self::Stage(n) => format!("stage:{n}"),
        }
    }
}

/// How the gradients weight the activation channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Method {
    /// Grad-CAM: each channel weighted by its gradient's spatial mean.
    GradCam,
    /// Grad-CAM++: each channel weighted by its positive gradients, with the per-pixel coefficients of
    /// Chattopadhay et al. (eq. 19, the exponential-score closed form).
    GradCamPlusPlus,
}

impl Method {
    /// Parses `gradcam` or `gradcam++`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "gradcam" => Some(Self::GradCam),
            "gradcam++" => Some(Self::GradCamPlusPlus),
            _ => None,
        }
    }

    /// The name [`Method::from_name`] parses.
    pub fn name(&self) -> &'static str {
        match self {
            Self::GradCam => "gradcam",
            Self::GradCamPlusPlus => "gradcam++",
        }
    }
}

/// Which classes to explain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classes {
    /// The `n` most probable.
    Top(usize),
    /// These, in this order.
    Given(Vec<usize>),
}

impl Classes {
    /// The classes meant, given the image's logits.
    fn resolve(&self, logits: &[f32]) -> Result<Vec<usize>> {
        match self {
            Self::Top(0) => Err(ExplainError::Bad("explain at least one class".into())),
            Self::Top(n) => {
                let mut order: Vec<usize> = (0..logits.len()).collect();
                order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
                order.truncate(*n);
                Ok(order)
            }
            Self::Given(classes) => {
                if let Some(&bad) = classes.iter().find(|&&c| c >= logits.len()) {
                    return Err(ExplainError::Bad(format!(
                        "class {bad} does not exist: the network has classes 0..={}",
                        logits.len() - 1
                    )));
                }
                Ok(classes.clone())
            }
        }
    }
}

/// A class-activation map at the layer's resolution, row-major, non-negative (after the ReLU).
#[derive(Debug, Clone, PartialEq)]
pub struct ClassMap {
    /// The class explained.
    pub class: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// `height * width` values.
    pub values: Vec<f32>,
}

/// The logits of an image and one map per class asked for.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// The network's logits for the image.
    pub logits: Vec<f32>,
    /// One map per class, in the order asked.
    pub maps: Vec<ClassMap>,
}

/// The activations at a layer and the gradient of a class's logit with respect to them, both NCHW with
/// batch 1.
struct Gradients {
    channels: usize,
    height: usize,
    width: usize,
    activations: Vec<f32>,
    gradients: Vec<f32>,
}

/// A network ready to explain its predictions.
pub struct Explainer {
    model: EfficientNet,
    device: Device,
    /// For each stage `N` of [`Layer::Stage`], how many blocks run before its output.
    stage_ends: Vec<usize>,
    classes: usize,
}

impl Explainer {
    /// Builds the network of `plan` from canonical `tensors` (those that `effnet_weights::load` reads).
    pub fn new(plan: &Plan, tensors: &Tensors) -> Result<Self> {
        let device = Device::flex().autodiff();
        let model = EfficientNet::new(plan, tensors, &device)?
            .with_frozen_backbone(true)
            .freeze();
        let stages = plan.blocks.last().map_or(0, |b| b.stage + 1);
        let stage_ends = std::iter::once(0)
            .chain((0..stages).map(|s| {
                plan.blocks
                    .iter()
                    .rposition(|b| b.stage == s)
                    .map_or(0, |i| i + 1)
            }))
            .collect();
        Ok(Self {
            model,
            device,
            stage_ends,
            classes: plan.classifier.out_features as usize,
        })
    }

    /// How many blocks run before `layer`'s map (all of them, for the head).
    fn blocks_before(&self, layer: Layer) -> Result<usize> {
        match layer {
            Layer::Head => Ok(self.model.blocks.len()),
            Layer::Stage(n) => self.stage_ends.get(n).copied().ok_or_else(|| {
                ExplainError::Bad(format!(
                    "layer stage:{n} does not exist: the network has stages 0..={}",
                    self.stage_ends.len() - 1
                ))
            }),
        }
    }

    /// Logits and a map per class in `classes` for one normalised NHWC RGB image of `height x width`.
    pub fn explain(
        &self,
        image: &[f32],
        (height, width): (usize, usize),
        layer: Layer,
        method: Method,
        classes: &Classes,
    ) -> Result<Explanation> {
        if image.len() != height * width * 3 || image.is_empty() {
            return Err(ExplainError::Bad(format!(
                "expected a non-empty {height} x {width} RGB image, got {} values",
                image.len()
            )));
        }
        let activations = self.activations(image, (height, width), layer)?;
        let logits = values(self.rest(activations.clone(), layer)?);
        let maps = classes
            .resolve(&logits)?
            .into_iter()
            .map(|class| {
                let g = self.gradients(activations.clone(), layer, class)?;
                Ok(ClassMap {
                    class,
                    height: g.height,
                    width: g.width,
                    values: g.map(method),
                })
            })
            .collect::<Result<_>>()?;
        Ok(Explanation { logits, maps })
    }

    /// The map at `layer` for an image (no gradients are tracked up to it).
    fn activations(
        &self,
        image: &[f32],
        (height, width): (usize, usize),
        layer: Layer,
    ) -> Result<Tensor<4>> {
        let x = Tensor::<4>::from_data(
            TensorData::new(image.to_vec(), [1, height, width, 3]),
            &self.device,
        )
        .permute([0, 3, 1, 2]);
        let blocks = self.blocks_before(layer)?;
        let a = self.model.forward_to(x, blocks);
        Ok(match layer {
            Layer::Head => self.model.head_map_from(a, blocks),
            Layer::Stage(_) => a,
        })
    }

    /// Logits `[1, classes]` from the map `a` at `layer`.
    fn rest(&self, a: Tensor<4>, layer: Layer) -> Result<Tensor<2>> {
        let map = match layer {
            Layer::Head => a,
            Layer::Stage(_) => self.model.head_map_from(a, self.blocks_before(layer)?),
        };
        Ok(self.model.classify(pool(map)))
    }

    /// The gradient of `class`'s logit with respect to the map `a` at `layer`.
    fn gradients(&self, a: Tensor<4>, layer: Layer, class: usize) -> Result<Gradients> {
        let [_, channels, height, width] = a.dims();
        let leaf = a.detach().require_grad();
        let logits = self.rest(leaf.clone(), layer)?;
        let mut one_hot = vec![0f32; self.classes];
        one_hot[class] = 1.0;
        let probe =
            Tensor::<2>::from_data(TensorData::new(one_hot, [1, self.classes]), &self.device);
        let grads = (logits * probe).sum().backward();
        let gradient = leaf
            .grad(&grads)
            .expect("the map is a tracked leaf of the logits");
        Ok(Gradients {
            channels,
            height,
            width,
            activations: values(leaf.inner()),
            gradients: values(gradient),
        })
    }
}

/// A tensor's values as f32, in its row-major order.
fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("converted to f32")
}

impl Gradients {
    /// The class-activation map: `ReLU(Σ_c w_c A_c)` with the method's channel weights.
    fn map(&self, method: Method) -> Vec<f32> {
        let plane = self.height * self.width;
        let mut map = vec![0f64; plane];
        let channels = self
            .activations
            .chunks_exact(plane)
            .zip(self.gradients.chunks_exact(plane));
        for (a, g) in channels.take(self.channels) {
            let weight = channel_weight(method, a, g);
            for (m, &v) in map.iter_mut().zip(a) {
                *m += weight * f64::from(v);
            }
        }
        map.into_iter().map(|v| v.max(0.0) as f32).collect()
    }
}

/// The weight of one channel with activations `a` and gradients `g` (one plane each).
fn channel_weight(method: Method, a: &[f32], g: &[f32]) -> f64 {
    match method {
        Method::GradCam => g.iter().map(|&v| f64::from(v)).sum::<f64>() / g.len() as f64,
        Method::GradCamPlusPlus => {
            // pytorch-grad-cam's GradCAMPlusPlus: α = g² / (2g² + ΣA·g³), zero where g is.
            const EPS: f64 = 1e-6;
            let sum_a: f64 = a.iter().map(|&v| f64::from(v)).sum();
            g.iter()
                .map(|&v| {
                    let v = f64::from(v);
                    if v == 0.0 {
                        return 0.0;
                    }
                    let alpha = v * v / (2.0 * v * v + sum_a * v * v * v + EPS);
                    alpha * v.max(0.0)
                })
                .sum()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use effnet_arch::resolve;
    use effnet_arch::variant::Variant;
    use effnet_weights::random::random_weights;

    fn explainer(seed: u64) -> (Explainer, usize) {
        let mut config = Variant::by_name("b0").expect("b0 exists").config();
        config.resolution = 64;
        let plan = resolve(&config).expect("resolves");
        let tensors = random_weights(&plan, seed);
        (Explainer::new(&plan, &tensors).expect("builds"), 64)
    }

    fn image(side: usize) -> Vec<f32> {
        (0..side * side * 3)
            .map(|i| ((i * 7919 % 251) as f32 / 125.0) - 1.0)
            .collect()
    }

    /// The backward pass's gradient against central finite differences of the logit, at positions
    /// spread over the map, for the head and for an inner stage.
    #[test]
    fn gradients_match_finite_differences() {
        let (e, side) = explainer(3);
        let x = image(side);
        for layer in [Layer::Head, Layer::Stage(4)] {
            let a = e.activations(&x, (side, side), layer).expect("runs");
            let class = 7;
            let g = e.gradients(a.clone(), layer, class).expect("runs");
            // The positions the logit depends on most (f32 rounding swamps the finite differences of
            // the near-zero ones).
            let mut order: Vec<usize> = (0..g.gradients.len()).collect();
            order.sort_by(|&i, &j| g.gradients[j].abs().total_cmp(&g.gradients[i].abs()));
            for &index in order.iter().step_by(7).take(5) {
                let h = 5e-2f32;
                let logit = |delta: f32| {
                    let mut v = g.activations.clone();
                    v[index] += delta;
                    let t = Tensor::<4>::from_data(
                        TensorData::new(v, [1, g.channels, g.height, g.width]),
                        &e.device,
                    );
                    values(e.rest(t, layer).expect("runs"))[class]
                };
                let numeric = (logit(h) - logit(-h)) / (2.0 * h);
                let exact = g.gradients[index];
                let scale = exact.abs().max(numeric.abs());
                assert!(
                    (numeric - exact).abs() / scale < 2e-2,
                    "{layer:?} at {index}: backward {exact}, finite difference {numeric}"
                );
            }
        }
    }

    /// Grad-CAM's weights are the gradient's spatial mean: at the head, where the logit is linear in the
    /// pooled map, that is the classifier's row divided by the map's size.
    #[test]
    fn head_gradcam_weights_are_the_classifier_row_over_the_map_size() {
        let (e, side) = explainer(5);
        let a = e
            .activations(&image(side), (side, side), Layer::Head)
            .expect("runs");
        let g = e.gradients(a, Layer::Head, 2).expect("runs");
        let weight = values(e.model.classifier.weight.val());
        let plane = g.height * g.width;
        for c in [0, 100, g.channels - 1] {
            let mean = channel_weight(
                Method::GradCam,
                &[],
                &g.gradients[c * plane..(c + 1) * plane],
            );
            let want = f64::from(weight[2 * g.channels + c]) / plane as f64;
            assert!((mean - want).abs() < 1e-7, "channel {c}: {mean} vs {want}");
        }
    }

    #[test]
    fn gradcam_plus_plus_matches_its_closed_form_on_a_small_case() {
        // One channel of two pixels: g = [1, -1], ΣA = 2. α = 1 / (2 + 2 ± 1e-6·…) for the positive one.
        let w = channel_weight(Method::GradCamPlusPlus, &[1.0, 1.0], &[1.0, -1.0]);
        assert!((w - 1.0 / 4.0).abs() < 1e-6, "{w}");
        assert_eq!(channel_weight(Method::GradCamPlusPlus, &[1.0], &[0.0]), 0.0);
    }

    #[test]
    fn names_parse_and_bad_layers_and_classes_are_refused() {
        assert_eq!(Layer::from_name("head"), Some(Layer::Head));
        assert_eq!(Layer::from_name("stage:3"), Some(Layer::Stage(3)));
        assert_eq!(Layer::from_name("stage:x"), None);
        assert_eq!(
            Method::from_name("gradcam++"),
            Some(Method::GradCamPlusPlus)
        );
        let (e, side) = explainer(1);
        let x = image(side);
        let err = e
            .explain(
                &x,
                (side, side),
                Layer::Stage(8),
                Method::GradCam,
                &Classes::Top(1),
            )
            .unwrap_err();
        assert!(err.to_string().contains("stages 0..=7"), "{err}");
        let err = e
            .explain(
                &x,
                (side, side),
                Layer::Head,
                Method::GradCam,
                &Classes::Given(vec![1000]),
            )
            .unwrap_err();
        assert!(err.to_string().contains("classes 0..=999"), "{err}");
    }
}
