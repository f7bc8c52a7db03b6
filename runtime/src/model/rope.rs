//! Rotary position embeddings in the Hugging Face Qwen/Llama convention.
//!
//! `inv_freq[i] = 1 / theta^(2i / head_dim)` (f32, as transformers computes
//! it), angles `position * inv_freq` duplicated to the full head width
//! (`cat(freqs, freqs)`), and `x * cos + rotate_half(x) * sin` with
//! `rotate_half(x) = cat(-x[half..], x[..half])`. burn's own rotary module
//! pairs neighbouring dimensions instead, so it would need permuted weights;
//! this form loads Hugging Face weights as they are.
//!
//! Qwen2.5-VL's multimodal rotary (M-RoPE) splits the `head_dim / 2`
//! frequencies into three sections (`mrope_section`) turned by a token's
//! temporal, height and width positions; a text token has all three equal,
//! which is the plain rotary above.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::decoder::Layout;

/// The rotary tables of one head width and base.
#[derive(Clone, Debug)]
pub struct Rope {
    inv_freq: Vec<f32>,
    head_dim: usize,
    /// M-RoPE: how many frequencies the temporal, height and width
    /// positions turn, in that order (summing to `head_dim / 2`).
    sections: Option<[usize; 3]>,
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
        Self {
            inv_freq,
            head_dim,
            sections: None,
        }
    }

    /// The same tables with M-RoPE sections (`mrope_section` in
    /// `config.json`), which must sum to `head_dim / 2`.
    pub fn with_sections(self, sections: Option<[usize; 3]>) -> Self {
        Self { sections, ..self }
    }

    /// Appends the half-width cosines and sines of a token at 3-D position
    /// `[t, h, w]`: frequency `i` turns with the position of its section.
    /// Without sections, the temporal position turns every frequency.
    pub fn push_half_3d(&self, position: [i64; 3], cos: &mut Vec<f32>, sin: &mut Vec<f32>) {
        let Some([t, h, _]) = self.sections else {
            return self.push_half(position[0], cos, sin);
        };
        for (i, &freq) in self.inv_freq.iter().enumerate() {
            let axis = if i < t {
                0
            } else if i < t + h {
                1
            } else {
                2
            };
            let angle = (position[axis] as f32 * freq) as f64;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }

    /// Appends the half-width angles of every token of `layout`, row-major:
    /// its 3-D M-RoPE positions when it has them, else its positions.
    pub fn push_layout(&self, layout: &Layout, cos: &mut Vec<f32>, sin: &mut Vec<f32>) {
        match &layout.mrope {
            Some(positions) => {
                for &p in positions {
                    self.push_half_3d(p, cos, sin);
                }
            }
            None => {
                for &p in &layout.positions {
                    self.push_half(p, cos, sin);
                }
            }
        }
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

    /// The tables for the tokens of `layout` (row-major `[batch, seq]`),
    /// for `heads` query heads and `kv_heads` key heads.
    pub fn tables<B: Backend>(
        &self,
        layout: &Layout,
        heads: usize,
        kv_heads: usize,
        device: &B::Device,
    ) -> RopeTables<B> {
        let (batch, seq) = (layout.batch, layout.seq);
        let (mut half_cos, mut half_sin) = (Vec::new(), Vec::new());
        self.push_layout(layout, &mut half_cos, &mut half_sin);
        let (cos, sin) = (
            full_width(&half_cos, self.head_dim),
            full_width(&half_sin, self.head_dim),
        );
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

/// Half-width rows (`head_dim / 2` values each) repeated to full width
/// (`cat(half, half)`).
pub fn full_width(half: &[f32], head_dim: usize) -> Vec<f32> {
    let mut full = Vec::with_capacity(half.len() * 2);
    for row in half.chunks_exact((head_dim / 2).max(1)) {
        full.extend_from_slice(row);
        full.extend_from_slice(row);
    }
    full
}

/// Rows of `head_dim` values, each repeated `count` times, as a tensor of `shape`.
pub fn repeat_heads<B: Backend>(
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
