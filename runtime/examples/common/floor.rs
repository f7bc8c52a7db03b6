//! What the floor examples (`decode_floor`, `grpo_floor`) share: the
//! decoder's linear layers' weights, `[d_in, d_out]` each, in the order a
//! forward runs them (per layer q, k, v, o, gate, up, down), the output head
//! last (the untied head, or the embeddings transposed); a decode step's
//! products as `saferc generate` runs them (one shard of rows per worker
//! thread through `few_rows::matmul`); and the median time of a closure.

use std::ops::Range;
use std::time::Instant;

use burn::nn::Linear;
use burn::tensor::{Distribution, Tensor};
use rayon::prelude::*;
use safer_runtime::model::few_rows;
use safer_runtime::model::Model;
use safer_runtime::CpuBackend as B;

/// Every linear weight of `model`'s decoder and its output head, in order.
pub fn linear_weights(model: &Model<B>) -> Vec<Tensor<B, 2>> {
    let weight = |l: &Linear<B>| l.weight.val();
    let mut all = Vec::new();
    for layer in &model.text.layers {
        let (a, m) = (&layer.self_attn, &layer.mlp);
        for l in [&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj] {
            all.push(weight(l));
        }
        for l in [&m.gate_proj, &m.up_proj, &m.down_proj] {
            all.push(weight(l));
        }
    }
    all.push(match &model.text.lm_head {
        Some(head) => weight(head),
        None => model.text.embed_tokens.weight.val().transpose(),
    });
    all
}

/// Random inputs of a decode step: for each shard of rows, one `[rows,
/// d_in]` input per weight.
pub fn shard_inputs(weights: &[Tensor<B, 2>], shards: &[Range<usize>]) -> Vec<Vec<Tensor<B, 2>>> {
    shards
        .iter()
        .map(|rows| {
            weights
                .iter()
                .map(|w| {
                    let dims = [rows.len(), w.dims()[0]];
                    Tensor::random(dims, Distribution::Default, &w.device())
                })
                .collect()
        })
        .collect()
}

/// One decode step's products: each shard's inputs times every weight, the
/// shards on the worker threads.
pub fn decode_products(inputs: &[Vec<Tensor<B, 2>>], weights: &[Tensor<B, 2>]) {
    inputs.par_iter().for_each(|xs| {
        for (x, w) in xs.iter().zip(weights) {
            std::hint::black_box(few_rows::matmul(x.clone(), w.clone()));
        }
    });
}

/// Seconds of `f`: the median of `runs` runs after `warm_ups` unmeasured ones.
pub fn median_seconds(warm_ups: usize, runs: usize, mut f: impl FnMut()) -> f64 {
    (0..warm_ups).for_each(|_| f());
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}
