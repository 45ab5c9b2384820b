//! 1x1 convolutions on NCHW batches as one GEMM per image, forward and both gradients. burn's CPU
//! backend computes the weight gradient as a convolution whose kernel is the whole feature map (after
//! copying both operands into swapped layouts); here each pass is a single `gemm` call per image on the
//! tensors as they lie.

use rayon::prelude::*;

/// Shapes of a 1x1 convolution: `batch` images of `in_channels x pixels` to `out_channels x pixels`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pointwise {
    /// Images in the batch.
    pub batch: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Pixels per channel (height x width).
    pub pixels: usize,
}

/// A row- or column-major matrix view: element `(i, j)` is `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy)]
struct Matrix<'a> {
    data: &'a [f32],
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Matrix<'a> {
    fn rows(data: &'a [f32], columns: usize) -> Self {
        Self {
            data,
            row_stride: columns,
            col_stride: 1,
        }
    }

    fn transposed(data: &'a [f32], columns: usize) -> Self {
        Self {
            data,
            row_stride: 1,
            col_stride: columns,
        }
    }
}

/// `dst (m x n, row-major) = [dst +] lhs (m x k) * rhs (k x n)`.
fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    accumulate: bool,
    lhs: Matrix,
    rhs: Matrix,
    parallelism: gemm::Parallelism,
) {
    assert_eq!(dst.len(), m * n);
    if dst.is_empty() || k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    assert!(lhs.data.len() > (m - 1) * lhs.row_stride + (k - 1) * lhs.col_stride);
    assert!(rhs.data.len() > (k - 1) * rhs.row_stride + (n - 1) * rhs.col_stride);
    // SAFETY: the asserts above keep every index the strides reach inside the slices; `dst` is
    // exclusively borrowed and cannot overlap the shared operands.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Threads inside one GEMM when there are fewer images than threads, none otherwise (the images are
/// then spread over the threads).
fn inner_parallelism(batch: usize) -> gemm::Parallelism {
    if batch < rayon::current_num_threads() {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    }
}

impl Pointwise {
    /// `y[b] = weight · x[b]` for every image; `weight` is `[out, in]`.
    pub fn forward(&self, x: &[f32], weight: &[f32]) -> Vec<f32> {
        let (cin, cout) = (self.in_channels, self.out_channels);
        self.per_image((x, cin), cout, |x, y, par| {
            let (w, x) = (Matrix::rows(weight, cin), Matrix::rows(x, self.pixels));
            matmul((cout, self.pixels, cin), y, false, w, x, par);
        })
    }

    /// `dx[b] = weightᵀ · dy[b]`: the gradient of the input.
    pub fn input_grad(&self, weight: &[f32], dy: &[f32]) -> Vec<f32> {
        let (cin, cout) = (self.in_channels, self.out_channels);
        self.per_image((dy, cout), cin, |dy, dx, par| {
            let (wt, dy) = (
                Matrix::transposed(weight, cin),
                Matrix::rows(dy, self.pixels),
            );
            matmul((cin, self.pixels, cout), dx, false, wt, dy, par);
        })
    }

    /// A new batch of `dst_channels x pixels` images, each computed by `f` from the matching
    /// `src_channels x pixels` image of `src`: images in parallel, or threads inside each GEMM when
    /// there are fewer images than threads.
    fn per_image(
        &self,
        (src, src_channels): (&[f32], usize),
        dst_channels: usize,
        f: impl Fn(&[f32], &mut [f32], gemm::Parallelism) + Sync,
    ) -> Vec<f32> {
        let p = self.pixels;
        let mut dst = vec![0.0; self.batch * dst_channels * p];
        let par = inner_parallelism(self.batch);
        dst.par_chunks_mut(dst_channels * p)
            .zip(src.par_chunks(src_channels * p))
            .for_each(|(dst, src)| f(src, dst, par));
        dst
    }

    /// `dw = Σ_b dy[b] · x[b]ᵀ`: the gradient of the `[out, in]` weight. Each thread sums its share of
    /// the images into its own buffer; the buffers are then added in a fixed order, so the result does
    /// not depend on scheduling.
    pub fn weight_grad(&self, x: &[f32], dy: &[f32]) -> Vec<f32> {
        let Self {
            in_channels: cin,
            out_channels: cout,
            pixels: p,
            batch,
        } = *self;
        let par = inner_parallelism(batch);
        let per_thread = batch.div_ceil(rayon::current_num_threads()).max(1);
        let partial = |first: usize| {
            let mut dw = vec![0.0; cout * cin];
            for b in first..(first + per_thread).min(batch) {
                let dy = Matrix::rows(&dy[b * cout * p..][..cout * p], p);
                let xt = Matrix::transposed(&x[b * cin * p..][..cin * p], p);
                matmul((cout, cin, p), &mut dw, b > first, dy, xt, par);
            }
            dw
        };
        let partials: Vec<Vec<f32>> = (0..batch)
            .into_par_iter()
            .step_by(per_thread)
            .map(partial)
            .collect();
        let mut partials = partials.into_iter();
        let mut dw = partials.next().unwrap_or_else(|| vec![0.0; cout * cin]);
        for other in partials {
            dw.iter_mut().zip(&other).for_each(|(a, b)| *a += b);
        }
        dw
    }
}
