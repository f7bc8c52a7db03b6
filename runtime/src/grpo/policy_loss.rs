//! The clipped policy-gradient loss of GRPO and its variants.
//!
//! Per token (TRL `_compute_loss`, verl `compute_policy_loss`):
//! ρ = exp(log π_θ − log π_old) (the log-ratio optionally clamped to ±20, as
//! verl does); with sequence-level importance (GSPO) ρ_i = exp(Σ_t m log ρ /
//! Σ_t m) for every token of completion i;
//! L = max(−Â ρ, −Â clip(ρ, 1 − ε_low, 1 + ε_high)) (clip-higher when
//! ε_high > ε_low); dual-clip caps L at −c·Â where Â < 0;
//! + β·KL (KL in the loss) − c_H·entropy; then [`aggregate`](super::aggregate).

use super::aggregate::{aggregate, Aggregation};
use super::kl::{self, Clamp, Estimator};
use super::{check_finite, check_shape, to_vec, GrpoError};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// Token- or sequence-level importance ratios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Importance {
    /// One ratio per token.
    Token,
    /// One ratio per completion (GSPO).
    Sequence,
}

/// The KL term placed in the loss.
#[derive(Debug, Clone, Copy)]
pub struct KlInLoss {
    /// The estimator.
    pub estimator: Estimator,
    /// Its coefficient β.
    pub beta: f32,
    /// Clamps.
    pub clamp: Clamp,
}

/// Settings of the loss.
#[derive(Debug, Clone, Copy)]
pub struct LossConfig {
    /// ε_low: the ratio is clipped below at 1 − ε_low.
    pub clip_low: f32,
    /// ε_high: the ratio is clipped above at 1 + ε_high.
    pub clip_high: f32,
    /// Dual-clip constant c (> 1), or none.
    pub dual_clip: Option<f32>,
    /// Token or sequence importance.
    pub importance: Importance,
    /// Aggregation.
    pub aggregation: Aggregation,
    /// KL in the loss, or none.
    pub kl: Option<KlInLoss>,
    /// Entropy bonus coefficient.
    pub entropy_coef: f32,
    /// L_max for `SeqSumConst`.
    pub max_completion_length: usize,
    /// Clamp of the log-ratio before `exp` (verl: 20), or none (TRL).
    pub log_ratio_clamp: Option<f32>,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig {
            clip_low: 0.2,
            clip_high: 0.2,
            dual_clip: None,
            importance: Importance::Token,
            aggregation: Aggregation::TokenMean,
            kl: None,
            entropy_coef: 0.0,
            max_completion_length: 1,
            log_ratio_clamp: None,
        }
    }
}

/// The inputs of one (micro-)batch.
#[derive(Debug, Clone)]
pub struct LossInputs<B: Backend> {
    /// log π_θ of the completion tokens, `[N, T]` (with gradient).
    pub logp: Tensor<B, 2>,
    /// log π_old, `[N, T]`; `None` uses `logp` detached (μ = 1).
    pub old_logp: Option<Tensor<B, 2>>,
    /// log π_ref, `[N, T]`, when the KL is in the loss.
    pub ref_logp: Option<Tensor<B, 2>>,
    /// 1 for completion tokens that count, 0 for padding and masked tokens.
    pub mask: Tensor<B, 2>,
    /// Advantages, `[N]`.
    pub advantages: Tensor<B, 1>,
    /// Token entropies, `[N, T]`, when the entropy bonus is on.
    pub entropy: Option<Tensor<B, 2>>,
    /// Global active-token count for `TokenMean` over micro-batches.
    pub normaliser: Option<f32>,
}

/// Statistics of a loss evaluation (logged per step).
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct LossStats {
    /// Fraction of tokens clipped below (ρ < 1 − ε_low with Â < 0).
    pub clip_low_fraction: f32,
    /// Fraction of tokens clipped above (ρ > 1 + ε_high with Â > 0).
    pub clip_high_fraction: f32,
    /// Fraction of tokens capped by dual-clip.
    pub dual_clip_fraction: f32,
    /// Mean, min and max of the importance ratio over active tokens.
    pub ratio_mean: f32,
    /// Smallest ratio.
    pub ratio_min: f32,
    /// Largest ratio.
    pub ratio_max: f32,
    /// Mean KL over active tokens, when the KL is in the loss.
    pub kl_mean: Option<f32>,
    /// Mean entropy over active tokens, when given.
    pub entropy_mean: Option<f32>,
}

/// The loss and what it is made of.
#[derive(Debug, Clone)]
pub struct LossOutput<B: Backend> {
    /// The scalar loss `[1]` (differentiable in `logp`).
    pub loss: Tensor<B, 1>,
    /// The per-token loss `[N, T]` before aggregation.
    pub per_token: Tensor<B, 2>,
    /// The per-token KL `[N, T]`, when the KL is in the loss.
    pub kl: Option<Tensor<B, 2>>,
    /// Statistics.
    pub stats: LossStats,
}

/// Masks out every token of truncated completions (no end-of-sequence), as
/// TRL's `mask_truncated_completions`.
pub fn mask_truncated<B: Backend>(mask: Tensor<B, 2>, truncated: &[bool]) -> Tensor<B, 2> {
    let [n, t] = mask.dims();
    let keep: Vec<f32> = truncated
        .iter()
        .map(|&tr| if tr { 0.0 } else { 1.0 })
        .collect();
    let keep = Tensor::<B, 1>::from_floats(keep.as_slice(), &mask.device())
        .reshape([n, 1])
        .expand([n, t]);
    mask * keep
}

fn masked_mean<B: Backend>(values: Tensor<B, 2>, mask: &Tensor<B, 2>) -> f32 {
    let s = to_vec(&(values * mask.clone()).sum());
    let c = to_vec(&mask.clone().sum());
    s.first().copied().unwrap_or(0.0) / c.first().copied().unwrap_or(0.0).max(1.0)
}

/// Computes the loss.
///
/// # Errors
/// Shape mismatches between the inputs (E0501) and non-finite log-probs or
/// advantages (E0500), naming `step`.
pub fn compute<B: Backend>(
    inputs: &LossInputs<B>,
    cfg: &LossConfig,
    step: u64,
) -> Result<LossOutput<B>, GrpoError> {
    let [n, t] = inputs.logp.dims();
    check_shape(&inputs.mask, [n, t], "completion mask")?;
    check_shape(&inputs.advantages, [n], "advantages")?;
    if let Some(old) = &inputs.old_logp {
        check_shape(old, [n, t], "old log-probs")?;
        check_finite(old, step, "old log-probs")?;
    }
    if let Some(r) = &inputs.ref_logp {
        check_shape(r, [n, t], "reference log-probs")?;
        check_finite(r, step, "reference log-probs")?;
    }
    if let Some(e) = &inputs.entropy {
        check_shape(e, [n, t], "token entropies")?;
    }
    check_finite(&inputs.logp, step, "policy log-probs")?;
    check_finite(&inputs.advantages, step, "advantages")?;
    if cfg.kl.is_some() && inputs.ref_logp.is_none() {
        return Err(GrpoError::Config(
            "the KL is in the loss but no reference log-probs were given".into(),
        ));
    }

    let mask = inputs.mask.clone();
    let logp = inputs.logp.clone();
    let old = inputs
        .old_logp
        .clone()
        .unwrap_or_else(|| logp.clone().detach());
    let mut log_ratio = logp.clone() - old;
    if let Some(c) = cfg.log_ratio_clamp {
        log_ratio = log_ratio.clamp(-c, c);
    }
    let log_w = match cfg.importance {
        Importance::Token => log_ratio,
        Importance::Sequence => {
            let per_seq =
                (log_ratio * mask.clone()).sum_dim(1) / mask.clone().sum_dim(1).clamp_min(1.0);
            per_seq.expand([n, t])
        }
    };
    let ratio = log_w.exp();
    let adv = inputs.advantages.clone().reshape([n, 1]).expand([n, t]);
    let clipped = ratio.clone().clamp(1.0 - cfg.clip_low, 1.0 + cfg.clip_high);
    let pg1 = adv.clone().neg() * ratio.clone();
    let pg2 = adv.clone().neg() * clipped;
    let mut per_token = pg1.max_pair(pg2);
    let negative = adv.clone().lower_elem(0.0);
    let mut dual_fraction = 0.0;
    if let Some(c) = cfg.dual_clip {
        let pg3 = adv.clone().neg().mul_scalar(c);
        let capped = per_token
            .clone()
            .greater(pg3.clone())
            .bool_and(negative.clone());
        dual_fraction = masked_mean(capped.float(), &mask);
        let capped_loss = pg3.min_pair(per_token.clone());
        per_token = per_token.mask_where(negative.clone(), capped_loss);
    }
    let mut kl_tokens = None;
    if let (Some(k), Some(reference)) = (cfg.kl, inputs.ref_logp.clone()) {
        let kl = kl::per_token(
            k.estimator,
            logp.clone(),
            reference,
            Some(ratio.clone()),
            k.clamp,
        );
        per_token = per_token + kl.clone().mul_scalar(k.beta);
        kl_tokens = Some(kl);
    }
    if let (Some(entropy), true) = (&inputs.entropy, cfg.entropy_coef != 0.0) {
        per_token = per_token - entropy.clone().mul_scalar(cfg.entropy_coef);
    }
    let loss = aggregate(
        cfg.aggregation,
        per_token.clone(),
        mask.clone(),
        inputs.normaliser,
        cfg.max_completion_length,
    );

    // Statistics on detached values.
    let r = ratio.clone().detach();
    let low = r
        .clone()
        .lower_elem(1.0 - cfg.clip_low)
        .bool_and(negative.clone());
    let high = r
        .clone()
        .greater_elem(1.0 + cfg.clip_high)
        .bool_and(adv.clone().greater_elem(0.0));
    let ratios = to_vec(&r);
    let weights = to_vec(&mask);
    let active: Vec<f32> = ratios
        .iter()
        .zip(&weights)
        .filter(|(_, m)| **m > 0.0)
        .map(|(r, _)| *r)
        .collect();
    let stats = LossStats {
        clip_low_fraction: masked_mean(low.float(), &mask),
        clip_high_fraction: masked_mean(high.float(), &mask),
        dual_clip_fraction: dual_fraction,
        ratio_mean: masked_mean(r, &mask),
        ratio_min: active.iter().copied().fold(f32::INFINITY, f32::min),
        ratio_max: active.iter().copied().fold(f32::NEG_INFINITY, f32::max),
        kl_mean: kl_tokens
            .as_ref()
            .map(|k| masked_mean(k.clone().detach(), &mask)),
        entropy_mean: inputs
            .entropy
            .as_ref()
            .map(|e| masked_mean(e.clone().detach(), &mask)),
    };
    check_finite(&loss, step, "the loss")?;
    Ok(LossOutput {
        loss,
        per_token,
        kl: kl_tokens,
        stats,
    })
}
