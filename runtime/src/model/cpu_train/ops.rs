//! The position-wise operations of the fused training passes and their
//! backwards, on row-major `f32` vectors: RMSNorm, rotary positions, SwiGLU,
//! biases, softmax, and the linear layers' products through gemm. The fused
//! inference forward ([`super::super::cpu_forward`]) shares `add`, `rotate`
//! and `softmax`.

use super::super::few_rows::{parallel_product_into, Matrix};
use super::super::rope::Rope;

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

/// RMSNorm of `x` (`[rows, d]`): `x / sqrt(mean(x²) + ε) · γ`, as burn's
/// `RmsNorm`; returns the normed rows and each row's `1 / sqrt(mean(x²) + ε)`.
pub fn rms_norm(x: &[f32], gamma: &[f32], epsilon: f32) -> (Vec<f32>, Vec<f32>) {
    let d = gamma.len();
    let mut y = Vec::with_capacity(x.len());
    let mut inverse = Vec::with_capacity(x.len() / d);
    for row in x.chunks_exact(d) {
        let mean = row.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let rms = (mean + epsilon).sqrt();
        y.extend(row.iter().zip(gamma).map(|(v, g)| v / rms * g));
        inverse.push(rms.recip());
    }
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
    let rows = dy.chunks_exact(d).zip(x.chunks_exact(d)).zip(inverse);
    for (((dy, x), &r), dx) in rows.zip(dx.chunks_exact_mut(d)) {
        let mut dot = 0f32;
        for ((dy, x), (g, dgamma)) in dy.iter().zip(x).zip(gamma.iter().zip(dgamma.iter_mut())) {
            dot += g * dy * x;
            *dgamma += dy * x * r;
        }
        let c = dot * r * r * r / d as f32;
        for (((dx, dy), x), g) in dx.iter_mut().zip(dy).zip(x).zip(gamma) {
            let grad = r * g * dy - x * c;
            *dx = if accumulate { *dx + grad } else { grad };
        }
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

/// `silu(gate) · up`, element by element (SwiGLU), and `σ(gate)`, which
/// its backward reads (one `exp` per element, shared by both).
pub fn swiglu(gate: &[f32], up: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut activation = Vec::with_capacity(gate.len());
    let mut sigmoid = Vec::with_capacity(gate.len());
    for (&g, &u) in gate.iter().zip(up) {
        let e = (-g).exp();
        // `g / (1 + e)` as burn's `silu`, not `g · σ(g)`, which rounds differently.
        activation.push(g / (1.0 + e) * u);
        sigmoid.push(1.0 / (1.0 + e));
    }
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
    let mut dgate = Vec::with_capacity(da.len());
    let mut dup = Vec::with_capacity(da.len());
    for (((&da, &g), &u), &s) in da.iter().zip(gate).zip(up).zip(sigmoid) {
        dup.push(da * g * s);
        dgate.push(da * u * s * (1.0 + g * (1.0 - s)));
    }
    (dgate, dup)
}

/// `x` → `exp(x − max) / Σ exp(x − max)`, in place, as burn's `softmax`
/// (scores of `−∞`, hidden keys, get 0; a row needs one finite score).
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}
