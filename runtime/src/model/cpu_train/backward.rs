//! The fused training backward: the gradient of every weight for given
//! gradients of the scored tokens' log-probs (and entropies), from a
//! [`Tape`].

use super::attention;
use rayon::prelude::*;

use super::ops::{
    add, linear_backward, rms_norm_backward, rotate_rows, swiglu_backward, ROWS_PER_TASK,
};
use super::params::{LayerGradients, LinearGradients, LinearWeights};
use super::tape::head;
use super::{Dims, Gradients, Tape, Weights};
use crate::model::few_rows::{parallel_product_into, Matrix};

/// The gradients of `weights` (the weights `tape` was recorded with) for
/// `dlogprobs` (`[M]`, one per scored token) and, when given, `dentropy`
/// (`[M]`).
///
/// For a scored row with log-probabilities `l` (of logits `z / T`),
/// probabilities `p` and entropy `H`: `∂logp_t/∂z_i = (δ_it − p_i) / T` and
/// `∂H/∂z_i = −p_i·(l_i + H) / T`.
pub fn backward(
    tape: &Tape,
    weights: &Weights,
    dlogprobs: &[f32],
    dentropy: Option<&[f32]>,
) -> Gradients {
    let dims = tape.dims;
    let Dims {
        d,
        heads,
        kv_heads,
        head_dim,
        intermediate,
        vocab,
    } = dims;
    let packed = &tape.packed;
    let (n, m) = (packed.tokens.len(), packed.scored.len());
    // The logits' gradient `[M, vocab]`.
    let mut dlogits = vec![0f32; m * vocab];
    let block = ROWS_PER_TASK * vocab;
    dlogits
        .par_chunks_mut(block)
        .zip(tape.log_probabilities.par_chunks(block))
        .enumerate()
        .for_each(|(b, (rows, log_probabilities))| {
            let rows = rows
                .chunks_exact_mut(vocab)
                .zip(log_probabilities.chunks_exact(vocab));
            for (r, (row, l)) in rows.enumerate() {
                let i = b * ROWS_PER_TASK + r;
                let (g, target) = (dlogprobs[i], packed.scored[i].target as usize);
                let (gh, h) = (dentropy.map_or(0.0, |e| e[i]), tape.entropy[i]);
                for (dz, &l) in row.iter_mut().zip(l) {
                    let p = l.exp();
                    *dz = (-g * p - gh * p * (l + h)) / tape.temperature;
                }
                row[target] += g / tape.temperature;
            }
        });
    // Through the head.
    let mut embed = vec![0f32; vocab * d];
    let mut head_grad = None;
    let mut dscored = vec![0f32; m * d];
    if m > 0 {
        let head_matrix = head(weights, dims);
        parallel_product_into(
            &mut dscored,
            &Matrix::row_major(&dlogits, m, vocab),
            &head_matrix.transposed(),
            false,
        );
        let hidden = Matrix::row_major(&tape.scored_hidden, m, d);
        let dlogits = Matrix::row_major(&dlogits, m, vocab);
        if weights.head.is_some() {
            let mut g = vec![0f32; d * vocab];
            parallel_product_into(&mut g, &hidden.transposed(), &dlogits, false);
            head_grad = Some(g);
        } else {
            parallel_product_into(&mut embed, &dlogits.transposed(), &hidden, false);
        }
    }
    // Scored rows' gradients summed per packed row (a prompt's last row is
    // scored once per completion of it). Zeroed by writing, not by a fresh
    // zeroed allocation, since it is added to (see `linear_grad`).
    let mut dnormed = Vec::with_capacity(n * d);
    dnormed.resize(n * d, 0f32);
    for (s, g) in packed.scored.iter().zip(dscored.chunks_exact(d)) {
        add(&mut dnormed[s.row * d..(s.row + 1) * d], g);
    }
    let mut norm = vec![0f32; d];
    let mut dx = vec![0f32; n * d];
    rms_norm_backward(
        &dnormed,
        &tape.last,
        &tape.last_inverse_rms,
        &weights.norm,
        &mut dx,
        false,
        &mut norm,
    );
    let (cos, sin) = &tape.rotary;
    let mut layers = Vec::with_capacity(weights.layers.len());
    for (w, t) in weights.layers.iter().zip(&tape.layers).rev() {
        // The MLP.
        let mut dactivation = vec![0f32; n * intermediate];
        let down = linear_grad(
            &dx,
            &t.activation,
            &w.down,
            (&mut dactivation, false),
            intermediate,
            d,
        );
        let (dgate, dup) = swiglu_backward(&dactivation, &t.gate, &t.up, &t.gate_sigmoid);
        let mut dmid_normed = vec![0f32; n * d];
        let gate = linear_grad(
            &dgate,
            &t.mid_normed,
            &w.gate,
            (&mut dmid_normed, false),
            d,
            intermediate,
        );
        let up = linear_grad(
            &dup,
            &t.mid_normed,
            &w.up,
            (&mut dmid_normed, true),
            d,
            intermediate,
        );
        let mut dmid = dx;
        let mut post_norm = vec![0f32; d];
        rms_norm_backward(
            &dmid_normed,
            &t.mid,
            &t.mid_inverse_rms,
            &w.post_norm,
            &mut dmid,
            true,
            &mut post_norm,
        );
        // Attention.
        let mut dcontext = vec![0f32; n * heads * head_dim];
        let o = linear_grad(
            &dmid,
            &t.context,
            &w.o,
            (&mut dcontext, false),
            heads * head_dim,
            d,
        );
        let [mut dq, mut dk, dv] =
            attention::backward(&dcontext, &t.q, &t.k, &t.v, &t.probabilities, packed, &dims);
        rotate_rows(&mut dq, head_dim, cos, sin, true);
        rotate_rows(&mut dk, head_dim, cos, sin, true);
        let mut dnormed = vec![0f32; n * d];
        let q = linear_grad(
            &dq,
            &t.normed,
            &w.q,
            (&mut dnormed, false),
            d,
            heads * head_dim,
        );
        let k = linear_grad(
            &dk,
            &t.normed,
            &w.k,
            (&mut dnormed, true),
            d,
            kv_heads * head_dim,
        );
        let v = linear_grad(
            &dv,
            &t.normed,
            &w.v,
            (&mut dnormed, true),
            d,
            kv_heads * head_dim,
        );
        let mut input_norm = vec![0f32; d];
        dx = dmid;
        rms_norm_backward(
            &dnormed,
            &t.x,
            &t.x_inverse_rms,
            &w.input_norm,
            &mut dx,
            true,
            &mut input_norm,
        );
        layers.push(LayerGradients {
            input_norm,
            q,
            k,
            v,
            o,
            post_norm,
            gate,
            up,
            down,
        });
    }
    layers.reverse();
    let mut is_given = vec![false; n];
    let mut given = Vec::with_capacity(tape.given_rows.len() * d);
    for &row in &tape.given_rows {
        is_given[row] = true;
        given.extend_from_slice(&dx[row * d..(row + 1) * d]);
    }
    let rows = packed.tokens.iter().zip(dx.chunks_exact(d)).zip(is_given);
    for ((&token, g), _) in rows.filter(|(_, given)| !given) {
        add(&mut embed[token as usize * d..(token as usize + 1) * d], g);
    }
    Gradients {
        embed,
        layers,
        norm,
        head: head_grad,
        given,
    }
}

/// A linear layer's gradients for its output gradient `dy`, its input `x`
/// and weights `w`; writes the input's gradient to `dx.0`, or adds it there
/// when `dx.1`.
///
/// Buffers fresh from the allocator are written first, not added to:
/// reading a page the kernel has not yet given its own memory maps the
/// shared zero page, and the write after it costs a copy-on-write fault
/// and a TLB flush on every core (16% of a GRPO step's samples before).
fn linear_grad(
    dy: &[f32],
    x: &[f32],
    w: &LinearWeights,
    dx: (&mut [f32], bool),
    d_in: usize,
    d_out: usize,
) -> LinearGradients {
    let bias = w.bias.is_some();
    let (weight, bias) = linear_backward(dy, x, &w.weight, dx, bias, d_in, d_out);
    LinearGradients { weight, bias }
}
