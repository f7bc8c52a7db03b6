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
//!
//! The fused decode step ([`super::decode_step`]) uses the same kernels on
//! plain slices: [`StoredWeight::apply`] for its projections, and
//! [`dot_products`] / [`weighted_sums`] for attention's scores and
//! weighted sums over a head's cached keys and values in their buffer.
//! Every call goes through `gemm_into`, the crate's one `unsafe` call,
//! which checks the bounds of its operands and destination first.

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
    if rows == 0 || rows > MAX_ROWS || d_in == 0 || w.dims()[0] != d_in {
        return None;
    }
    let w = StoredWeight::of(w)?;
    let x = flex_f32(x)?;
    let x_operand = Operand::rows_of(&x, rows, d_in)?;
    let out = w.times(&x_operand);
    let y = FlexTensor::from_data(TensorData::new(out, [rows, w.d_out]));
    from_cpu(Tensor::from_primitive(TensorPrimitive::Float(y)))
}

/// A weight `[d_in, d_out]` on the CPU backend that views a stored
/// `[d_out, d_in]` matrix (each output's weights contiguous): the operand of
/// the horizontal kernels, checked once and then applied to rows given as
/// plain slices (the fused decode step, [`super::decode_step`]).
pub struct StoredWeight {
    tensor: FlexTensor,
    start: usize,
    stride: usize,
    d_in: usize,
    d_out: usize,
}

impl StoredWeight {
    /// `w` if it is a non-empty `f32` burn-flex tensor in the stored layout.
    pub fn of<B: Backend>(w: &Tensor<B, 2>) -> Option<Self> {
        let [d_in, d_out] = w.dims();
        if d_in == 0 || d_out == 0 {
            return None;
        }
        let tensor = flex_f32(w)?;
        let Operand { start, stride, .. } = Operand::columns_of(&tensor, d_in, d_out)?;
        Some(Self {
            tensor,
            start,
            stride,
            d_in,
            d_out,
        })
    }

    /// The input width.
    pub fn d_in(&self) -> usize {
        self.d_in
    }

    /// The output width.
    pub fn d_out(&self) -> usize {
        self.d_out
    }

    /// `x · w` for `x`: `rows` contiguous rows of `d_in` values; returns
    /// `[rows, d_out]` row-major.
    ///
    /// # Panics
    /// If `x.len()` is not a multiple of `d_in` (callers size `x` from the
    /// weight they multiply by).
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        assert!(x.len() % self.d_in == 0, "rows of {} values", self.d_in);
        let rows = x.len() / self.d_in;
        if rows == 0 {
            return Vec::new();
        }
        self.times(&Operand {
            data: x,
            start: 0,
            stride: self.d_in,
            count: rows,
            len: self.d_in,
        })
    }

    /// `x · w` for an operand of `d_in`-long rows; `[rows, d_out]` row-major.
    fn times(&self, x: &Operand<'_>) -> Vec<f32> {
        let w = Operand {
            data: self.tensor.storage(),
            start: self.start,
            stride: self.stride,
            count: self.d_out,
            len: self.d_in,
        };
        horizontal_products(x, &w)
    }
}

/// The dot products of `x` (`[rows, len]`, contiguous rows) with `count`
/// vectors of `len` contiguous values in `data`, the first at `start` and
/// each `stride` after the previous (an attention head's cached keys in
/// their buffer): `[rows, count]` row-major, or `None` if those vectors do
/// not lie inside `data` or `x` is not made of `len`-long rows.
pub fn dot_products(
    x: &[f32],
    len: usize,
    data: &[f32],
    start: usize,
    stride: usize,
    count: usize,
) -> Option<Vec<f32>> {
    if len == 0 || x.is_empty() || x.len() % len != 0 {
        return None;
    }
    let x = Operand::checked(x, 0, len, x.len() / len, len)?;
    let vectors = Operand::checked(data, start, stride, count, len)?;
    Some(horizontal_products(&x, &vectors))
}

/// `[x.count, w.count]` row-major: every vector of `x` dotted with every
/// vector of `w`, in column blocks small enough for gemm's horizontal kernels.
fn horizontal_products(x: &Operand<'_>, w: &Operand<'_>) -> Vec<f32> {
    let (rows, d_out) = (x.count, w.count);
    let mut out = vec![0f32; rows * d_out];
    let block = (HORIZONTAL_OUTPUTS / rows).max(1);
    for first in (0..d_out).step_by(block) {
        let width = block.min(d_out - first);
        horizontal_block(&mut out, first, width, x, w);
    }
    out
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
        if element_stride != 1 && len > 1 {
            return None;
        }
        let stride = usize::try_from(vector_stride).ok()?;
        Self::checked(t.storage(), t.layout().start_offset(), stride, count, len)
    }

    /// The operand, if all of its `count` vectors lie inside `data`.
    fn checked(
        data: &'a [f32],
        start: usize,
        stride: usize,
        count: usize,
        len: usize,
    ) -> Option<Self> {
        if count == 0 || stride < len {
            return None;
        }
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
/// row-major, `rows` and `d_out` the vector counts of `x` and `w`) as
/// `x · w` with one gemm call on its horizontal kernels.
fn horizontal_block(out: &mut [f32], first: usize, width: usize, x: &Operand<'_>, w: &Operand<'_>) {
    let lhs = Matrix {
        data: x.data,
        start: x.start,
        rows: x.count,
        cols: x.len,
        row_stride: x.stride,
        col_stride: 1,
    };
    // `w`'s vectors `first..first + width` as the columns of `[d_in, width]`.
    let rhs = Matrix {
        data: w.data,
        start: w.start + first * w.stride,
        rows: w.len,
        cols: width,
        row_stride: 1,
        col_stride: w.stride,
    };
    gemm_into(out, first, w.count, &lhs, &rhs);
}

/// `Σ_t weights[i, t] · vector_t` for `weights`: `[rows, count]` row-major
/// and `count` vectors of `len` contiguous values in `data`, the first at
/// `start` and each `stride` after the previous (attention's weighted sum
/// of an attention head's cached values): `[rows, len]` row-major, or
/// `None` if the vectors do not lie inside `data` or `weights` is not made
/// of `count`-long rows.
pub fn weighted_sums(
    weights: &[f32],
    count: usize,
    data: &[f32],
    start: usize,
    stride: usize,
    len: usize,
) -> Option<Vec<f32>> {
    if count == 0 || weights.is_empty() || weights.len() % count != 0 || len == 0 {
        return None;
    }
    let vectors = Operand::checked(data, start, stride, count, len)?;
    let rows = weights.len() / count;
    let lhs = Matrix {
        data: weights,
        start: 0,
        rows,
        cols: count,
        row_stride: count,
        col_stride: 1,
    };
    let rhs = Matrix {
        data: vectors.data,
        start: vectors.start,
        rows: count,
        cols: len,
        row_stride: vectors.stride,
        col_stride: 1,
    };
    let mut out = vec![0f32; rows * len];
    gemm_into(&mut out, 0, len, &lhs, &rhs);
    Some(out)
}

/// A `rows × cols` matrix of `data`: element `(i, j)` at
/// `start + i·row_stride + j·col_stride`.
struct Matrix<'a> {
    data: &'a [f32],
    start: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl Matrix<'_> {
    /// Whether every element lies inside `data` (non-empty matrices only).
    fn fits(&self) -> bool {
        let last = (self.rows.checked_sub(1))
            .and_then(|r| r.checked_mul(self.row_stride))
            .zip(
                self.cols
                    .checked_sub(1)
                    .and_then(|c| c.checked_mul(self.col_stride)),
            )
            .and_then(|(r, c)| r.checked_add(c)?.checked_add(self.start));
        last.is_some_and(|last| last < self.data.len())
    }
}

/// `out[out_start + i·out_row_stride + j] = Σ_l lhs[i, l] · rhs[l, j]` for
/// every `i < lhs.rows`, `j < rhs.cols`: one gemm call, single-threaded.
///
/// # Panics
/// If the inner widths differ, an operand reaches outside its slice, or the
/// destination block does not fit in `out` with rows that do not overlap.
#[allow(unsafe_code)]
fn gemm_into(out: &mut [f32], out_start: usize, out_row_stride: usize, lhs: &Matrix, rhs: &Matrix) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    let destination = Matrix {
        data: out,
        start: out_start,
        rows: m,
        cols: n,
        row_stride: out_row_stride,
        col_stride: 1,
    };
    assert!(
        k == rhs.rows
            && lhs.fits()
            && rhs.fits()
            && destination.fits()
            && (m == 1 || n <= out_row_stride),
        "a {m}×{k} by {}×{n} product out of its operands' bounds",
        rhs.rows
    );
    // SAFETY: gemm reads `lhs[i, l]` at `lhs.start + i·row_stride +
    // l·col_stride` of `lhs.data` for `i < m`, `l < k`, and `rhs[l, j]` alike
    // for `l < k`, `j < n`; `fits` checked that the last of each lies inside
    // its slice (strides are non-negative, so every other element does
    // too). It writes `dst[i, j]` at `out_start + i·out_row_stride + j` of
    // `out` for `i < m`, `j < n`: inside `out` by the same check, rows not
    // overlapping as `n <= out_row_stride`. `read_dst = false`: `dst` is
    // only written, and `out` is borrowed mutably, so nothing else reads it.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr().add(out_start),
            1,
            out_row_stride as isize,
            false,
            lhs.data.as_ptr().add(lhs.start),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr().add(rhs.start),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
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

    use super::{dot_products, matmul, product, weighted_sums, MAX_ROWS};
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

    /// Values `0, 1, …` scaled into `[-1, 1)`, deterministic.
    fn ramp(len: usize, step: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * step) % 97) as f32 / 48.5 - 1.0)
            .collect()
    }

    #[test]
    fn dot_products_and_weighted_sums_equal_plain_loops_on_strided_vectors() {
        // 3 query rows of 32; 70 vectors of 32 stored 40 apart from offset 9
        // (an attention head's keys in a cache buffer with room).
        let (rows, len, count, stride, start) = (3, 32, 70, 40, 9);
        let x = ramp(rows * len, 7);
        let data = ramp(start + (count - 1) * stride + len + 5, 11);
        let vector = |t: usize| &data[start + t * stride..][..len];
        let dots = dot_products(&x, len, &data, start, stride, count);
        let dots = dots.unwrap_or_else(|| unreachable!("the vectors lie inside `data`"));
        for (i, q) in x.chunks_exact(len).enumerate() {
            for t in 0..count {
                let plain: f32 = q.iter().zip(vector(t)).map(|(a, b)| a * b).sum();
                assert!((dots[i * count + t] - plain).abs() < 1e-4, "{i} {t}");
            }
        }
        let weights = ramp(rows * count, 5);
        let sums = weighted_sums(&weights, count, &data, start, stride, len);
        let sums = sums.unwrap_or_else(|| unreachable!("the vectors lie inside `data`"));
        for i in 0..rows {
            for j in 0..len {
                let plain: f32 = (0..count)
                    .map(|t| weights[i * count + t] * vector(t)[j])
                    .sum();
                assert!((sums[i * len + j] - plain).abs() < 1e-4, "{i} {j}");
            }
        }
        // Vectors reaching past the end, and rows of the wrong width.
        assert!(dot_products(&x, len, &data, start + 10, stride, count).is_none());
        assert!(weighted_sums(&weights, count, &data, start, stride + 1, len).is_none());
        assert!(dot_products(&x[1..], len, &data, start, stride, count).is_none());
        assert!(weighted_sums(&weights[1..], count, &data, start, stride, len).is_none());
    }
}
