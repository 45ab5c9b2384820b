//! Element-wise activations applied in place.

use effnet_arch::variant::Activation;

/// `1 / (1 + e^-x)`.
#[inline]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Applies `activation` to every element of `values`.
pub fn apply(activation: Option<Activation>, values: &mut [f32]) {
    match activation {
        None => {}
        Some(Activation::Swish) => values.iter_mut().for_each(|v| *v *= sigmoid(*v)),
        Some(Activation::Relu6) => values.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0)),
        Some(Activation::Sigmoid) => values.iter_mut().for_each(|v| *v = sigmoid(*v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations_match_their_definitions() {
        let mut v = [-7.0, -1.0, 0.0, 2.0, 7.0];
        apply(Some(Activation::Relu6), &mut v);
        assert_eq!(v, [0.0, 0.0, 0.0, 2.0, 6.0]);
        let mut s = [2.0_f32];
        apply(Some(Activation::Swish), &mut s);
        assert!((s[0] - 2.0 / (1.0 + (-2.0f32).exp())).abs() < 1e-7);
    }
}
