//! The saferc runtime: everything `saferc run` and `saferc generate`
//! execute, on burn.
//!
//! - [`model`]: `qwen2` loaded from Hugging Face directories and the
//!   built-in `tiny_vlm` (vision tower + decoder), with the CPU fast paths
//!   for inference and training;
//! - [`text`]: tokenizers and chat templates; [`images`]: image loading and
//!   patching;
//! - [`generate`]: batched sampling with a KV cache, and the log-probs and
//!   entropies of given sequences for training;
//! - [`grpo`]: the GRPO engine (advantages, KL estimators, clipped losses,
//!   aggregation, dynamic sampling, the cost constraint, schedules),
//!   independent of the models;
//! - [`exec`]: the executor of a compiled plan (data, judges, rubrics,
//!   reflection, SFT and GRPO stages, run directories, checkpoints);
//! - [`adamw`]: the trainers' optimiser, burn's AdamW fused into one pass
//!   per parameter on the CPU backend;
//! - [`device`]: the backend chosen at run time; [`durable`]: files and
//!   checkpoint folders written to survive a crash or a power cut.
//!
//! The default backend is burn's pure-Rust `flex` CPU backend
//! ([`CpuBackend`]); training uses [`CpuAutodiff`].

/// Writes a line to standard error as `eprintln!` does, but never panics:
/// a run whose standard error is closed under it (`saferc run ... 2>&1 |
/// head`) goes on and saves its work, where `eprintln!` would end it
/// mid-step with a panic. Every message of the runtime goes through it.
#[macro_export]
macro_rules! stderr_line {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod adamw;
pub mod device;
pub mod durable;
pub mod exec;
pub mod generate;
pub mod grpo;

/// burn, re-exported so that callers name the same version.
pub use burn;
pub mod images;
pub mod model;
pub mod text;

/// The default CPU backend.
pub type CpuBackend = burn::backend::Flex;

/// The default CPU backend with automatic differentiation.
pub type CpuAutodiff = burn::backend::Autodiff<burn::backend::Flex>;
