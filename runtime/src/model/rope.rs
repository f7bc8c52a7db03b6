//! Rotary position embeddings in the Hugging Face Qwen/Llama convention.
//!
//! `inv_freq[i] = 1 / theta^(2i / head_dim)` (f32, as transformers computes
//! it), angles `position * inv_freq` duplicated to the full head width
//! (`cat(freqs, freqs)`), and `x * cos + rotate_half(x) * sin` with
//! `rotate_half(x) = cat(-x[half..], x[..half])`. burn's own rotary module
//! pairs neighbouring dimensions instead, so it would need permuted weights;
//! this form loads Hugging Face weights as they are.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// The rotary tables of one head width and base.
#[derive(Clone, Debug)]
pub struct Rope {
    inv_freq: Vec<f32>,
    head_dim: usize,
}

/// `cos` and `sin` for one head count, each `[batch, seq, heads, head_dim]`:
/// full width and in the projection's own layout, so applying them is a
/// contiguous element-wise product (no broadcasting, no transposed views).
pub struct RopeTable<B: Backend> {
    /// Cosines `[batch, seq, heads, head_dim]`.
    pub cos: Tensor<B, 4>,
    /// Sines `[batch, seq, heads, head_dim]`.
    pub sin: Tensor<B, 4>,
}

/// The tables of one forward call: for the query heads and the key heads.
pub struct RopeTables<B: Backend> {
    /// For queries.
    pub q: RopeTable<B>,
    /// For keys (the same values, `kv_heads` wide).
    pub k: RopeTable<B>,
}

impl Rope {
    /// Tables for heads of width `head_dim` (even) and base `theta`.
    pub fn new(head_dim: usize, theta: f64) -> Self {
        let half = head_dim / 2;
        let inv_freq = (0..half)
            .map(|i| {
                let exponent = (2 * i) as f32 / head_dim as f32;
                1.0 / (theta as f32).powf(exponent)
            })
            .collect();
        Self { inv_freq, head_dim }
    }

    /// Appends the `head_dim / 2` cosines and sines of `position` (the first
    /// half of a full-width row; the second half repeats it).
    pub fn push_half(&self, position: i64, cos: &mut Vec<f32>, sin: &mut Vec<f32>) {
        for &freq in &self.inv_freq {
            let angle = (position as f32 * freq) as f64;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }

    /// The tables for `positions` (row-major `[batch, seq]`), for `heads`
    /// query heads and `kv_heads` key heads.
    pub fn tables<B: Backend>(
        &self,
        positions: &[i64],
        batch: usize,
        seq: usize,
        heads: usize,
        kv_heads: usize,
        device: &B::Device,
    ) -> RopeTables<B> {
        let half = self.head_dim / 2;
        let mut cos = Vec::with_capacity(positions.len() * self.head_dim);
        let mut sin = Vec::with_capacity(positions.len() * self.head_dim);
        for &position in positions {
            let start = cos.len();
            self.push_half(position, &mut cos, &mut sin);
            cos.extend_from_within(start..start + half);
            sin.extend_from_within(start..start + half);
        }
        let table = |count: usize| RopeTable {
            cos: repeat_heads(&cos, count, [batch, seq, count, self.head_dim], device),
            sin: repeat_heads(&sin, count, [batch, seq, count, self.head_dim], device),
        };
        RopeTables {
            q: table(heads),
            k: table(kv_heads),
        }
    }
}

/// Rows of `head_dim` values, each repeated `count` times, as a tensor of `shape`.
fn repeat_heads<B: Backend>(
    rows: &[f32],
    count: usize,
    shape: [usize; 4],
    device: &B::Device,
) -> Tensor<B, 4> {
    let width = shape[3];
    let mut values = Vec::with_capacity(rows.len() * count);
    for row in rows.chunks_exact(width) {
        for _ in 0..count {
            values.extend_from_slice(row);
        }
    }
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Rotates `x`: `[batch, seq, heads, head_dim]` by a table of the same shape.
pub fn apply_rotary<B: Backend>(x: Tensor<B, 4>, tables: &RopeTable<B>) -> Tensor<B, 4> {
    let head_dim = x.dims()[3];
    let half = head_dim / 2;
    let first = x.clone().narrow(3, 0, half);
    let second = x.clone().narrow(3, half, half);
    let rotated = Tensor::cat(vec![second.neg(), first], 3);
    x * tables.cos.clone() + rotated * tables.sin.clone()
}
