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

/// One token's KL estimate from its log-probs under the policy (`logp`) and
/// the reference (`ref_logp`), without clamps: the value a KL placed in the
/// reward subtracts, where the completion was sampled from the policy being
/// scored (ρ = 1, so `K3Corrected` is `K3`). The same formulas as
/// [`per_token`], in f64.
pub fn token_value(estimator: Estimator, logp: f64, ref_logp: f64) -> f64 {
    let delta = ref_logp - logp;
    match estimator {
        Estimator::K1 => -delta,
        Estimator::K2 => 0.5 * delta * delta,
        Estimator::K3 | Estimator::K3Corrected => delta.exp_m1() - delta,
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use burn::tensor::{Tensor, TensorData};

    use super::{per_token, token_value, Clamp, Estimator};
    use crate::CpuBackend;

    /// The reward's scalar values are the loss's per-token values (ρ = 1).
    #[test]
    fn token_values_are_the_per_token_estimates() {
        let device = Default::default();
        let logp = [-0.5f32, -2.0, -0.1, -3.0];
        let ref_logp = [-0.7f32, -1.0, -0.1, -0.2];
        let tensor = |v: &[f32]| {
            Tensor::<CpuBackend, 2>::from_data(TensorData::new(v.to_vec(), [1, v.len()]), &device)
        };
        for estimator in [
            Estimator::K1,
            Estimator::K2,
            Estimator::K3,
            Estimator::K3Corrected,
        ] {
            let ones = tensor(&[1.0; 4]);
            let want = per_token(
                estimator,
                tensor(&logp),
                tensor(&ref_logp),
                Some(ones),
                Clamp::None,
            )
            .into_data()
            .to_vec::<f32>()
            .unwrap();
            for (t, w) in want.iter().enumerate() {
                let got = token_value(estimator, f64::from(logp[t]), f64::from(ref_logp[t]));
                assert!(
                    (got - f64::from(*w)).abs() < 1e-6,
                    "{estimator:?} token {t}: {got} against {w}"
                );
            }
        }
        // k1 is signed; k2 and k3 are not.
        assert!(token_value(Estimator::K1, -2.0, -1.0) < 0.0);
        assert!(token_value(Estimator::K3, -2.0, -1.0) > 0.0);
    }
}
