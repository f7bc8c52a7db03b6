//! The saferc runtime.
//!
//! Today it holds the GRPO engine ([`grpo`]): advantages, KL estimators,
//! clipped policy losses, aggregation modes, dynamic sampling, the cost
//! constraint and learning-rate schedules, on burn tensors (and autodiff),
//! independent of the models and of the compiler. Models, generation and the
//! executor come with the model-core and run issues.
//!
//! The default backend is burn's pure-Rust `flex` CPU backend
//! ([`CpuBackend`]); training uses [`CpuAutodiff`].

pub mod device;
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
