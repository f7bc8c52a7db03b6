//! The position-wise operations of the fused training passes and their
//! backwards, on row-major `f32` vectors: RMSNorm, rotary positions, SwiGLU,
//! biases, softmax, and the linear layers' products through gemm. The fused
//! inference forward ([`super::super::cpu_forward`]) shares `add`, `rotate`
//! and `softmax`.
//!
//! Training runs them over every packed token at once, on the worker
//! threads in blocks of [`ROWS_PER_TASK`] rows (`*_rows` for `add` and
//! `rotate`); run on one thread they took a fifth of a GRPO update on the
//! benchmark model while the other core waited. Each row's values are
//! computed as on one thread; the only sums across rows, RMSNorm's gain
//! gradient, add per-block partial sums in block order, so the result does
//! not depend on the number of threads.

use rayon::prelude::*;

use super::super::few_rows::{parallel_product_into, Matrix};
use super::super::rope::Rope;

/// Rows per task of the position-wise operations on the worker threads.
pub const ROWS_PER_TASK: usize = 16;

/// Values per task of the element-wise operations on the worker threads.
const ELEMENTS_PER_TASK: usize = 1 << 13;

/// `x · w` for `x`: `[rows, d_in]`, `w`: `[d_in, d_out]` → `[rows, d_out]`,
/// plus `bias` (`[d_out]`) on every row when there is one.
pub fn linear(x: &[f32], w: &[f32], bias: Option<&[f32]>, d_in: usize, d_out: usize) -> Vec<f32> {
    let rows = x.len() / d_in;
    let mut y = vec![0f32; rows * d_out];
    parallel_product_into(
        &mut y,
        &Matrix::row_major(x, rows, d_in),
        &Matrix::row_major(w, d_in, d_out),
        false,
    );
    if let Some(bias) = bias {
        for row in y.chunks_exact_mut(d_out) {
            add(row, bias);
        }
    }
    y
}

/// The backward of [`linear`] for the output gradient `dy` (`[rows,
/// d_out]`): writes the input's gradient `dy · wᵀ` to `dx.0` (`[rows,
/// d_in]`), or adds it there when `dx.1`, and returns the weight's gradient `xᵀ · dy` (`[d_in,
/// d_out]`) and the bias's, the column sums of `dy`, when `with_bias`.
pub fn linear_backward(
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    dx: (&mut [f32], bool),
    with_bias: bool,
    d_in: usize,
    d_out: usize,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let rows = x.len() / d_in;
    let (dx, accumulate) = dx;
    parallel_product_into(
        dx,
        &Matrix::row_major(dy, rows, d_out),
        &Matrix::row_major(w, d_in, d_out).transposed(),
        accumulate,
    );
    let mut dw = vec![0f32; d_in * d_out];
    parallel_product_into(
        &mut dw,
        &Matrix::row_major(x, rows, d_in).transposed(),
        &Matrix::row_major(dy, rows, d_out),
        false,
    );
    let db = with_bias.then(|| {
        let mut db = vec![0f32; d_out];
        for row in dy.chunks_exact(d_out) {
            add(&mut db, row);
        }
        db
    });
    (dw, db)
}

/// `x += y`, element by element.
pub fn add(x: &mut [f32], y: &[f32]) {
    for (x, y) in x.iter_mut().zip(y) {
        *x += y;
    }
}

/// [`add`] of `[rows, width]` matrices on the worker threads.
pub fn add_rows(x: &mut [f32], y: &[f32], width: usize) {
    let block = ROWS_PER_TASK * width.max(1);
    x.par_chunks_mut(block)
        .zip(y.par_chunks(block))
        .for_each(|(x, y)| add(x, y));
}

/// RMSNorm of `x` (`[rows, d]`): `x / sqrt(mean(x²) + ε) · γ`, as burn's
/// `RmsNorm`; returns the normed rows and each row's `1 / sqrt(mean(x²) + ε)`.
pub fn rms_norm(x: &[f32], gamma: &[f32], epsilon: f32) -> (Vec<f32>, Vec<f32>) {
    let d = gamma.len();
    let mut y = vec![0f32; x.len()];
    let mut inverse = vec![0f32; x.len() / d];
    y.par_chunks_mut(ROWS_PER_TASK * d)
        .zip(inverse.par_chunks_mut(ROWS_PER_TASK))
        .zip(x.par_chunks(ROWS_PER_TASK * d))
        .for_each(|((y, inverse), x)| {
            let rows = y.chunks_exact_mut(d).zip(inverse).zip(x.chunks_exact(d));
            for ((y, inverse), row) in rows {
                let mean = row.iter().map(|v| v * v).sum::<f32>() / d as f32;
                let rms = (mean + epsilon).sqrt();
                for ((y, v), g) in y.iter_mut().zip(row).zip(gamma) {
                    *y = v / rms * g;
                }
                *inverse = rms.recip();
            }
        });
    (y, inverse)
}

/// The backward of [`rms_norm`]: writes to `dx` the gradient of the input
/// for the output gradient `dy` (adds it there when `accumulate`), and adds
/// to `dgamma` the gain's. With `r` the row's
/// inverse RMS and `g = γ ∘ dy`: `dx = r·g − x·r³/d·Σ g∘x`, `dγ = Σ_rows dy∘x·r`.
pub fn rms_norm_backward(
    dy: &[f32],
    x: &[f32],
    inverse: &[f32],
    gamma: &[f32],
    dx: &mut [f32],
    accumulate: bool,
    dgamma: &mut [f32],
) {
    let d = gamma.len();
    let block = ROWS_PER_TASK * d;
    let partials: Vec<Vec<f32>> = dx
        .par_chunks_mut(block)
        .zip(dy.par_chunks(block))
        .zip(x.par_chunks(block))
        .zip(inverse.par_chunks(ROWS_PER_TASK))
        .map(|(((dx, dy), x), inverse)| {
            let mut partial = vec![0f32; d];
            let rows = dy.chunks_exact(d).zip(x.chunks_exact(d)).zip(inverse);
            for (((dy, x), &r), dx) in rows.zip(dx.chunks_exact_mut(d)) {
                let mut dot = 0f32;
                for ((dy, x), (g, dgamma)) in dy.iter().zip(x).zip(gamma.iter().zip(&mut partial)) {
                    dot += g * dy * x;
                    *dgamma += dy * x * r;
                }
                let c = dot * r * r * r / d as f32;
                for (((dx, dy), x), g) in dx.iter_mut().zip(dy).zip(x).zip(gamma) {
                    let grad = r * g * dy - x * c;
                    *dx = if accumulate { *dx + grad } else { grad };
                }
            }
            partial
        })
        .collect();
    for partial in &partials {
        add(dgamma, partial);
    }
}

/// The cosines and sines of every position's rotary angles, `[N, head_dim
/// / 2]` each.
pub fn rotary_tables(rope: &Rope, positions: &[i64]) -> (Vec<f32>, Vec<f32>) {
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for &p in positions {
        rope.push_half(p, &mut cos, &mut sin);
    }
    (cos, sin)
}

/// Rotates every head of `x` (`[N, heads, head_dim]`) by its row's angles,
/// in the Hugging Face convention (first half against second half):
/// `(a, b) → (a·cos − b·sin, b·cos + a·sin)`; with `inverse`, by the
/// opposite angles, which is the rotation's backward (its transpose).
pub fn rotate(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32], inverse: bool) {
    let half = head_dim / 2;
    let rows = cos.len() / half.max(1);
    if rows == 0 {
        return;
    }
    let per_row = x.len() / rows;
    for ((row, cos), sin) in x
        .chunks_exact_mut(per_row)
        .zip(cos.chunks_exact(half))
        .zip(sin.chunks_exact(half))
    {
        for head in row.chunks_exact_mut(head_dim) {
            let (first, second) = head.split_at_mut(half);
            for (((a, b), &c), &s) in first.iter_mut().zip(second).zip(cos).zip(sin) {
                let s = if inverse { -s } else { s };
                let (x1, x2) = (*a, *b);
                *a = x1 * c - x2 * s;
                *b = x2 * c + x1 * s;
            }
        }
    }
}

/// [`rotate`] of `x` (`[N, heads, head_dim]`, `cos`/`sin` `[N, head_dim /
/// 2]`) on the worker threads.
pub fn rotate_rows(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32], inverse: bool) {
    let half = (head_dim / 2).max(1);
    let rows = cos.len() / half;
    if rows == 0 {
        return;
    }
    let per_row = x.len() / rows;
    x.par_chunks_mut(ROWS_PER_TASK * per_row)
        .zip(cos.par_chunks(ROWS_PER_TASK * half))
        .zip(sin.par_chunks(ROWS_PER_TASK * half))
        .for_each(|((x, cos), sin)| rotate(x, head_dim, cos, sin, inverse));
}

/// `silu(gate) · up`, element by element (SwiGLU), and `σ(gate)`, which
/// its backward reads (one `exp` per element, shared by both).
pub fn swiglu(gate: &[f32], up: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut activation = vec![0f32; gate.len()];
    let mut sigmoid = vec![0f32; gate.len()];
    let block = ELEMENTS_PER_TASK;
    activation
        .par_chunks_mut(block)
        .zip(sigmoid.par_chunks_mut(block))
        .zip(gate.par_chunks(block).zip(up.par_chunks(block)))
        .for_each(|((activation, sigmoid), (gate, up))| {
            let outs = activation.iter_mut().zip(sigmoid);
            for ((a, s), (&g, &u)) in outs.zip(gate.iter().zip(up)) {
                let e = (-g).exp();
                // `g / (1 + e)` as burn's `silu`, not `g · σ(g)`, which rounds differently.
                *a = g / (1.0 + e) * u;
                *s = 1.0 / (1.0 + e);
            }
        });
    (activation, sigmoid)
}

/// The backward of [`swiglu`] for the output gradient `da`: the gradients
/// of `gate` and `up`. `silu'(g) = σ(g)·(1 + g·(1 − σ(g)))`.
pub fn swiglu_backward(
    da: &[f32],
    gate: &[f32],
    up: &[f32],
    sigmoid: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let mut dgate = vec![0f32; da.len()];
    let mut dup = vec![0f32; da.len()];
    let block = ELEMENTS_PER_TASK;
    dgate
        .par_chunks_mut(block)
        .zip(dup.par_chunks_mut(block))
        .zip(da.par_chunks(block).zip(gate.par_chunks(block)))
        .zip(up.par_chunks(block).zip(sigmoid.par_chunks(block)))
        .for_each(|(((dgate, dup), (da, gate)), (up, sigmoid))| {
            let outs = dgate.iter_mut().zip(dup);
            let ins = da.iter().zip(gate).zip(up.iter().zip(sigmoid));
            for ((dg, du), ((&da, &g), (&u, &s))) in outs.zip(ins) {
                *du = da * g * s;
                *dg = da * u * s * (1.0 + g * (1.0 - s));
            }
        });
    (dgate, dup)
}

/// `x` → `exp(x − max) / Σ exp(x − max)`, in place, as burn's `softmax`
/// (scores of `−∞`, hidden keys, get 0; a row needs one finite score).
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for v in x.iter_mut() {
        // Below -104 `exp` is 0 in `f32` (its smallest value is about
        // e^-103.3): hidden keys, whose scores are `f32::MIN`, skip libm's
        // slow underflow path, which sets `errno` for each of them.
        let d = *v - max;
        *v = if d < -104.0 { 0.0 } else { d.exp() };
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i * 31 + seed * 17) % 101) as f32 - 50.0) / 37.0)
            .collect()
    }

    /// `f` on a pool of `threads` worker threads.
    fn on_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build();
        pool.unwrap_or_else(|e| unreachable!("a pool of {threads} threads: {e}"))
            .install(f)
    }

    /// More rows than one task takes, and not a whole number of tasks.
    const ROWS: usize = 3 * ROWS_PER_TASK + 5;

    #[test]
    fn row_operations_on_the_worker_threads_equal_one_row_at_a_time() {
        let d = 8;
        let (x, gamma, dy) = (ramp(ROWS * d, 1), ramp(d, 2), ramp(ROWS * d, 3));
        for threads in [1, 3] {
            let (y, inverse) = on_threads(threads, || rms_norm(&x, &gamma, 1e-6));
            for (r, row) in x.chunks_exact(d).enumerate() {
                let rms = (row.iter().map(|v| v * v).sum::<f32>() / d as f32 + 1e-6).sqrt();
                assert_eq!(inverse[r], rms.recip());
                for j in 0..d {
                    assert_eq!(y[r * d + j], row[j] / rms * gamma[j]);
                }
            }
            let mut rotated = x.clone();
            let (cos, sin) = (ramp(ROWS * 2, 4), ramp(ROWS * 2, 5));
            on_threads(threads, || rotate_rows(&mut rotated, 4, &cos, &sin, true));
            let mut expected = x.clone();
            rotate(&mut expected, 4, &cos, &sin, true);
            assert_eq!(rotated, expected);
            let mut sum = x.clone();
            on_threads(threads, || add_rows(&mut sum, &dy, d));
            let plain: Vec<f32> = x.iter().zip(&dy).map(|(a, b)| a + b).collect();
            assert_eq!(sum, plain);
        }
    }

    #[test]
    fn rms_norm_backward_splits_rows_but_not_its_result_by_threads() {
        let d = 8;
        let (x, gamma, dy) = (ramp(ROWS * d, 1), ramp(d, 2), ramp(ROWS * d, 3));
        let (_, inverse) = rms_norm(&x, &gamma, 1e-6);
        let run = |threads: usize| {
            let (mut dx, mut dgamma) = (vec![0.5f32; ROWS * d], vec![0.25f32; d]);
            on_threads(threads, || {
                rms_norm_backward(&dy, &x, &inverse, &gamma, &mut dx, true, &mut dgamma)
            });
            (dx, dgamma)
        };
        let (dx, dgamma) = run(1);
        assert_eq!(run(3), (dx.clone(), dgamma.clone()));
        // Against the formula, row by row, summed in f64.
        let mut expected_dgamma = vec![0.25f64; d];
        for r in 0..ROWS {
            let (row, g, inv) = (&x[r * d..(r + 1) * d], &dy[r * d..(r + 1) * d], inverse[r]);
            let dot: f32 = (0..d).map(|j| gamma[j] * g[j] * row[j]).sum();
            let c = dot * inv * inv * inv / d as f32;
            for j in 0..d {
                assert_eq!(dx[r * d + j], 0.5 + (inv * gamma[j] * g[j] - row[j] * c));
                expected_dgamma[j] += f64::from(g[j] * row[j] * inv);
            }
        }
        for (got, want) in dgamma.iter().zip(&expected_dgamma) {
            assert!(
                (f64::from(*got) - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{got} vs {want}"
            );
        }
    }

    #[test]
    fn swiglu_and_its_backward_in_tasks_equal_the_plain_loops() {
        let len = 2 * ELEMENTS_PER_TASK + 37;
        let (gate, up, da) = (ramp(len, 1), ramp(len, 2), ramp(len, 3));
        let (activation, sigmoid) = on_threads(3, || swiglu(&gate, &up));
        let (dgate, dup) = on_threads(3, || swiglu_backward(&da, &gate, &up, &sigmoid));
        for i in 0..len {
            let (g, u, e) = (gate[i], up[i], (-gate[i]).exp());
            let s = 1.0 / (1.0 + e);
            assert_eq!((activation[i], sigmoid[i]), (g / (1.0 + e) * u, s));
            assert_eq!(dup[i], da[i] * g * s);
            assert_eq!(dgate[i], da[i] * u * s * (1.0 + g * (1.0 - s)));
        }
    }
}
