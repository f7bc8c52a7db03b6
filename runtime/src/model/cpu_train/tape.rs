//! The fused training forward: log-probs and entropies of the scored tokens,
//! keeping every activation the backward ([`super::backward`]) reads.

use super::super::rope::Rope;
use super::attention::{self, Probabilities};
use rayon::prelude::*;

use super::ops::{add_rows, linear, rms_norm, rotary_tables, rotate_rows, swiglu, ROWS_PER_TASK};
use super::{Dims, GivenInputs, Packed, Weights};
use crate::model::few_rows::{parallel_product_into, Matrix};

/// What one block's backward reads (`N` packed tokens).
pub struct LayerTape {
    /// The block's input `[N, d]`.
    pub x: Vec<f32>,
    /// Inverse RMS of each row of `x` `[N]`.
    pub x_inverse_rms: Vec<f32>,
    /// `x` normed `[N, d]`.
    pub normed: Vec<f32>,
    /// Rotated queries `[N, heads, head_dim]`.
    pub q: Vec<f32>,
    /// Rotated keys `[N, kv_heads, head_dim]`.
    pub k: Vec<f32>,
    /// Values `[N, kv_heads, head_dim]`.
    pub v: Vec<f32>,
    /// Attention's probabilities.
    pub probabilities: Probabilities,
    /// Attention's context `[N, heads·head_dim]`.
    pub context: Vec<f32>,
    /// The residual stream after attention `[N, d]`.
    pub mid: Vec<f32>,
    /// Inverse RMS of each row of `mid` `[N]`.
    pub mid_inverse_rms: Vec<f32>,
    /// `mid` normed `[N, d]`.
    pub mid_normed: Vec<f32>,
    /// MLP gate `[N, intermediate]`.
    pub gate: Vec<f32>,
    /// MLP up projection `[N, intermediate]`.
    pub up: Vec<f32>,
    /// `silu(gate)·up` `[N, intermediate]`.
    pub activation: Vec<f32>,
    /// `σ(gate)` `[N, intermediate]`.
    pub gate_sigmoid: Vec<f32>,
}

/// A forward's results and what its backward reads.
pub struct Tape {
    /// The sizes.
    pub dims: Dims,
    /// The input.
    pub packed: Packed,
    /// The packed tokens whose input embeddings were given.
    pub given_rows: Vec<usize>,
    /// Log-prob of each scored token `[M]`.
    pub logprobs: Vec<f32>,
    /// Entropy of each scored token's predicted distribution `[M]`.
    pub entropy: Vec<f32>,
    /// The blocks' tapes, first block first.
    pub layers: Vec<LayerTape>,
    /// The last block's output `[N, d]`.
    pub last: Vec<f32>,
    /// Inverse RMS of each row of `last` `[N]`.
    pub last_inverse_rms: Vec<f32>,
    /// The scored rows' final hidden states `[M, d]`.
    pub scored_hidden: Vec<f32>,
    /// The scored rows' log-probabilities over the vocabulary (of logits
    /// divided by the temperature) `[M, vocab]`.
    pub log_probabilities: Vec<f32>,
    /// The temperature the logits were divided by.
    pub temperature: f32,
    /// Rotary cosines and sines of each token `[N, head_dim / 2]`.
    pub rotary: (Vec<f32>, Vec<f32>),
}

/// The forward over `packed` with `weights` (and `given` input embeddings
/// in place of some tokens'): the scored tokens' log-probs under logits
/// divided by `temperature`, and the tape. `packed` must pass
/// [`Packed::problem`], `given` name distinct rows with `d` values each.
pub fn forward(
    weights: &Weights,
    dims: Dims,
    rope: &Rope,
    packed: Packed,
    given: GivenInputs,
    temperature: f32,
) -> Tape {
    let Dims {
        d,
        heads,
        kv_heads,
        head_dim,
        intermediate,
        vocab,
    } = dims;
    let eps = weights.epsilon;
    let (cos, sin) = rotary_tables(rope, &packed.positions);
    let mut x: Vec<f32> = Vec::with_capacity(packed.tokens.len() * d);
    for &t in &packed.tokens {
        x.extend_from_slice(&weights.embed[t as usize * d..(t as usize + 1) * d]);
    }
    for (&row, values) in given.rows.iter().zip(given.values.chunks_exact(d)) {
        x[row * d..(row + 1) * d].copy_from_slice(values);
    }
    let mut layers = Vec::with_capacity(weights.layers.len());
    for w in &weights.layers {
        let (normed, x_inverse_rms) = rms_norm(&x, &w.input_norm, eps);
        let project = |l: &super::params::LinearWeights, d_out: usize| {
            linear(&normed, &l.weight, l.bias.as_deref(), d, d_out)
        };
        let mut q = project(&w.q, heads * head_dim);
        let mut k = project(&w.k, kv_heads * head_dim);
        let v = project(&w.v, kv_heads * head_dim);
        rotate_rows(&mut q, head_dim, &cos, &sin, false);
        rotate_rows(&mut k, head_dim, &cos, &sin, false);
        let (context, probabilities) = attention::forward(&q, &k, &v, &packed, &dims);
        let mut mid = linear(&context, &w.o.weight, None, heads * head_dim, d);
        add_rows(&mut mid, &x, d);
        let (mid_normed, mid_inverse_rms) = rms_norm(&mid, &w.post_norm, eps);
        let gate = linear(&mid_normed, &w.gate.weight, None, d, intermediate);
        let up = linear(&mid_normed, &w.up.weight, None, d, intermediate);
        let (activation, gate_sigmoid) = swiglu(&gate, &up);
        let mut out = linear(&activation, &w.down.weight, None, intermediate, d);
        add_rows(&mut out, &mid, d);
        layers.push(LayerTape {
            x: std::mem::replace(&mut x, out),
            x_inverse_rms,
            normed,
            q,
            k,
            v,
            probabilities,
            context,
            mid,
            mid_inverse_rms,
            mid_normed,
            gate,
            up,
            activation,
            gate_sigmoid,
        });
    }
    let (normed, last_inverse_rms) = rms_norm(&x, &weights.norm, eps);
    let mut scored_hidden: Vec<f32> = Vec::with_capacity(packed.scored.len() * d);
    for s in &packed.scored {
        scored_hidden.extend_from_slice(&normed[s.row * d..(s.row + 1) * d]);
    }
    let m = packed.scored.len();
    let mut log_probabilities = vec![0f32; m * vocab];
    if m > 0 {
        parallel_product_into(
            &mut log_probabilities,
            &Matrix::row_major(&scored_hidden, m, d),
            &head(weights, dims),
            false,
        );
    }
    let mut logprobs = vec![0f32; m];
    let mut entropy = vec![0f32; m];
    log_probabilities
        .par_chunks_mut(ROWS_PER_TASK * vocab)
        .zip(packed.scored.par_chunks(ROWS_PER_TASK))
        .zip(logprobs.par_chunks_mut(ROWS_PER_TASK))
        .zip(entropy.par_chunks_mut(ROWS_PER_TASK))
        .for_each(|(((rows, scored), logprobs), entropy)| {
            let outs = logprobs.iter_mut().zip(entropy);
            for ((row, s), (logprob, entropy)) in rows.chunks_exact_mut(vocab).zip(scored).zip(outs)
            {
                log_softmax(row, temperature);
                *logprob = row[s.target as usize];
                *entropy = -row.iter().map(|&l| l.exp() * l).sum::<f32>();
            }
        });
    Tape {
        dims,
        packed,
        given_rows: given.rows,
        logprobs,
        entropy,
        layers,
        last: x,
        last_inverse_rms,
        scored_hidden,
        log_probabilities,
        temperature,
        rotary: (cos, sin),
    }
}

/// The LM head as a `[d, vocab]` matrix: the untied head, or the embeddings
/// transposed.
pub fn head<'a>(weights: &'a Weights, dims: Dims) -> Matrix<'a> {
    match &weights.head {
        Some(head) => Matrix::row_major(head, dims.d, dims.vocab),
        None => Matrix::row_major(&weights.embed, dims.vocab, dims.d).transposed(),
    }
}

/// `row / t` → its log-softmax, in place, as burn's `log_softmax` of the
/// logits divided by the temperature.
fn log_softmax(row: &mut [f32], temperature: f32) {
    for v in row.iter_mut() {
        *v /= temperature;
    }
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = row.iter().map(|&v| (v - max).exp()).sum();
    let log_sum = max + sum.ln();
    for v in row.iter_mut() {
        *v -= log_sum;
    }
}
