//! KL estimators between the policy and the frozen reference, per token.
//!
//! With δ = log π_ref − log π_θ (Schulman's notation):
//! k1 = −δ, k2 = ½ δ², k3 = e^δ − δ − 1 (GRPO's choice), and the
//! bias-corrected k3 = ρ · k3 with ρ = π_θ / π_old (DeepSeek-V3.2, TRL
//! `use_bias_correction_kl`). Clamps follow the chosen anchor: verl and
//! EasyR1 clamp δ to [−20, 20] and k3 to [−10, 10]; OpenRLHF clamps the
//! final value to [−10, 10]; TRL does not clamp.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// The estimator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Estimator {
    /// log π − log π_ref.
    K1,
    /// ½ (log π − log π_ref)².
    K2,
    /// exp(δ) − δ − 1.
    K3,
    /// ρ · k3.
    K3Corrected,
}

/// Which clamps apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clamp {
    /// No clamp (TRL).
    None,
    /// δ in [−20, 20], k3 in [−10, 10] (verl, EasyR1).
    Verl,
    /// The value in [−10, 10] (OpenRLHF).
    OpenRlhf,
}

/// Per-token KL `[N, T]` from log-probs `[N, T]`.
///
/// `ratio` (π_θ / π_old, `[N, T]`) is needed only for `K3Corrected` and
/// keeps its gradient.
pub fn per_token<B: Backend>(
    estimator: Estimator,
    logp: Tensor<B, 2>,
    ref_logp: Tensor<B, 2>,
    ratio: Option<Tensor<B, 2>>,
    clamp: Clamp,
) -> Tensor<B, 2> {
    let mut delta = ref_logp - logp;
    if clamp == Clamp::Verl {
        delta = delta.clamp(-20.0, 20.0);
    }
    let value = match estimator {
        Estimator::K1 => delta.neg(),
        Estimator::K2 => delta.powi_scalar(2).mul_scalar(0.5),
        Estimator::K3 | Estimator::K3Corrected => {
            let k3 = delta.clone().exp() - delta - 1.0;
            let k3 = if clamp == Clamp::Verl {
                k3.clamp(-10.0, 10.0)
            } else {
                k3
            };
            match (estimator, ratio) {
                (Estimator::K3Corrected, Some(r)) => k3 * r,
                _ => k3,
            }
        }
    };
    if clamp == Clamp::OpenRlhf {
        value.clamp(-10.0, 10.0)
    } else {
        value
    }
}
