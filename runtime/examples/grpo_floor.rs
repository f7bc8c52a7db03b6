//! The floor under a GRPO step on the CPU: the time of its linear products
//! alone, through the kernels saferc runs them with, nothing else (no
//! attention, norms, softmax, sampling, optimiser). The same work as the
//! peer's `trl_grpo_step.py floor`, which times it with torch's kernels;
//! `grpo_step_vs_trl.sh` prints both as bounds on the step.
//!
//! ```sh
//! cargo run --release -p safer-runtime --example grpo_floor -- DIR PROMPT_TOKENS
//! ```
//!
//! `PROMPT_TOKENS` is the step's prompt tokens, every prompt once (the peer
//! script prints it). The step is 4 prompts × 4 completions of 32 tokens:
//! - generation: the prompts' prefill, then 31 decode steps of 16 rows, in
//!   one shard of rows per worker thread through `few_rows::matmul`, as
//!   `saferc generate` decodes;
//! - reference: a forward over the prompt tokens and every completion token
//!   but the last, each product `few_rows::parallel_product_into` as the
//!   fused passes run it;
//! - update: that forward again and its backward's two products per weight
//!   (input gradient `dY·Wᵀ`, weight gradient `Xᵀ·dY`).
//!
//! Prints one JSON line: seconds per phase (median of 5 runs after one
//! warm-up) and in all.

use std::time::Instant;

use burn::tensor::{Distribution, Tensor};
use rayon::prelude::*;
use safer_runtime::generate::shard_bounds;
use safer_runtime::model::few_rows::{self, Matrix};
use safer_runtime::model::{Model, ModelError};
use safer_runtime::CpuBackend as B;

mod common;
#[path = "common/linear_weights.rs"]
mod linear_weights;
use common::Args;
use linear_weights::linear_weights;

const PROMPTS: usize = 4;
const GROUP: usize = 4;
const NEW_TOKENS: usize = 32;

/// `weights` as row-major `[d_in, d_out]` values with their sizes.
fn as_vectors(weights: &[Tensor<B, 2>]) -> Vec<(Vec<f32>, usize, usize)> {
    weights
        .iter()
        .map(|w| {
            let [d_in, d_out] = w.dims();
            let values = w.clone().into_data().into_vec::<f32>().unwrap_or_default();
            (values, d_in, d_out)
        })
        .collect()
}

/// Seconds of `f`: the median of 5 runs after one warm-up.
fn median_seconds(f: impl Fn()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn ramp(len: usize) -> Vec<f32> {
    (0..len).map(|i| ((i % 97) as f32 - 48.0) / 97.0).collect()
}

fn main() -> Result<(), ModelError> {
    let args = Args::from_env();
    let dir = args.model_dir();
    let prompt_tokens = args.number(2, 219);
    let device = Default::default();
    let model = Model::<B>::load(&dir, &device)?.with_decoding_layout();
    let samples = PROMPTS * GROUP;
    let scored = prompt_tokens + samples * (NEW_TOKENS - 1);
    let widest = 2048;

    // Decode steps: the products on burn tensors in the decoding layout,
    // one shard of rows per thread, as generation runs them.
    let decode_weights = linear_weights(&model);
    let shard_inputs: Vec<Vec<Tensor<B, 2>>> = shard_bounds::<B>(samples)
        .iter()
        .map(|rows| {
            decode_weights
                .iter()
                .map(|w| Tensor::random([rows.len(), w.dims()[0]], Distribution::Default, &device))
                .collect()
        })
        .collect();
    let weights = as_vectors(&decode_weights);
    let x = ramp(scored * widest);
    let dy = ramp(scored * widest);
    let out = vec![0.0f32; scored * widest];
    let forward = |out: &mut [f32], rows: usize| {
        for (w, d_in, d_out) in &weights {
            let lhs = Matrix::row_major(&x, rows, *d_in);
            let rhs = Matrix::row_major(w, *d_in, *d_out);
            few_rows::parallel_product_into(out, &lhs, &rhs, false);
        }
    };
    let cell = std::cell::RefCell::new(out);
    let generation = || {
        let mut out = cell.borrow_mut();
        forward(&mut out, prompt_tokens);
        for _ in 0..NEW_TOKENS - 1 {
            shard_inputs.par_iter().for_each(|xs| {
                for (x, w) in xs.iter().zip(&decode_weights) {
                    std::hint::black_box(few_rows::matmul(x.clone(), w.clone()));
                }
            });
        }
    };
    let scoring_forward = || {
        let mut out = cell.borrow_mut();
        forward(&mut out, scored);
    };
    let backward = || {
        let mut out = cell.borrow_mut();
        for (w, d_in, d_out) in &weights {
            // Input gradient [scored, d_in] = dY [scored, d_out] · Wᵀ.
            let grad_out = Matrix::row_major(&dy, scored, *d_out);
            let w_t = Matrix::row_major(w, *d_in, *d_out).transposed();
            few_rows::parallel_product_into(&mut out, &grad_out, &w_t, false);
            // Weight gradient [d_in, d_out] = Xᵀ [d_in, scored] · dY.
            let x_t = Matrix::row_major(&x, scored, *d_in).transposed();
            few_rows::parallel_product_into(&mut out, &x_t, &grad_out, false);
        }
    };
    let phases = [
        ("generation", median_seconds(generation)),
        ("reference", median_seconds(scoring_forward)),
        ("update_forward", median_seconds(scoring_forward)),
        ("update_backward", median_seconds(backward)),
    ];
    let total: f64 = phases.iter().map(|(_, s)| s).sum();
    let seconds = phases
        .iter()
        .map(|(name, s)| format!("\"{name}\": {s:.5}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "{{\"prompt_tokens\": {prompt_tokens}, \"scored_rows\": {scored}, \"threads\": {}, \"seconds\": {{{seconds}}}, \"seconds_per_step\": {total:.5}}}",
        rayon::current_num_threads()
    );
    Ok(())
}
