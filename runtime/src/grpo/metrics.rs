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
    /// Clip fractions, ratio statistics, KL and entropy of the loss.
    #[serde(flatten)]
    pub loss_stats: LossStats,
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
            loss_stats: *stats,
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
