//! Products of a few rows by a stored weight on the CPU: a decode step's
//! linear layers.
//!
//! A decode step multiplies a handful of rows (one per sequence of a shard)
//! by every weight of the model. burn-flex hands such a product to gemm as a
//! whole, and gemm then repacks the weight (it is the large operand) for its
//! 16-row microkernel, of which only a few rows are used: most of the time
//! goes into copying weights. gemm also has "horizontal" kernels that take
//! dot products of rows of `x` with stored weight rows, without packing, for
//! products of at most 256 outputs; [`product`] calls gemm on column blocks
//! of that size. On the benchmark model this is 3-4x faster per product
//! (`cargo run --release -p safer-runtime --example matmul_rates`).
//!
//! The fast path applies only to burn-flex tensors (the CPU backend without
//! autodiff) whose weight is a view of a stored `[out, in]` matrix, the
//! layout [`super::layers::load_linear`] and
//! [`super::layers::decoding_layout`] give; everything else takes burn's
//! `matmul`.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_flex::FlexTensor;

use super::on_cpu::{flex_f32, from_cpu};

/// Products with more rows than this take burn's `matmul`: gemm's packed
/// kernels use most of their rows from here on.
pub const MAX_ROWS: usize = 16;

/// gemm takes its horizontal kernels for products of at most this many
/// outputs (`m·n`).
const HORIZONTAL_OUTPUTS: usize = 256;

/// `x · w` with `x`: `[rows, d_in]` and `w`: `[d_in, d_out]`, through gemm's
/// horizontal kernels when `rows <= MAX_ROWS`, the backend is burn-flex and
/// `w` is a view of a contiguous `[d_out, d_in]` matrix; otherwise `x.matmul(w)`.
/// Returns `[rows, d_out]`.
pub fn matmul<B: Backend>(x: Tensor<B, 2>, w: Tensor<B, 2>) -> Tensor<B, 2> {
    match product(&x, &w) {
        Some(y) => y,
        None => x.matmul(w),
    }
}

/// The fast path of [`matmul`], or `None` where it does not apply.
pub fn product<B: Backend>(x: &Tensor<B, 2>, w: &Tensor<B, 2>) -> Option<Tensor<B, 2>> {
    let [rows, d_in] = x.dims();
    let [w_in, d_out] = w.dims();
    if rows == 0 || rows > MAX_ROWS || d_in == 0 || d_out == 0 || w_in != d_in {
        return None;
    }
    let x = flex_f32(x)?;
    let w = flex_f32(w)?;
    let x_operand = Operand::rows_of(&x, rows, d_in)?;
    let w_operand = Operand::columns_of(&w, d_in, d_out)?;
    let mut out = vec![0f32; rows * d_out];
    let block = (HORIZONTAL_OUTPUTS / rows).max(1);
    for first in (0..d_out).step_by(block) {
        let width = block.min(d_out - first);
        horizontal_block(&mut out, first, width, &x_operand, &w_operand);
    }
    let y = FlexTensor::from_data(TensorData::new(out, [rows, d_out]));
    from_cpu(Tensor::from_primitive(TensorPrimitive::Float(y)))
}

/// A matrix operand as `count` vectors of `len` contiguous elements, each
/// `stride` after the previous, starting at `start` of `data`: the rows of
/// `x` or the stored rows (output columns) of `w`. Every element it names
/// lies inside `data` (checked when built).
struct Operand<'a> {
    data: &'a [f32],
    start: usize,
    stride: usize,
    count: usize,
    len: usize,
}

impl<'a> Operand<'a> {
    /// `x`: `[rows, d_in]` with contiguous rows.
    fn rows_of(x: &'a FlexTensor, rows: usize, d_in: usize) -> Option<Self> {
        let strides = x.layout().strides();
        let stride = if rows == 1 { d_in as isize } else { strides[0] };
        Self::new(x, strides[1], stride, rows, d_in)
    }

    /// `w`: `[d_in, d_out]` viewing a stored `[d_out, d_in]` matrix, so each
    /// output's weights are contiguous.
    fn columns_of(w: &'a FlexTensor, d_in: usize, d_out: usize) -> Option<Self> {
        let strides = w.layout().strides();
        let stride = if d_out == 1 {
            d_in as isize
        } else {
            strides[1]
        };
        Self::new(w, strides[0], stride, d_out, d_in)
    }

    fn new(
        t: &'a FlexTensor,
        element_stride: isize,
        vector_stride: isize,
        count: usize,
        len: usize,
    ) -> Option<Self> {
        if count == 0 || (element_stride != 1 && len > 1) {
            return None;
        }
        let stride = usize::try_from(vector_stride).ok()?;
        if stride < len {
            return None;
        }
        let data: &[f32] = t.storage();
        let start = t.layout().start_offset();
        let end = start
            .checked_add((count - 1).checked_mul(stride)?)?
            .checked_add(len)?;
        (end <= data.len()).then_some(Self {
            data,
            start,
            stride,
            count,
            len,
        })
    }
}

/// Writes output columns `first..first + width` of `out` (`[rows, d_out]`,
/// row-major, `rows` and `d_out` the vector counts of `x` and `w`) as `x · w` with one gemm call on its horizontal kernels.
#[allow(unsafe_code)]
fn horizontal_block(out: &mut [f32], first: usize, width: usize, x: &Operand<'_>, w: &Operand<'_>) {
    let (rows, d_in, d_out) = (x.count, x.len, w.count);
    assert!(w.len == d_in && first + width <= d_out && out.len() == rows * d_out);
    // SAFETY: `Operand::new` checked that `count` vectors of `len` elements
    // at `start + i·stride` lie in `data`: `x` has `rows` vectors of `d_in`,
    // `w` has `d_out` vectors of `d_in`, of which this block reads vectors
    // `first..first + width`. The destination block is rows `0..rows`,
    // columns `first..first + width` of `out`, inside it by the assertions.
    // gemm reads `lhs[i, l] = x[start + i·stride + l]`, `rhs[l, j] =
    // w[start + (first + j)·stride + l]` and writes `dst[i, j]` at
    // `out[first + i·d_out + j]`; `read_dst = false`, so `dst` is only written.
    unsafe {
        gemm::gemm(
            rows,
            width,
            d_in,
            out.as_mut_ptr().add(first),
            1,
            d_out as isize,
            false,
            x.data.as_ptr().add(x.start),
            1,
            x.stride as isize,
            w.data.as_ptr().add(w.start + first * w.stride),
            w.stride as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::backend::Backend;
    use burn::tensor::{Distribution, Tensor};

    use super::{matmul, product, MAX_ROWS};
    use crate::{CpuAutodiff, CpuBackend as B};

    fn random<const D: usize>(dims: [usize; D], seed: u64) -> Tensor<B, D> {
        let device = Default::default();
        B::seed(&device, seed);
        Tensor::random(dims, Distribution::Normal(0.0, 1.0), &device)
    }

    fn largest_difference(a: Tensor<B, 2>, b: Tensor<B, 2>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    #[test]
    fn equals_burns_product_for_every_row_count_and_width() {
        for (d_in, d_out) in [(256, 704), (704, 256), (32, 7), (5, 300), (1, 1)] {
            // A stored `[d_out, d_in]` weight viewed as `[d_in, d_out]`.
            let w = random([d_out, d_in], 1).transpose();
            for rows in 1..=MAX_ROWS {
                let x = random([rows, d_in], 2 + rows as u64);
                let fast = product(&x, &w);
                let fast = fast.unwrap_or_else(|| unreachable!("{rows}x{d_in}x{d_out}"));
                let reference = x.matmul(w.clone());
                let diff = largest_difference(fast, reference);
                assert!(diff < 1e-4, "{rows}x{d_in}x{d_out}: {diff}");
            }
        }
    }

    #[test]
    fn views_with_offsets_and_row_strides_are_read_where_they_lie() {
        // Rows 3..7 of a wider activation, columns 100..340 of a weight.
        let x = random([10, 300], 3).narrow(0, 3, 4).narrow(1, 20, 256);
        let w = random([704, 256], 4).narrow(0, 100, 240).transpose();
        let fast = product(&x, &w).unwrap_or_else(|| unreachable!("views take the fast path"));
        assert_eq!(fast.dims(), [4, 240]);
        assert!(largest_difference(fast, x.matmul(w)) < 1e-4);
    }

    #[test]
    fn other_layouts_many_rows_and_autodiff_take_burns_product() {
        let contiguous = random([256, 64], 5);
        assert!(product(&random([4, 256], 6), &contiguous).is_none());
        let stored = random([64, 256], 7).transpose();
        assert!(product(&random([MAX_ROWS + 1, 256], 8), &stored).is_none());
        let transposed_rows = random([256, 4], 9).transpose();
        assert!(product(&transposed_rows, &stored).is_none());

        let device = Default::default();
        let x = Tensor::<CpuAutodiff, 2>::ones([2, 8], &device).require_grad();
        let w = Tensor::<CpuAutodiff, 2>::ones([3, 8], &device).transpose();
        assert!(product(&x, &w).is_none());
        let y = matmul(x.clone(), w).sum();
        let grad = y.backward();
        let dx = x
            .grad(&grad)
            .and_then(|g| g.into_data().to_vec::<f32>().ok());
        assert_eq!(dx, Some(vec![3.0; 16]));
    }
}
