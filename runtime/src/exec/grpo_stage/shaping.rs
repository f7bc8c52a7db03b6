//! A GRPO step's rewards, shaped, and their advantages.
//!
//! The reward a completion is trained on starts from its rubric `total` and
//! is shaped, in this order, by what the stage declares:
//!
//! - `overlong` (DAPO): plus the length penalty of [`crate::grpo::overlong`];
//! - `kl { placement = reward }`: minus β · Σ_t k_t over the completion's
//!   tokens, k the declared estimator (k1 = log π − log π_ref unless
//!   another is written; [`crate::grpo::kl::token_value`]);
//! - `cost` (Safe RLHF): r' = (r − λ c) / (1 + λ), with c the cost
//!   criterion and λ the multiplier of [`crate::grpo::cost::Lagrangian`].
//!
//! Advantages are then computed per group (groups differ in size when
//! reflection appends corrections):
//!
//! - `sum_then_normalize`: the shaped reward is normalised within its group
//!   (`group_std`, `group_mean`) or centred in its group and divided by the
//!   batch's std (`batch_std`);
//! - `normalize_then_sum` (GDPO): the reward is split into objectives whose
//!   weighted sum it is (each criterion with its share of the rubric's
//!   weighted mean, the rest of the total, the overlong penalty, the KL
//!   penalty, and under a cost constraint every weight divided by 1 + λ and
//!   the cost with weight −λ / (1 + λ)); each objective is normalised within
//!   its group, the weighted sum is normalised over the batch.

use std::ops::Range;

use safer_ir::plan::OverlongSpec;

use super::super::reflect::Sample;
use super::super::ExecError;
use crate::grpo::advantage::{self, AdvantageConfig, MultiObjective, Scale};
use crate::grpo::overlong;

/// How a stage shapes its rewards.
#[derive(Clone, Copy, Debug, Default)]
pub struct Shaping<'a> {
    /// DAPO's overlong penalty.
    pub overlong: Option<&'a OverlongSpec>,
    /// β, with the KL in the reward.
    pub kl_beta: Option<f64>,
    /// The cost criterion's index in the rubric and this step's λ.
    pub cost: Option<(usize, f64)>,
}

/// A step's rewards and what shaped them, one value per completion.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Shaped {
    /// The reward the advantages are computed from.
    pub rewards: Vec<f64>,
    /// The overlong penalty added (0 without `overlong`).
    pub overlong: Vec<f64>,
    /// β · Σ k subtracted (0 unless the KL is in the reward).
    pub kl_penalty: Vec<f64>,
    /// Σ k over the completion's tokens, k the estimator's per-token value
    /// (0 unless the KL is in the reward).
    pub kl: Vec<f64>,
}

/// Shapes the rewards of `samples`; `kl_sums` holds each completion's
/// Σ_t k_t ([`crate::grpo::kl::token_value`]) when the KL is in the reward.
pub fn shape(samples: &[Sample], kl_sums: Option<&[f64]>, s: &Shaping<'_>) -> Shaped {
    let mut out = Shaped::default();
    for (i, sample) in samples.iter().enumerate() {
        let mut r = sample.scores.total;
        // The factor in f64: a large one (accepted: any factor of at least
        // 0) would overflow f32 into an infinite reward.
        let over = s.overlong.map_or(0.0, |o| {
            f64::from(overlong::penalty(sample.tokens.len(), o.max, o.cache, 1.0)) * o.factor
        });
        if s.overlong.is_some() {
            r += over;
        }
        let kl_sum = match (s.kl_beta, kl_sums) {
            (Some(_), Some(sums)) => sums.get(i).copied().unwrap_or(0.0),
            _ => 0.0,
        };
        let kl = s.kl_beta.map_or(0.0, |beta| beta * kl_sum);
        if s.kl_beta.is_some() {
            r -= kl;
        }
        if let Some((criterion, lambda)) = s.cost {
            let c = sample
                .scores
                .criteria
                .get(criterion)
                .copied()
                .unwrap_or(0.0);
            r = (r - lambda * c) / (1.0 + lambda);
        }
        out.rewards.push(r);
        out.overlong.push(over);
        out.kl_penalty.push(kl);
        out.kl.push(kl_sum);
    }
    out
}

/// The advantages of a step.
#[derive(Clone, Debug, PartialEq)]
pub struct StepAdvantages {
    /// One per completion.
    pub values: Vec<f32>,
    /// Groups whose shaped reward did not vary.
    pub zero_variance_groups: usize,
}

/// Advantages of `samples` (groups contiguous, `sample.group` ascending)
/// from their `shaped` rewards; `criterion_weights` are the rubric's
/// criterion weights (for `normalize_then_sum`).
///
/// # Errors
/// Non-finite rewards (E0500), naming the step.
pub fn advantages(
    samples: &[Sample],
    shaped: &Shaped,
    shaping: &Shaping<'_>,
    criterion_weights: &[f64],
    cfg: &AdvantageConfig,
    step: u64,
) -> Result<StepAdvantages, ExecError> {
    let groups = group_ranges(samples);
    let mut zero_variance_groups = 0;
    let values = match cfg.multi {
        MultiObjective::SumThenNormalize => {
            let batch_std = advantage::std(&shaped.rewards);
            let batch_mean =
                shaped.rewards.iter().sum::<f64>() / shaped.rewards.len().max(1) as f64;
            let mut values = Vec::with_capacity(samples.len());
            for range in &groups {
                // Groups of one (the rollout's `group = 1`) under
                // `batch_std`: the batch's mean is every completion's
                // baseline (REINFORCE++'s), as in `advantage::compute`;
                // also for a group that a reflection's appended correction
                // made two, so that the baseline does not depend on
                // whether reflection fired.
                if cfg.scale == Scale::Batch && cfg.group_size == 1 {
                    values.extend(
                        shaped.rewards[range.clone()]
                            .iter()
                            .map(|r| ((r - batch_mean) / (batch_std + cfg.eps)) as f32),
                    );
                    continue;
                }
                let totals: Vec<f32> = shaped.rewards[range.clone()]
                    .iter()
                    .map(|r| *r as f32)
                    .collect();
                let mut group_cfg = AdvantageConfig {
                    group_size: totals.len(),
                    ..*cfg
                };
                let batch_scale = group_cfg.scale == Scale::Batch;
                if batch_scale {
                    group_cfg.scale = Scale::None;
                }
                let a = advantage::compute(&[totals], &["reward"], &[1.0], &group_cfg, step + 1)?;
                zero_variance_groups += a.zero_variance_groups;
                values.extend(a.values.iter().map(|v| {
                    if batch_scale {
                        (f64::from(*v) / (batch_std + cfg.eps)) as f32
                    } else {
                        *v
                    }
                }));
            }
            values
        }
        MultiObjective::NormalizeThenSum => {
            let (objectives, weights) = objectives(samples, shaped, shaping, criterion_weights);
            for range in &groups {
                if range.len() > 1 && advantage::std(&shaped.rewards[range.clone()]).abs() <= 1e-8 {
                    zero_variance_groups += 1;
                }
            }
            gdpo(&objectives, &weights, &groups, cfg.eps)
                .into_iter()
                .map(|v| v as f32)
                .collect()
        }
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(ExecError::Grpo(crate::grpo::GrpoError::NonFinite {
            step: step + 1,
            what: "advantages".into(),
            index: i,
            value: values[i],
        }));
    }
    Ok(StepAdvantages {
        values,
        zero_variance_groups,
    })
}

/// The index ranges of the groups of `samples` (contiguous, ascending).
fn group_ranges(samples: &[Sample]) -> Vec<Range<usize>> {
    let mut ranges: Vec<Range<usize>> = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        match ranges.last_mut() {
            Some(r) if samples[r.start].group == s.group => r.end = i + 1,
            _ => ranges.push(i..i + 1),
        }
    }
    ranges
}

/// The objectives `[k][i]` whose weighted sum is each completion's shaped
/// reward, and their weights.
fn objectives(
    samples: &[Sample],
    shaped: &Shaped,
    shaping: &Shaping<'_>,
    criterion_weights: &[f64],
) -> (Vec<Vec<f64>>, Vec<f64>) {
    let weight_sum: f64 = criterion_weights.iter().sum();
    let share = |w: f64| {
        if weight_sum > 0.0 {
            w / weight_sum
        } else {
            0.0
        }
    };
    let mut objectives: Vec<Vec<f64>> = Vec::new();
    let mut weights: Vec<f64> = Vec::new();
    for (k, w) in criterion_weights.iter().enumerate() {
        objectives.push(
            samples
                .iter()
                .map(|s| s.scores.criteria.get(k).copied().unwrap_or(0.0))
                .collect(),
        );
        weights.push(share(*w));
    }
    // Penalties, format terms and gates: what the total adds to the weighted mean.
    objectives.push(
        samples
            .iter()
            .map(|s| s.scores.total - s.scores.weighted)
            .collect(),
    );
    weights.push(1.0);
    if shaping.overlong.is_some() {
        objectives.push(shaped.overlong.clone());
        weights.push(1.0);
    }
    if shaping.kl_beta.is_some() {
        objectives.push(shaped.kl_penalty.iter().map(|k| -k).collect());
        weights.push(1.0);
    }
    if let Some((criterion, lambda)) = shaping.cost {
        for w in &mut weights {
            *w /= 1.0 + lambda;
        }
        objectives.push(
            samples
                .iter()
                .map(|s| s.scores.criteria.get(criterion).copied().unwrap_or(0.0))
                .collect(),
        );
        weights.push(-lambda / (1.0 + lambda));
    }
    (objectives, weights)
}

/// GDPO: each objective normalised within its group ((v − mean) / (std +
/// eps), a group of one as in [`advantage::compute`]), summed with the
/// weights, then normalised over the batch. NaN counts as 0.
fn gdpo(objectives: &[Vec<f64>], weights: &[f64], groups: &[Range<usize>], eps: f64) -> Vec<f64> {
    let n = groups.last().map_or(0, |r| r.end);
    let mut summed = vec![0.0f64; n];
    for (values, w) in objectives.iter().zip(weights) {
        for range in groups {
            let group: Vec<f64> = values[range.clone()]
                .iter()
                .map(|v| if v.is_nan() { 0.0 } else { *v })
                .collect();
            let (mean, std) = if group.len() > 1 {
                (
                    group.iter().sum::<f64>() / group.len() as f64,
                    advantage::std(&group),
                )
            } else {
                (0.0, 1.0)
            };
            for (j, v) in group.iter().enumerate() {
                summed[range.start + j] += w * (v - mean) / (std + eps);
            }
        }
    }
    let mean = summed.iter().sum::<f64>() / n.max(1) as f64;
    let std = advantage::std(&summed);
    summed.iter().map(|v| (v - mean) / (std + eps)).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)] // tests stop at the first broken expectation
mod tests {
    use super::*;
    use crate::exec::rubric::Scores;
    use crate::generate::FinishReason;

    fn sample(group: usize, criteria: &[f64], total: f64, tokens: usize) -> Sample {
        let weighted = criteria.iter().sum::<f64>() / criteria.len() as f64;
        Sample {
            group,
            tokens: vec![1; tokens],
            text: String::new(),
            finish: FinishReason::Stop,
            scores: Scores {
                criteria: criteria.to_vec(),
                penalties: Vec::new(),
                format: 0.0,
                weighted,
                total,
            },
            reflected: false,
            before: None,
        }
    }

    fn batch() -> Vec<Sample> {
        vec![
            sample(0, &[1.0, 0.0], 0.4, 3),
            sample(0, &[0.0, 1.0], 0.5, 9),
            sample(0, &[1.0, 1.0], 0.9, 12),
            sample(1, &[0.0, 0.0], -0.2, 4),
            sample(1, &[1.0, 0.0], 0.5, 10),
            sample(1, &[0.5, 0.5], 0.5, 11),
        ]
    }

    fn cfg(multi: MultiObjective) -> AdvantageConfig {
        AdvantageConfig {
            group_size: 3,
            scale: Scale::Group,
            eps: 1e-6,
            multi,
        }
    }

    #[test]
    fn unshaped_rewards_are_the_totals() {
        let samples = batch();
        let shaped = shape(&samples, None, &Shaping::default());
        let totals: Vec<f64> = samples.iter().map(|s| s.scores.total).collect();
        assert_eq!(shaped.rewards, totals);
    }

    #[test]
    fn shaping_adds_the_overlong_penalty_subtracts_the_kl_and_weighs_the_cost() {
        let samples = batch();
        let spec = OverlongSpec {
            max: 10,
            cache: 4,
            factor: 2.0,
        };
        let sums = [0.5, 0.0, 1.0, 0.0, 0.0, 2.0];
        let shaping = Shaping {
            overlong: Some(&spec),
            kl_beta: Some(0.1),
            cost: Some((1, 0.5)),
        };
        let shaped = shape(&samples, Some(&sums), &shaping);
        // Sample 1: 9 tokens, 3 into the soft zone of 4 (6..10): −3/4 · 2.
        assert!((shaped.overlong[1] + 1.5).abs() < 1e-6);
        // Sample 2: 12 tokens, past max: −1 · 2.
        assert!((shaped.overlong[2] + 2.0).abs() < 1e-6);
        assert_eq!(shaped.overlong[0], 0.0);
        let expected2 = (0.9 - 2.0 - 0.1 * 1.0 - 0.5 * 1.0) / 1.5;
        assert!((shaped.rewards[2] - expected2).abs() < 1e-12);
        assert!((shaped.kl_penalty[5] - 0.2).abs() < 1e-12);
    }

    #[test]
    fn sum_then_normalize_matches_the_engine_on_equal_groups() {
        let samples = batch();
        let shaped = shape(&samples, None, &Shaping::default());
        let ours = advantages(
            &samples,
            &shaped,
            &Shaping::default(),
            &[1.0, 1.0],
            &cfg(MultiObjective::SumThenNormalize),
            0,
        )
        .unwrap();
        let totals: Vec<f32> = samples.iter().map(|s| s.scores.total as f32).collect();
        let engine = advantage::compute(
            &[totals],
            &["reward"],
            &[1.0],
            &cfg(MultiObjective::SumThenNormalize),
            1,
        )
        .unwrap();
        assert_eq!(ours.values, engine.values);
        assert_eq!(ours.zero_variance_groups, engine.zero_variance_groups);
    }

    /// Groups of one under `batch_std`: the batch's mean is the baseline,
    /// in the engine and here alike, so the worse completions get negative
    /// advantages (they all got positive ones, r / std, before).
    #[test]
    fn groups_of_one_under_batch_std_are_centred_on_the_batch_mean() {
        let totals = [1.0, 1.0, 0.5, 1.0, 0.0];
        let samples: Vec<Sample> = totals
            .iter()
            .enumerate()
            .map(|(g, &t)| sample(g, &[t], t, 4))
            .collect();
        let shaped = shape(&samples, None, &Shaping::default());
        let cfg = AdvantageConfig {
            group_size: 1,
            scale: Scale::Batch,
            eps: 1e-6,
            multi: MultiObjective::SumThenNormalize,
        };
        let ours = advantages(&samples, &shaped, &Shaping::default(), &[1.0], &cfg, 0).unwrap();
        let mean = totals.iter().sum::<f64>() / 5.0;
        let std = advantage::std(&totals);
        for (a, t) in ours.values.iter().zip(totals) {
            assert!(
                (f64::from(*a) - (t - mean) / (std + 1e-6)).abs() < 1e-6,
                "{a} for {t}"
            );
        }
        assert!(ours.values[4] < 0.0 && ours.values[2] < 0.0 && ours.values[0] > 0.0);
        // A correction appended to the last group (two completions there):
        // still the batch's baseline, not the group's own mean.
        let mut appended = samples.clone();
        appended.push(sample(4, &[1.0], 1.0, 4));
        let shaped = shape(&appended, None, &Shaping::default());
        let with = advantages(&appended, &shaped, &Shaping::default(), &[1.0], &cfg, 0).unwrap();
        let all = [1.0, 1.0, 0.5, 1.0, 0.0, 1.0];
        let (mean, std) = (all.iter().sum::<f64>() / 6.0, advantage::std(&all));
        for (a, t) in with.values.iter().zip(all) {
            assert!(
                (f64::from(*a) - (t - mean) / (std + 1e-6)).abs() < 1e-6,
                "{a} for {t}"
            );
        }
        let as_f32: Vec<f32> = totals.iter().map(|t| *t as f32).collect();
        let engine = advantage::compute(&[as_f32], &["reward"], &[1.0], &cfg, 1).unwrap();
        for (a, b) in ours.values.iter().zip(&engine.values) {
            assert!((a - b).abs() < 1e-6, "{a} against the engine's {b}");
        }
    }

    #[test]
    fn normalize_then_sum_matches_the_engine_s_gdpo_on_equal_groups() {
        let samples = batch();
        let shaped = shape(&samples, None, &Shaping::default());
        let ours = advantages(
            &samples,
            &shaped,
            &Shaping::default(),
            &[1.0, 3.0],
            &cfg(MultiObjective::NormalizeThenSum),
            0,
        )
        .unwrap();
        // The same objectives through the engine: the two criteria with
        // their shares of the weighted mean, and the rest of the total.
        let column = |f: &dyn Fn(&Sample) -> f64| -> Vec<f32> {
            samples.iter().map(|s| f(s) as f32).collect()
        };
        let engine = advantage::compute(
            &[
                column(&|s| s.scores.criteria[0]),
                column(&|s| s.scores.criteria[1]),
                column(&|s| s.scores.total - s.scores.weighted),
            ],
            &["a", "b", "rest"],
            &[0.25, 0.75, 1.0],
            &cfg(MultiObjective::NormalizeThenSum),
            1,
        )
        .unwrap();
        for (x, y) in ours.values.iter().zip(&engine.values) {
            assert!(
                (x - y).abs() < 1e-5,
                "{:?} vs {:?}",
                ours.values,
                engine.values
            );
        }
        // Not the same as normalising the sum: the objectives are decoupled.
        let summed = advantages(
            &samples,
            &shaped,
            &Shaping::default(),
            &[1.0, 3.0],
            &cfg(MultiObjective::SumThenNormalize),
            0,
        )
        .unwrap();
        assert!(ours
            .values
            .iter()
            .zip(&summed.values)
            .any(|(a, b)| (a - b).abs() > 1e-3));
    }

    #[test]
    fn groups_of_different_sizes_are_normalised_each_on_its_own() {
        let mut samples = batch();
        samples.push(sample(1, &[1.0, 1.0], 1.0, 5)); // an appended correction
        let shaped = shape(&samples, None, &Shaping::default());
        let a = advantages(
            &samples,
            &shaped,
            &Shaping::default(),
            &[1.0, 1.0],
            &cfg(MultiObjective::SumThenNormalize),
            0,
        )
        .unwrap();
        assert_eq!(a.values.len(), 7);
        let second: f32 = a.values[3..].iter().sum();
        assert!(second.abs() < 1e-5, "group 1 is centred: {:?}", a.values);
        assert_eq!(group_ranges(&samples), vec![0..3, 3..7]);
    }
}
