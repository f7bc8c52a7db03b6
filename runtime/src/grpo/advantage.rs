//! Group advantages.
//!
//! Rewards are scalars per completion, so this module works on host `f64`
//! (exact, like TRL, which computes them on gathered tensors) and hands the
//! result to the loss as a `[N]` tensor.
//!
//! | `Scale` | Â_i | as in |
//! | --- | --- | --- |
//! | `Group` | (r_i − mean_G r) / (std_G r + ε) | GRPO; TRL `scale_rewards="group"` |
//! | `None` | r_i − mean_G r | Dr. GRPO; TRL `scale_rewards="none"` |
//! | `Batch` | (r_i − mean_G r) / (std_batch r + ε) | TRL `scale_rewards="batch"` |
//!
//! std is Bessel-corrected (N − 1) everywhere, as in all four anchors. A group
//! of one completion has mean 0 and std 1 (verl's rule), except under
//! `Batch`, where groups of one take the batch's mean as their baseline
//! (REINFORCE++'s): (r_i − mean_batch r) / (std_batch r + ε), so that the
//! worse half of a batch is pushed down, not every completion up. With several
//! criteria, `SumThenNormalize` combines them with their weights first
//! (NaN, "not applicable", is skipped as in TRL's `nansum`);
//! `NormalizeThenSum` (GDPO) normalises each criterion within its group,
//! sums with the weights, then normalises over the batch.

use super::GrpoError;

/// How advantages are scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Divide by the group's std (GRPO).
    Group,
    /// Do not divide (Dr. GRPO).
    None,
    /// Divide by the std of all rewards of the batch.
    Batch,
}

/// How several criteria are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultiObjective {
    /// Weighted sum of the raw criteria, then normalisation.
    SumThenNormalize,
    /// Normalise each criterion per group, weighted sum, batch normalisation (GDPO).
    NormalizeThenSum,
}

/// Settings of the advantage computation.
#[derive(Debug, Clone, Copy)]
pub struct AdvantageConfig {
    /// Completions per prompt (G).
    pub group_size: usize,
    /// Scaling.
    pub scale: Scale,
    /// Added to the std (TRL 1e-4, verl and EasyR1 1e-6, OpenRLHF 1e-9).
    pub eps: f64,
    /// Combination of several criteria.
    pub multi: MultiObjective,
}

/// The advantages of a batch and their statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct Advantages {
    /// One per completion, `[N]`.
    pub values: Vec<f32>,
    /// The combined reward per completion.
    pub rewards: Vec<f32>,
    /// Groups whose rewards were all equal (no learning signal).
    pub zero_variance_groups: usize,
    /// Groups in the batch.
    pub groups: usize,
}

impl Advantages {
    /// The fraction of groups with zero reward variance (a logged metric).
    pub fn zero_variance_fraction(&self) -> f32 {
        if self.groups == 0 {
            0.0
        } else {
            self.zero_variance_groups as f32 / self.groups as f32
        }
    }
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len().max(1) as f64
}

/// Bessel-corrected standard deviation (0 for fewer than two values).
pub fn std(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return 0.0;
    }
    let m = mean(xs);
    (xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (xs.len() - 1) as f64).sqrt()
}

/// Group mean and std, with verl's rule for groups of one.
fn group_stats(group: &[f64]) -> (f64, f64) {
    if group.len() == 1 {
        (0.0, 1.0)
    } else {
        (mean(group), std(group))
    }
}

/// Checks shapes and finiteness of per-criterion rewards `[K][N]`.
fn validate(
    rewards: &[Vec<f32>],
    names: &[&str],
    weights: &[f32],
    cfg: &AdvantageConfig,
    step: u64,
) -> Result<usize, GrpoError> {
    let n = rewards.first().map_or(0, Vec::len);
    if rewards.len() != weights.len() || names.len() != weights.len() {
        return Err(GrpoError::Shape {
            what: "criterion weights".into(),
            expected: vec![rewards.len()],
            found: vec![weights.len()],
        });
    }
    if cfg.group_size == 0 || !n.is_multiple_of(cfg.group_size) {
        return Err(GrpoError::Shape {
            what: format!("rewards (groups of {})", cfg.group_size),
            expected: vec![(n / cfg.group_size.max(1)).max(1) * cfg.group_size.max(1)],
            found: vec![n],
        });
    }
    for (k, r) in rewards.iter().enumerate() {
        if r.len() != n {
            return Err(GrpoError::Shape {
                what: format!("rewards of criterion `{}`", names[k]),
                expected: vec![n],
                found: vec![r.len()],
            });
        }
        // NaN means "not applicable" (TRL's None); infinities are errors.
        if let Some(index) = r.iter().position(|v| v.is_infinite()) {
            return Err(GrpoError::NonFinite {
                step,
                what: format!("reward criterion `{}`", names[k]),
                index,
                value: r[index],
            });
        }
    }
    Ok(n)
}

/// Computes advantages from per-criterion rewards `rewards[k][i]`.
///
/// # Errors
/// Shape mismatches (E0501), infinite rewards or a completion for which
/// every criterion is NaN (E0500), naming the step and the criterion.
pub fn compute(
    rewards: &[Vec<f32>],
    names: &[&str],
    weights: &[f32],
    cfg: &AdvantageConfig,
    step: u64,
) -> Result<Advantages, GrpoError> {
    let n = validate(rewards, names, weights, cfg, step)?;
    let g = cfg.group_size;
    let groups = n / g;
    // Weighted sum with NaN skipped; a row of all-NaN is an error.
    let mut combined = vec![0.0f64; n];
    for i in 0..n {
        let mut any = false;
        for (k, r) in rewards.iter().enumerate() {
            if !r[i].is_nan() {
                combined[i] += f64::from(weights[k]) * f64::from(r[i]);
                any = true;
            }
        }
        if !any {
            return Err(GrpoError::NonFinite {
                step,
                what: format!(
                    "the reward of completion {i}: every criterion ({})",
                    names.join(", ")
                ),
                index: i,
                value: f32::NAN,
            });
        }
    }
    let mut zero_variance_groups = 0;
    let values: Vec<f64> = match cfg.multi {
        MultiObjective::SumThenNormalize => {
            let batch_std = std(&combined);
            let batch_mean = mean(&combined);
            let mut out = vec![0.0; n];
            for gi in 0..groups {
                let group = &combined[gi * g..(gi + 1) * g];
                let (m, s) = match (g, cfg.scale) {
                    (1, Scale::Batch) => (batch_mean, batch_std),
                    _ => group_stats(group),
                };
                if g > 1 && s.abs() <= 1e-8 {
                    zero_variance_groups += 1;
                }
                for (j, r) in group.iter().enumerate() {
                    let centred = r - m;
                    out[gi * g + j] = match cfg.scale {
                        Scale::Group => centred / (s + cfg.eps),
                        Scale::None => centred,
                        Scale::Batch => centred / (batch_std + cfg.eps),
                    };
                }
            }
            out
        }
        MultiObjective::NormalizeThenSum => {
            let mut summed = vec![0.0f64; n];
            for (k, r) in rewards.iter().enumerate() {
                for gi in 0..groups {
                    let group: Vec<f64> = r[gi * g..(gi + 1) * g]
                        .iter()
                        .map(|v| if v.is_nan() { 0.0 } else { f64::from(*v) })
                        .collect();
                    let (m, s) = group_stats(&group);
                    for (j, v) in group.iter().enumerate() {
                        summed[gi * g + j] += f64::from(weights[k]) * (v - m) / (s + cfg.eps);
                    }
                }
            }
            for gi in 0..groups {
                if g > 1 && std(&combined[gi * g..(gi + 1) * g]).abs() <= 1e-8 {
                    zero_variance_groups += 1;
                }
            }
            let m = mean(&summed);
            let s = std(&summed);
            summed.iter().map(|v| (v - m) / (s + cfg.eps)).collect()
        }
    };
    Ok(Advantages {
        values: values.iter().map(|v| *v as f32).collect(),
        rewards: combined.iter().map(|v| *v as f32).collect(),
        zero_variance_groups,
        groups,
    })
}

/// Subtracts the KL penalty from the rewards (PPO-style placement):
/// `r_i − β · Σ_t m_{i,t} · k_{i,t}` for given per-token estimates `k`
/// (k1 = log π − log π_ref, or another estimator's values from
/// [`super::kl::token_value`]). The executor sums them in f64 itself
/// (`exec::grpo_stage::shaping`); this is the engine's form, on `f32`.
///
/// # Errors
/// Shape mismatches.
pub fn kl_in_reward(
    rewards: &[f32],
    kl_per_token: &[Vec<f32>],
    mask: &[Vec<f32>],
    beta: f32,
) -> Result<Vec<f32>, GrpoError> {
    if kl_per_token.len() != rewards.len() || mask.len() != rewards.len() {
        return Err(GrpoError::Shape {
            what: "per-token KL for the reward".into(),
            expected: vec![rewards.len()],
            found: vec![kl_per_token.len()],
        });
    }
    Ok(rewards
        .iter()
        .zip(kl_per_token.iter().zip(mask))
        .map(|(r, (kl, m))| r - beta * kl.iter().zip(m).map(|(k, m)| k * m).sum::<f32>())
        .collect())
}
