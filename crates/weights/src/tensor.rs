//! A dense, row-major f32 tensor: the in-memory form of every weight; and [`TensorSource`], how a consumer
//! takes tensors one at a time.

use std::collections::BTreeMap;

/// A row-major f32 tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Sizes, outermost first.
    pub shape: Vec<usize>,
    /// Elements in row-major order.
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor from its shape and data; the element count must match.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "shape {shape:?} does not hold {} elements",
            data.len()
        );
        Self { shape, data }
    }

    /// Reorders axes: output axis `i` is input axis `order[i]`.
    pub fn permute(&self, order: &[usize]) -> Tensor {
        let shape: Vec<usize> = order.iter().map(|&a| self.shape[a]).collect();
        let mut in_strides = vec![1; self.shape.len()];
        for i in (0..self.shape.len().saturating_sub(1)).rev() {
            in_strides[i] = in_strides[i + 1] * self.shape[i + 1];
        }
        let strides: Vec<usize> = order.iter().map(|&a| in_strides[a]).collect();
        Tensor::new(shape.clone(), gather(&self.data, 0, &shape, &strides))
    }
}

/// A floating-point element type as weight files store it (little-endian); every reader decodes through
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatType {
    /// IEEE single precision.
    F32,
    /// IEEE double precision (rounded to f32).
    F64,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

impl FloatType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F64 => 8,
            Self::F32 => 4,
            Self::F16 | Self::Bf16 => 2,
        }
    }

    /// The f32 values of little-endian `bytes` (a trailing partial element is ignored).
    pub fn decode(self, bytes: &[u8]) -> Vec<f32> {
        let chunks = bytes.chunks_exact(self.size());
        match self {
            Self::F32 => chunks
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
            Self::F64 => chunks
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            Self::F16 => chunks
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Self::Bf16 => chunks
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        }
    }
}

/// Canonical tensors handed out one at a time by name. A consumer that turns each tensor into another form
/// (the inference engine folds and packs them) takes them from a source, so that the source's tensors and
/// their converted forms are never all in memory together.
pub trait TensorSource {
    /// The tensor named `name` (canonical name), moved out of the source; `None` if it has none.
    fn take(&mut self, name: &str) -> Option<Tensor>;
}

/// Owned tensors are moved out, so the map shrinks as the consumer's copy grows.
impl TensorSource for BTreeMap<String, Tensor> {
    fn take(&mut self, name: &str) -> Option<Tensor> {
        self.remove(name)
    }
}

/// Borrowed tensors are copied one at a time, for a caller that keeps the originals.
impl TensorSource for &BTreeMap<String, Tensor> {
    fn take(&mut self, name: &str) -> Option<Tensor> {
        self.get(name).cloned()
    }
}

/// Copies the strided view `(offset, shape, strides)` of `source` into a contiguous vector.
/// The caller guarantees the view stays inside `source` (see [`view_end`]).
pub fn gather<T: Copy>(source: &[T], offset: usize, shape: &[usize], strides: &[usize]) -> Vec<T> {
    let count: usize = shape.iter().product();
    let mut out = Vec::with_capacity(count);
    if count == 0 {
        return out;
    }
    let mut index = vec![0usize; shape.len()];
    for _ in 0..count {
        let at = offset + index.iter().zip(strides).map(|(i, s)| i * s).sum::<usize>();
        out.push(source[at]);
        for d in (0..shape.len()).rev() {
            index[d] += 1;
            if index[d] < shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    out
}

/// One past the last element a strided view touches (0 for an empty view); `None` if that overflows.
pub fn view_end(offset: usize, shape: &[usize], strides: &[usize]) -> Option<usize> {
    if shape.contains(&0) {
        return Some(0);
    }
    shape
        .iter()
        .zip(strides)
        .try_fold(offset, |end, (&n, &s)| {
            end.checked_add((n - 1).checked_mul(s)?)
        })?
        .checked_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_and_strided_gather_agree() {
        let t = Tensor::new(vec![2, 3], vec![0., 1., 2., 3., 4., 5.]);
        assert_eq!(t.permute(&[1, 0]).data, vec![0., 3., 1., 4., 2., 5.]);
        // A transposed view of a [3, 2] storage, as PyTorch saves `weight.t()`.
        assert_eq!(
            gather(&[0., 3., 1., 4., 2., 5.], 0, &[2, 3], &[1, 2]),
            t.data
        );
        assert_eq!(view_end(1, &[2, 3], &[1, 2]), Some(1 + 1 + 4 + 1));
        assert_eq!(view_end(0, &[2, 0], &[1, 2]), Some(0));
        assert_eq!(view_end(0, &[3, 3], &[usize::MAX / 2, 1]), None, "overflow");
    }
}
