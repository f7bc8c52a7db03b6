//! The GRPO engine: the math of one update step.
//!
//! | piece | module | reference |
//! | --- | --- | --- |
//! | group advantages (GRPO, Dr. GRPO, batch std, GDPO) | [`advantage`] | TRL `_generate_and_score_completions` |
//! | KL estimators k1, k2, k3, bias-corrected k3, clamps | [`kl`] | verl `kl_penalty`, TRL `_compute_loss` |
//! | clipped surrogate, clip-higher, dual-clip, GSPO | [`policy_loss`] | TRL `_compute_loss`, verl `compute_policy_loss` |
//! | aggregation (seq-mean-token-mean, token-mean, bnpo, Dr. GRPO) | [`aggregate`] | TRL `loss_type` |
//! | DAPO overlong reward shaping | [`overlong`] | DAPO, verl `DAPORewardManager` |
//! | dynamic sampling | [`dynamic_sampling`] | DAPO, EasyR1 online filtering |
//! | cost constraint with a learned λ | [`cost`] | Safe RLHF PPO-Lag |
//! | learning-rate schedules, global grad-norm clipping | [`schedule`], [`clip`] | |
//! | step metrics (one JSON line per step) | [`metrics`] | |
//!
//! Shapes: per-token tensors are `[N, T]` (N completions, T tokens, padded,
//! with a 0/1 mask); per-completion tensors are `[N]`; completions of one
//! prompt are contiguous, so rewards reshape to `[N / G, G]`.
//! `shared/reference/grpo-frameworks.md` §3 has the formulas; the fixtures in
//! `runtime/fixtures/grpo/` (made by `make_fixtures.py` with PyTorch) prove
//! them.

pub mod advantage;
pub mod aggregate;
pub mod clip;
pub mod cost;
pub mod dynamic_sampling;
pub mod error;
pub mod kl;
pub mod metrics;
pub mod overlong;
pub mod policy_loss;
pub mod schedule;

pub use error::GrpoError;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// Reads a tensor's values as `f32`.
pub fn to_vec<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Vec<f32> {
    t.clone()
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap_or_default()
}

/// Fails with [`GrpoError::NonFinite`] when `t` holds a NaN or an infinity.
///
/// # Errors
/// The first non-finite value, with its index.
pub fn check_finite<B: Backend, const D: usize>(
    t: &Tensor<B, D>,
    step: u64,
    what: &str,
) -> Result<(), GrpoError> {
    let values = to_vec(t);
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(GrpoError::NonFinite {
            step,
            what: what.to_string(),
            index,
            value: values[index],
        }),
        None => Ok(()),
    }
}

/// Fails with [`GrpoError::Shape`] unless `t` has exactly `expected` dims.
///
/// # Errors
/// The mismatch, named by `what`.
pub fn check_shape<B: Backend, const D: usize>(
    t: &Tensor<B, D>,
    expected: [usize; D],
    what: &str,
) -> Result<(), GrpoError> {
    let found = t.dims();
    if found != expected {
        return Err(GrpoError::Shape {
            what: what.to_string(),
            expected: expected.to_vec(),
            found: found.to_vec(),
        });
    }
    Ok(())
}
