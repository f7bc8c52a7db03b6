//! The `cuda` backend (feature `cuda`, needs an NVIDIA GPU): the parity
//! fixtures match transformers on the GPU. Without the feature this file
//! compiles to nothing. Run by `runtime/scripts/cuda_check.sh`.

#![cfg(feature = "cuda")]
#![allow(clippy::expect_used, clippy::panic)] // tests stop at the first broken expectation

mod common;

use safer_runtime::burn::backend::Cuda;

#[test]
fn parity_and_generation_on_cuda() {
    let device = Default::default();
    let worst = common::parity::check_logits::<Cuda>(&device, 1e-4);
    println!("largest |Δlogit| on cuda: {worst:e}");
    common::parity::check_greedy::<Cuda>(&device);
}
