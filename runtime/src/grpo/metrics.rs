//! The metrics of one GRPO step, as logged to `metrics.jsonl`: loss, KL,
//! clip fractions, ratio statistics, entropy, advantage statistics, the
//! zero-variance group fraction and the cost multiplier λ.

use super::advantage::Advantages;
use super::policy_loss::LossStats;
use serde::Serialize;

/// Everything logged for a step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepMetrics {
    /// The step.
    pub step: u64,
    /// The aggregated loss.
    pub loss: f32,
    /// Mean per-token KL (when the KL is in the loss).
    pub kl: Option<f32>,
    /// Fraction of tokens clipped below.
    pub clip_low_fraction: f32,
    /// Fraction of tokens clipped above.
    pub clip_high_fraction: f32,
    /// Fraction of tokens capped by dual-clip.
    pub dual_clip_fraction: f32,
    /// Importance ratio: mean, min, max.
    pub ratio_mean: f32,
    /// Smallest ratio.
    pub ratio_min: f32,
    /// Largest ratio.
    pub ratio_max: f32,
    /// Mean token entropy.
    pub entropy: Option<f32>,
    /// Advantages: mean, std, min, max.
    pub advantage_mean: f32,
    /// Standard deviation of the advantages.
    pub advantage_std: f32,
    /// Smallest advantage.
    pub advantage_min: f32,
    /// Largest advantage.
    pub advantage_max: f32,
    /// Mean combined reward.
    pub reward_mean: f32,
    /// Fraction of groups with zero reward variance.
    pub zero_variance_fraction: f32,
    /// The cost multiplier λ, when the constraint is on.
    pub lambda: Option<f32>,
    /// Global gradient norm before clipping.
    pub grad_norm: Option<f32>,
}

impl StepMetrics {
    /// Assembles the metrics of a step.
    pub fn new(
        step: u64,
        loss: f32,
        stats: &LossStats,
        adv: &Advantages,
        lambda: Option<f32>,
        grad_norm: Option<f32>,
    ) -> Self {
        let v: Vec<f64> = adv.values.iter().map(|x| f64::from(*x)).collect();
        let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
        let std = super::advantage::std(&v);
        let reward_mean = adv.rewards.iter().map(|x| f64::from(*x)).sum::<f64>()
            / adv.rewards.len().max(1) as f64;
        StepMetrics {
            step,
            loss,
            kl: stats.kl_mean,
            clip_low_fraction: stats.clip_low_fraction,
            clip_high_fraction: stats.clip_high_fraction,
            dual_clip_fraction: stats.dual_clip_fraction,
            ratio_mean: stats.ratio_mean,
            ratio_min: stats.ratio_min,
            ratio_max: stats.ratio_max,
            entropy: stats.entropy_mean,
            advantage_mean: mean as f32,
            advantage_std: std as f32,
            advantage_min: adv.values.iter().copied().fold(f32::INFINITY, f32::min),
            advantage_max: adv.values.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            reward_mean: reward_mean as f32,
            zero_variance_fraction: adv.zero_variance_fraction(),
            lambda,
            grad_norm,
        }
    }

    /// One JSON line.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
