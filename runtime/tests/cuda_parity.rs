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
    let worst = common::qwen2_5_vl::check_logits::<Cuda>(&device, 1e-4);
    println!("qwen2_5_vl: largest |Δlogit| on cuda: {worst:e}");
    common::qwen2_5_vl::check_greedy::<Cuda>(&device);
}

/// A task that reports the backend it ran on.
struct Where;

impl safer_runtime::device::BackendTask for Where {
    type Output = &'static str;
    fn run<B: safer_runtime::burn::tensor::backend::Backend>(
        self,
        _device: B::Device,
        name: &'static str,
    ) -> &'static str {
        name
    }
}

/// On a machine without an NVIDIA driver or GPU (CI sets
/// `SAFERC_EXPECT_NO_CUDA=1`), `--device cuda` is an error naming the device
/// and `auto` falls back to the CPU, with no panic; with a GPU both run on it.
#[test]
fn cuda_without_a_gpu_is_an_error_and_auto_falls_back_to_the_cpu() {
    use safer_runtime::device::{dispatch, probe, DeviceChoice};
    let expect_none = std::env::var("SAFERC_EXPECT_NO_CUDA").is_ok_and(|v| v == "1");
    match probe(DeviceChoice::Cuda) {
        Err(reason) => {
            let err = dispatch(DeviceChoice::Cuda, Where)
                .expect_err("no GPU")
                .to_string();
            println!("{err}");
            assert!(err.starts_with(&reason), "{err}");
            assert!(
                err.contains("device `cuda` is built into this saferc but cannot start here"),
                "{err}"
            );
            assert!(
                err.contains("pick another with --device (this saferc has cpu"),
                "{err}"
            );
            // The cause (the backend's own panic, on its thread), not the
            // channel error the calling thread sees.
            assert!(!err.contains("RecvError"), "{err}");
            assert_eq!(dispatch(DeviceChoice::Auto, Where).expect("auto"), "cpu");
        }
        Ok(()) => {
            assert!(
                !expect_none,
                "SAFERC_EXPECT_NO_CUDA=1, yet a CUDA device answered"
            );
            assert_eq!(dispatch(DeviceChoice::Cuda, Where).expect("cuda"), "cuda");
            assert_eq!(dispatch(DeviceChoice::Auto, Where).expect("auto"), "cuda");
        }
    }
}
