//! The floor under a decode step on the CPU: the time of its linear
//! products alone (every projection and the output head, the way
//! `saferc generate` runs them: the batch in one shard of rows per worker
//! thread, products through `model::few_rows`), with nothing else: no
//! attention, norms, activations, cache or sampling. `generate_vs_hf.sh`
//! prints it as the bound on generation throughput.
//!
//! ```sh
//! cargo run --release -p safer-runtime --example decode_floor -- DIR [BATCH]
//! ```
//!
//! Prints one JSON line: milliseconds per step (median of 200 steps) and the
//! tokens per second that a generator decoding `BATCH` rows (default 8)
//! cannot exceed, even with its prefill not counted. Also the same products
//! with one row per shard (the shards at once): a quarter of the arithmetic
//! or less, so nearly all of that time is each shard's thread reading every
//! weight from memory. With more rows the reading overlaps the arithmetic,
//! which then sets the pace: splitting each product's weights between the
//! threads (each thread twice the rows, half the weights) halves the reading
//! but not the arithmetic, and measured no faster (runtime/benches/HISTORY.md).

use burn::tensor::Tensor;
use safer_runtime::generate::shard_bounds;
use safer_runtime::model::{Model, ModelError};
use safer_runtime::CpuBackend as B;

mod common;
#[path = "common/floor.rs"]
mod floor;
use common::Args;
use floor::{decode_products, linear_weights, median_seconds, shard_inputs};

fn main() -> Result<(), ModelError> {
    let args = Args::from_env();
    let dir = args.model_dir();
    let batch = args.number(2, 8);
    let device = Default::default();
    let model = Model::<B>::load(&dir, &device)?.with_decoding_layout();
    let weights = linear_weights(&model);
    let shards = shard_bounds::<B>(batch);
    let inputs = shard_inputs(&weights, &shards);
    let products_of = |inputs: &[Vec<Tensor<B, 2>>]| {
        // Milliseconds: the median of 200 steps after 20 warm-up steps.
        1e3 * median_seconds(20, 200, || decode_products(inputs, &weights))
    };
    let ms = products_of(&inputs);
    let one_row: Vec<Vec<Tensor<B, 2>>> = inputs
        .iter()
        .map(|xs| xs.iter().map(|x| x.clone().narrow(0, 0, 1)).collect())
        .collect();
    let one_row_ms = products_of(&one_row);
    let megabytes = weights
        .iter()
        .map(|w| w.shape().num_elements() * 4)
        .sum::<usize>() as f64
        / 1e6;
    println!(
        "{{\"products\": {}, \"batch\": {batch}, \"shards\": {}, \"ms_per_step\": {ms:.4}, \"tokens_per_second_bound\": {:.1}, \"weight_megabytes\": {megabytes:.1}, \"one_row_per_shard_ms_per_step\": {one_row_ms:.4}}}",
        weights.len(),
        shards.len(),
        batch as f64 * 1e3 / ms
    );
    Ok(())
}
