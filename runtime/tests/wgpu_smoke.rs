//! The `wgpu` backend (feature `wgpu`): the parity fixtures load and match
//! transformers there too, and generation runs. Without the feature this
//! file compiles to nothing, so nothing is counted as passed; with it and no
//! usable adapter, the tests fail. CI runs it on Mesa's software Vulkan
//! driver (lavapipe).

#![cfg(feature = "wgpu")]
#![allow(clippy::expect_used, clippy::panic)] // tests stop at the first broken expectation

mod common;

use safer_runtime::burn::backend::Wgpu;

#[test]
fn parity_and_generation_on_wgpu() {
    let device = Default::default();
    let worst = common::parity::check_logits::<Wgpu>(&device, 1e-4);
    println!("largest |Δlogit| on wgpu: {worst:e}");
    common::parity::check_greedy::<Wgpu>(&device);
    let worst = common::qwen2_5_vl::check_logits::<Wgpu>(&device, 1e-4);
    println!("qwen2_5_vl: largest |Δlogit| on wgpu: {worst:e}");
    common::qwen2_5_vl::check_greedy::<Wgpu>(&device);
}
