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

use burn::tensor::Tensor;
use safer_runtime::generate::shard_bounds;
use safer_runtime::model::few_rows::{self, Matrix};
use safer_runtime::model::{Model, ModelError};
use safer_runtime::CpuBackend as B;

mod common;
#[path = "common/floor.rs"]
mod floor;
use common::Args;
use floor::{decode_products, linear_weights, median_seconds, shard_inputs};

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

    // Decode steps: the products on burn tensors in the decoding layout,
    // one shard of rows per thread, as generation runs them.
    let decode_weights = linear_weights(&model);
    let inputs = shard_inputs(&decode_weights, &shard_bounds::<B>(samples));
    let weights = as_vectors(&decode_weights);
    let widest = weights
        .iter()
        .map(|(_, d_in, d_out)| *d_in.max(d_out))
        .max()
        .unwrap_or(0);
    let x = ramp(scored * widest);
    let dy = ramp(scored * widest);
    // Every product's output, overwritten: `[scored, d_out]` or a weight
    // gradient `[d_in, d_out]`, both within `scored × widest`.
    let mut out = vec![0.0f32; scored.max(widest) * widest];
    let forward = |out: &mut [f32], rows: usize| {
        for (w, d_in, d_out) in &weights {
            let lhs = Matrix::row_major(&x, rows, *d_in);
            let rhs = Matrix::row_major(w, *d_in, *d_out);
            few_rows::parallel_product_into(out, &lhs, &rhs, false);
        }
    };
    let backward = |out: &mut [f32]| {
        for (w, d_in, d_out) in &weights {
            // Input gradient [scored, d_in] = dY [scored, d_out] · Wᵀ.
            let grad_out = Matrix::row_major(&dy, scored, *d_out);
            let w_t = Matrix::row_major(w, *d_in, *d_out).transposed();
            few_rows::parallel_product_into(out, &grad_out, &w_t, false);
            // Weight gradient [d_in, d_out] = Xᵀ [d_in, scored] · dY.
            let x_t = Matrix::row_major(&x, scored, *d_in).transposed();
            few_rows::parallel_product_into(out, &x_t, &grad_out, false);
        }
    };
    // Seconds per phase: the median of 5 runs after one warm-up.
    let phases = [
        (
            "generation",
            median_seconds(1, 5, || {
                forward(&mut out, prompt_tokens);
                for _ in 0..NEW_TOKENS - 1 {
                    decode_products(&inputs, &decode_weights);
                }
            }),
        ),
        (
            "reference",
            median_seconds(1, 5, || forward(&mut out, scored)),
        ),
        (
            "update_forward",
            median_seconds(1, 5, || forward(&mut out, scored)),
        ),
        (
            "update_backward",
            median_seconds(1, 5, || backward(&mut out)),
        ),
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
