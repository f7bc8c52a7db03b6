//! Matrix products on the CPU through gemm, called directly: a decode
//! step's linear layers, the products of the fused CPU forward
//! ([`super::cpu_forward`]), and those of the fused training passes
//! ([`super::cpu_train`]: [`product_into`] and [`parallel_product_into`]
//! on [`Matrix`] views with any strides, such as a transposed operand).
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
//! The fused forward works on plain slices: [`StoredWeight::apply`] for its
//! projections, [`dot_products`] and [`weighted_sums_into`] for attention's
//! scores and weighted sums over a head's keys and values where they lie
//! ([`Vectors`]). Products of at most [`MAX_ROWS`] rows take the horizontal
//! kernels in column blocks, larger ones one gemm call on its packed kernels,
//! on the calling thread (the fused forward runs parts of a long prompt on
//! the worker threads itself). Every call goes through `gemm_into`, the crate's
//! one `unsafe` call, which checks the bounds of its operands and
//! destination first.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_flex::FlexTensor;

use super::on_cpu::{flex_f32, from_cpu};

/// Products with more rows than this take gemm's packed kernels: they use
/// most of their rows from here on.
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
    let x_vectors = Vectors::rows_of(&x, rows, d_in)?;
    let out = w.times(&x_vectors);
    let y = FlexTensor::from_data(TensorData::new(out, [rows, w.d_out]));
    from_cpu(Tensor::from_primitive(TensorPrimitive::Float(y)))
}

/// A weight `[d_in, d_out]` on the CPU backend, checked once and then
/// applied to rows given as plain slices (the fused forward). It views
/// either a stored `[d_out, d_in]` matrix (each output's weights
/// contiguous: the decoding layout, which a few rows multiply fastest) or,
/// from [`StoredWeight::of_either`], a row-major `[d_in, d_out]` one (the
/// scoring layout: gemm multiplies many rows by it without repacking it).
pub struct StoredWeight {
    tensor: FlexTensor,
    start: usize,
    /// Between one output's weights and the next's (decoding layout), or
    /// between one input's row and the next's (scoring layout).
    stride: usize,
    d_in: usize,
    d_out: usize,
    inputs_major: bool,
}

impl StoredWeight {
    /// `w` if it is a non-empty `f32` burn-flex tensor in the decoding
    /// layout (a view of a stored `[d_out, d_in]` matrix).
    pub fn of<B: Backend>(w: &Tensor<B, 2>) -> Option<Self> {
        Self::viewing(w, false)
    }

    /// `w` in the decoding layout, or with contiguous rows of `d_out`
    /// values (the scoring layout, as [`super::layers::scoring_layout`]
    /// gives and a training update leaves).
    pub fn of_either<B: Backend>(w: &Tensor<B, 2>) -> Option<Self> {
        Self::viewing(w, false).or_else(|| Self::viewing(w, true))
    }

    /// `w` in the scoring layout (`inputs_major`) or the decoding one.
    fn viewing<B: Backend>(w: &Tensor<B, 2>, inputs_major: bool) -> Option<Self> {
        let [d_in, d_out] = w.dims();
        if d_in == 0 || d_out == 0 {
            return None;
        }
        let tensor = flex_f32(w)?;
        let Vectors { start, stride, .. } = match inputs_major {
            true => Vectors::rows_of(&tensor, d_in, d_out)?,
            false => Vectors::columns_of(&tensor, d_in, d_out)?,
        };
        Some(Self {
            tensor,
            start,
            stride,
            d_in,
            d_out,
            inputs_major,
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

    /// `x · w` for `x`: contiguous rows of `d_in` values; returns
    /// `[rows, d_out]` row-major.
    ///
    /// # Panics
    /// If `x.len()` is not a multiple of `d_in` (callers size `x` from the
    /// weight they multiply by).
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        assert!(
            x.len().is_multiple_of(self.d_in),
            "rows of {} values",
            self.d_in
        );
        let rows = x.len() / self.d_in;
        if rows == 0 {
            return Vec::new();
        }
        self.times(&Vectors {
            data: x,
            start: 0,
            stride: self.d_in,
            count: rows,
            len: self.d_in,
        })
    }

    /// `x · w` for `d_in`-long vectors `x`; `[x.count, d_out]` row-major.
    fn times(&self, x: &Vectors<'_>) -> Vec<f32> {
        if self.inputs_major {
            let rhs = Matrix {
                data: self.tensor.storage(),
                start: self.start,
                rows: self.d_in,
                cols: self.d_out,
                row_stride: self.stride,
                col_stride: 1,
            };
            let mut out = vec![0f32; x.count * self.d_out];
            gemm_into(
                &mut out,
                0,
                self.d_out,
                &x.as_rows(),
                &rhs,
                false,
                gemm::Parallelism::None,
            );
            return out;
        }
        let w = Vectors {
            data: self.tensor.storage(),
            start: self.start,
            stride: self.stride,
            count: self.d_out,
            len: self.d_in,
        };
        dot_products(x, &w)
    }
}

/// `count` vectors of `len` contiguous values in `data`, the first at
/// `start` and each `stride` after the previous: the rows of an activation,
/// the stored rows (output columns) of a weight, an attention head's keys
/// or values in a cache buffer. Every value it names lies inside `data`
/// (checked when built).
#[derive(Clone, Copy)]
pub struct Vectors<'a> {
    data: &'a [f32],
    start: usize,
    stride: usize,
    count: usize,
    len: usize,
}

impl<'a> Vectors<'a> {
    /// The vectors, or `None` if one of them reaches outside `data` (or
    /// there are none, or they are empty, or they overlap: `stride < len`).
    pub fn new(
        data: &'a [f32],
        start: usize,
        stride: usize,
        count: usize,
        len: usize,
    ) -> Option<Self> {
        if count == 0 || len == 0 || (stride < len && count > 1) {
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

    /// `x`: `[rows, d_in]` with contiguous rows.
    fn rows_of(x: &'a FlexTensor, rows: usize, d_in: usize) -> Option<Self> {
        let strides = x.layout().strides();
        let stride = if rows == 1 { d_in as isize } else { strides[0] };
        Self::of_tensor(x, strides[1], stride, rows, d_in)
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
        Self::of_tensor(w, strides[0], stride, d_out, d_in)
    }

    fn of_tensor(
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
        Self::new(t.storage(), t.layout().start_offset(), stride, count, len)
    }

    /// The vectors as the rows of a `[count, len]` matrix.
    fn as_rows(&self) -> Matrix<'a> {
        Matrix {
            data: self.data,
            start: self.start,
            rows: self.count,
            cols: self.len,
            row_stride: self.stride,
            col_stride: 1,
        }
    }

    /// Vectors `first..first + width` as the columns of a `[len, width]` matrix.
    fn as_columns(&self, first: usize, width: usize) -> Matrix<'a> {
        Matrix {
            data: self.data,
            start: self.start + first * self.stride,
            rows: self.len,
            cols: width,
            row_stride: 1,
            col_stride: self.stride,
        }
    }
}

/// Every vector of `x` dotted with every vector of `y` (of the same
/// length): `[x.count, y.count]` row-major. At most [`MAX_ROWS`] vectors in
/// `x` take gemm's horizontal kernels, in column blocks small enough for
/// them; more take one call on its packed kernels. Always on the calling
/// thread: the fused forward splits its tokens across threads itself.
///
/// # Panics
/// If the vectors differ in length.
pub fn dot_products(x: &Vectors<'_>, y: &Vectors<'_>) -> Vec<f32> {
    assert_eq!(x.len, y.len, "dot products of vectors of one length");
    let (rows, columns) = (x.count, y.count);
    let lhs = x.as_rows();
    let mut out = vec![0f32; rows * columns];
    if rows > MAX_ROWS {
        let rhs = y.as_columns(0, columns);
        gemm_into(
            &mut out,
            0,
            columns,
            &lhs,
            &rhs,
            false,
            gemm::Parallelism::None,
        );
        return out;
    }
    let block = (HORIZONTAL_OUTPUTS / rows).max(1);
    for first in (0..columns).step_by(block) {
        let rhs = y.as_columns(first, block.min(columns - first));
        gemm_into(
            &mut out,
            first,
            columns,
            &lhs,
            &rhs,
            false,
            gemm::Parallelism::None,
        );
    }
    out
}

/// `Σ_t weights[i, t] · values_t` for `weights`: `[rows, values.count]`
/// row-major, written as row `i` at `out[out_start + i·out_stride..]` (`len`
/// values each): attention's weighted sums of an attention head's values,
/// written where the head's context goes.
///
/// # Panics
/// If `weights` is not made of `values.count`-long rows, or the rows do not
/// fit in `out` without overlapping.
pub fn weighted_sums_into(
    out: &mut [f32],
    out_start: usize,
    out_stride: usize,
    weights: &[f32],
    values: &Vectors<'_>,
) {
    let count = values.count;
    assert!(
        weights.len().is_multiple_of(count) && !weights.is_empty(),
        "rows of {count} weights"
    );
    let lhs = Matrix {
        data: weights,
        start: 0,
        rows: weights.len() / count,
        cols: count,
        row_stride: count,
        col_stride: 1,
    };
    gemm_into(
        out,
        out_start,
        out_stride,
        &lhs,
        &values.as_rows(),
        false,
        gemm::Parallelism::None,
    );
}

/// `out = lhs · rhs` (or `out += lhs · rhs` when `accumulate`), `out`
/// row-major `[lhs.rows, rhs.cols]`, on the calling thread.
///
/// # Panics
/// If the inner widths differ, an operand reaches outside its slice, or
/// `out` is shorter than the product.
pub fn product_into(out: &mut [f32], lhs: &Matrix, rhs: &Matrix, accumulate: bool) {
    let n = rhs.cols;
    gemm_into(out, 0, n, lhs, rhs, accumulate, gemm::Parallelism::None);
}

/// [`product_into`] with `lhs`'s rows split into one part per worker
/// thread, each part one gemm call on its thread (the products of training's
/// forward and backward, hundreds of rows each).
///
/// # Panics
/// As [`product_into`].
pub fn parallel_product_into(out: &mut [f32], lhs: &Matrix, rhs: &Matrix, accumulate: bool) {
    use rayon::prelude::*;
    let (m, n) = (lhs.rows, rhs.cols);
    let parts = rayon::current_num_threads().clamp(1, m.max(1));
    if parts == 1 || n == 0 {
        return product_into(out, lhs, rhs, accumulate);
    }
    assert!(
        out.len() >= m * n,
        "a [{m}, {n}] product into {} values",
        out.len()
    );
    let per_part = m.div_ceil(parts);
    out[..m * n]
        .par_chunks_mut(per_part * n)
        .enumerate()
        .for_each(|(part, out)| {
            let first = part * per_part;
            let rows = lhs.rows_in(first..first + out.len() / n);
            product_into(out, &rows, rhs, accumulate);
        });
}

/// A `rows × cols` matrix of `data`: element `(i, j)` at
/// `start + i·row_stride + j·col_stride`. Built unchecked; every product
/// checks that its operands lie inside their slices before it reads them.
#[derive(Clone, Copy)]
pub struct Matrix<'a> {
    data: &'a [f32],
    start: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Matrix<'a> {
    /// The first `rows · cols` values of `data` as a row-major `[rows, cols]`.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            start: 0,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose, reading the same values.
    pub fn transposed(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Rows `range` of the matrix.
    fn rows_in(self, range: std::ops::Range<usize>) -> Self {
        Self {
            start: self.start + range.start * self.row_stride,
            rows: range.len(),
            ..self
        }
    }

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
/// every `i < lhs.rows`, `j < rhs.cols` (added to what is there when
/// `accumulate`): one gemm call.
///
/// # Panics
/// If the inner widths differ, an operand reaches outside its slice, or the
/// destination block does not fit in `out` with rows that do not overlap.
#[allow(unsafe_code)]
fn gemm_into(
    out: &mut [f32],
    out_start: usize,
    out_row_stride: usize,
    lhs: &Matrix,
    rhs: &Matrix,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
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
    // overlapping as `n <= out_row_stride`. `out` is borrowed mutably, so
    // nothing else reads or writes it meanwhile; with `read_dst` (when
    // accumulating) gemm reads the same elements it writes.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr().add(out_start),
            1,
            out_row_stride as isize,
            accumulate,
            lhs.data.as_ptr().add(lhs.start),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr().add(rhs.start),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::backend::Backend;
    use burn::tensor::{Distribution, Tensor};

    use super::{
        dot_products, matmul, parallel_product_into, product, product_into, weighted_sums_into,
        Matrix, Vectors, MAX_ROWS,
    };
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
        // 70 vectors of 32 stored 40 apart from offset 9 (an attention
        // head's keys in a cache buffer with room); queries of 3 rows (the
        // horizontal kernels) and of 40 rows 48 apart (the packed kernels).
        let (len, count, stride, start) = (32, 70, 40, 9);
        let data = ramp(start + (count - 1) * stride + len + 5, 11);
        let keys = Vectors::new(&data, start, stride, count, len);
        let keys = keys.unwrap_or_else(|| unreachable!("the vectors lie inside `data`"));
        let key = |t: usize| &data[start + t * stride..][..len];
        for (rows, row_stride) in [(3, 32), (40, 48)] {
            let x = ramp(rows * row_stride, 7);
            let queries = Vectors::new(&x, 0, row_stride, rows, len);
            let queries = queries.unwrap_or_else(|| unreachable!("{rows} rows fit"));
            let dots = dot_products(&queries, &keys);
            for i in 0..rows {
                let q = &x[i * row_stride..][..len];
                for t in 0..count {
                    let plain: f32 = q.iter().zip(key(t)).map(|(a, b)| a * b).sum();
                    assert!(
                        (dots[i * count + t] - plain).abs() < 1e-4,
                        "{rows}: {i} {t}"
                    );
                }
            }
            // Weighted sums written `row_stride` apart from offset 5.
            let weights = ramp(rows * count, 5);
            let mut out = vec![f32::NAN; 5 + rows * row_stride];
            weighted_sums_into(&mut out, 5, row_stride, &weights, &keys);
            for i in 0..rows {
                for j in 0..len {
                    let plain: f32 = (0..count).map(|t| weights[i * count + t] * key(t)[j]).sum();
                    let sum = out[5 + i * row_stride + j];
                    assert!((sum - plain).abs() < 1e-4, "{rows}: {i} {j}");
                }
            }
        }
        // Vectors reaching past the end, overlapping, or empty.
        assert!(Vectors::new(&data, start + 10, stride, count, len).is_none());
        assert!(Vectors::new(&data, start, stride + 1, count, len).is_none());
        assert!(Vectors::new(&data, start, len - 1, count, len).is_none());
        assert!(Vectors::new(&data, start, stride, 0, len).is_none());
    }

    /// `a · b` by plain loops, for row-major `a`: `[m, k]` and `b`: `[k, n]`
    /// read through `at_a(i, l)` and `at_b(l, j)`.
    fn plain(
        m: usize,
        k: usize,
        n: usize,
        at_a: impl Fn(usize, usize) -> f32,
        at_b: impl Fn(usize, usize) -> f32,
    ) -> Vec<f32> {
        (0..m * n)
            .map(|ij| (0..k).map(|l| at_a(ij / n, l) * at_b(l, ij % n)).sum())
            .collect()
    }

    #[test]
    fn products_of_transposed_views_equal_plain_loops_written_or_added() {
        // Training's shapes in small: `x · w`, `dy · wᵀ` and `xᵀ · dy`, with
        // 37 rows so that the parts of two and three threads are uneven.
        let (rows, d_in, d_out) = (37, 24, 40);
        let x = ramp(rows * d_in, 3);
        let w = ramp(d_in * d_out, 5);
        let dy = ramp(rows * d_out, 7);
        let cases: [(Matrix, Matrix, Vec<f32>); 3] = [
            (
                Matrix::row_major(&x, rows, d_in),
                Matrix::row_major(&w, d_in, d_out),
                plain(
                    rows,
                    d_in,
                    d_out,
                    |i, l| x[i * d_in + l],
                    |l, j| w[l * d_out + j],
                ),
            ),
            (
                Matrix::row_major(&dy, rows, d_out),
                Matrix::row_major(&w, d_in, d_out).transposed(),
                plain(
                    rows,
                    d_out,
                    d_in,
                    |i, l| dy[i * d_out + l],
                    |l, j| w[j * d_out + l],
                ),
            ),
            (
                Matrix::row_major(&x, rows, d_in).transposed(),
                Matrix::row_major(&dy, rows, d_out),
                plain(
                    d_in,
                    rows,
                    d_out,
                    |i, l| x[l * d_in + i],
                    |l, j| dy[l * d_out + j],
                ),
            ),
        ];
        for (lhs, rhs, expected) in &cases {
            let close = |got: &[f32], want: &[f32]| {
                got.iter()
                    .zip(want)
                    .all(|(g, w)| (g - w).abs() <= 1e-3 * w.abs().max(1.0))
            };
            let mut out = vec![f32::NAN; expected.len()];
            product_into(&mut out, lhs, rhs, false);
            assert!(close(&out, expected), "one thread");
            for threads in [2, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build();
                let pool = pool.unwrap_or_else(|e| unreachable!("a pool of {threads}: {e}"));
                let mut out = vec![f32::NAN; expected.len()];
                pool.install(|| parallel_product_into(&mut out, lhs, rhs, false));
                assert!(close(&out, expected), "{threads} threads, written");
                // Added to what is there: twice the product.
                pool.install(|| parallel_product_into(&mut out, lhs, rhs, true));
                let twice: Vec<f32> = expected.iter().map(|v| 2.0 * v).collect();
                assert!(close(&out, &twice), "{threads} threads, added");
            }
        }
    }

    #[test]
    #[should_panic(expected = "out of its operands' bounds")]
    fn a_product_reaching_past_its_operand_is_refused() {
        let x = ramp(6, 1);
        let mut out = vec![0f32; 9];
        // A [3, 3] left operand named in six values; the right one, [3, 2],
        // fits.
        product_into(
            &mut out,
            &Matrix::row_major(&x, 3, 3),
            &Matrix::row_major(&x, 3, 2),
            false,
        );
    }
}
