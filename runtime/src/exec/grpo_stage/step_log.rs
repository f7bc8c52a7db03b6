//! A GRPO step's `Metrics`: the line of `metrics.jsonl` and the rows of
//! `samples.jsonl`, each criterion and penalty separately.

use serde_json::{json, Map, Value};

use super::super::reflect::{ReflectStats, Sample};
use super::super::rubric::format_score;
use super::draw::DrawSeconds;
use super::shaping::Shaped;
use super::update::Updated;
use crate::generate::FinishReason;

/// What a step's lines are made of.
pub struct StepRecord<'a> {
    /// The stage.
    pub stage: &'a str,
    /// The step, counting from 1.
    pub step: u64,
    /// Its learning rate.
    pub lr: f64,
    /// The rubric's criterion and penalty names.
    pub criteria: &'a [String],
    /// Its penalty names.
    pub penalties: &'a [String],
    /// The kept completions.
    pub samples: &'a [Sample],
    /// Their row ids, by group.
    pub row_ids: &'a [String],
    /// Their shaped rewards.
    pub shaped: &'a Shaped,
    /// Their advantages.
    pub advantages: &'a [f32],
    /// Groups whose reward did not vary.
    pub zero_variance_groups: usize,
    /// Groups kept.
    pub groups: usize,
    /// Batches drawn.
    pub draws: usize,
    /// What reflection did.
    pub reflection: ReflectStats,
    /// The update.
    pub update: &'a Updated,
    /// Where drawing spent its time.
    pub seconds: DrawSeconds,
    /// The step's wall time.
    pub step_seconds: f64,
    /// Shaping terms the stage declares: (`overlong`, KL in the reward).
    pub shaping_terms: (bool, bool),
    /// The cost constraint's λ and mean cost, when there is one.
    pub cost: Option<(f64, f64)>,
    /// The rollout's response `format`.
    pub format: &'a str,
}

fn mean(values: impl Iterator<Item = f64>, n: f64) -> f64 {
    // `+ 0.0` turns a sum of negative zeros (no penalty) into 0, not -0.
    values.sum::<f64>() / n + 0.0
}

/// The step's line of `metrics.jsonl`.
pub fn metrics_line(r: &StepRecord<'_>) -> Value {
    let kept = r.samples;
    let n = kept.len().max(1) as f64;
    let mut criteria = Map::new();
    for (i, name) in r.criteria.iter().enumerate() {
        criteria.insert(
            name.clone(),
            json!(mean(kept.iter().map(|s| s.scores.criteria[i]), n)),
        );
    }
    let mut penalties = Map::new();
    for (i, name) in r.penalties.iter().enumerate() {
        penalties.insert(
            name.clone(),
            json!(mean(kept.iter().map(|s| s.scores.penalties[i]), n)),
        );
    }
    let truncated = kept
        .iter()
        .filter(|s| s.finish == FinishReason::Length)
        .count() as f64
        / n;
    let refl = r.reflection;
    let stats = &r.update.stats;
    let mut line = json!({
        "stage": r.stage, "step": r.step, "lr": r.lr, "loss": r.update.loss,
        "reward": mean(kept.iter().map(|s| s.scores.total), n), "criteria": criteria, "penalties": penalties,
        "format": mean(kept.iter().map(|s| s.scores.format), n),
        "kl": stats.kl_mean, "entropy": stats.entropy_mean, "loss_tokens": r.update.loss_tokens,
        "clip_low_fraction": stats.clip_low_fraction, "clip_high_fraction": stats.clip_high_fraction,
        "dual_clip_fraction": stats.dual_clip_fraction,
        "ratio_mean": stats.ratio_mean, "ratio_min": stats.ratio_min, "ratio_max": stats.ratio_max,
        "grad_norm": r.update.grad_norm,
        "zero_variance_fraction": r.zero_variance_groups as f64 / r.groups.max(1) as f64,
        "length_mean": mean(kept.iter().map(|s| s.tokens.len() as f64), n), "truncated_fraction": truncated,
        // Null where there is nothing to measure: no reflection in the
        // stage (it looked at no completion), nothing flagged to correct.
        "reflection_rate": (refl.total > 0).then(|| refl.flagged as f64 / refl.total as f64),
        "corrected_fraction": (refl.flagged > 0).then(|| refl.corrected as f64 / refl.flagged as f64),
        "groups": r.groups, "draws": r.draws, "step_time_s": r.step_seconds,
        "time_s": {"generate": r.seconds.generate, "score": r.seconds.score, "reflect": r.seconds.reflect,
                   "reference": r.update.seconds_reference, "update": r.update.seconds_update},
    });
    let (overlong, kl_in_reward) = r.shaping_terms;
    if let Value::Object(o) = &mut line {
        // No token in the loss: no ratio or clip was measured (as `loss`,
        // `kl` and `entropy` are null then).
        if r.update.loss_tokens == 0.0 {
            for key in [
                "clip_low_fraction",
                "clip_high_fraction",
                "dual_clip_fraction",
                "ratio_mean",
                "ratio_min",
                "ratio_max",
            ] {
                o.insert(key.into(), Value::Null);
            }
        }
        // How many completions follow the rollout's format (`plain`: all).
        if r.format != "plain" {
            o.insert(
                "format_compliance".into(),
                json!(mean(
                    kept.iter().map(|s| format_score(r.format, &s.text)),
                    n
                )),
            );
        }
        if overlong || kl_in_reward || r.cost.is_some() {
            o.insert(
                "shaped_reward".into(),
                json!(mean(r.shaped.rewards.iter().copied(), n)),
            );
        }
        if overlong {
            o.insert(
                "overlong".into(),
                json!(mean(r.shaped.overlong.iter().copied(), n)),
            );
        }
        if kl_in_reward {
            o.insert(
                "kl_reward_penalty".into(),
                json!(mean(r.shaped.kl_penalty.iter().copied(), n)),
            );
            // The KL per token, as the loss placement reports it.
            let tokens: usize = kept.iter().map(|s| s.tokens.len()).sum();
            o.insert(
                "kl".into(),
                json!(r.shaped.kl.iter().sum::<f64>() / tokens.max(1) as f64),
            );
        }
        if let Some((lambda, cost)) = r.cost {
            o.insert("cost_lambda".into(), json!(lambda));
            o.insert("cost_mean".into(), json!(cost));
        }
    }
    line
}

/// The step's rows of `samples.jsonl`, one per completion.
pub fn sample_lines(r: &StepRecord<'_>) -> Vec<Value> {
    let (overlong, kl_in_reward) = r.shaping_terms;
    let shaped = overlong || kl_in_reward || r.cost.is_some();
    r.samples
        .iter()
        .zip(r.advantages)
        .enumerate()
        .map(|(i, (s, a))| {
            let mut o = Map::new();
            o.insert("stage".into(), json!(r.stage));
            o.insert("step".into(), json!(r.step));
            o.insert("group".into(), json!(format!("{}-{}", r.step, s.group)));
            o.insert("row".into(), json!(r.row_ids[s.group]));
            for (k, name) in r.criteria.iter().enumerate() {
                o.insert(name.clone(), json!(s.scores.criteria[k]));
            }
            for (k, name) in r.penalties.iter().enumerate() {
                o.insert(format!("penalty.{name}"), json!(s.scores.penalties[k]));
            }
            o.insert("reward".into(), json!(s.scores.total));
            if shaped {
                o.insert("shaped_reward".into(), json!(r.shaped.rewards[i]));
            }
            if overlong {
                o.insert("overlong".into(), json!(r.shaped.overlong[i]));
            }
            if kl_in_reward {
                o.insert("kl_reward_penalty".into(), json!(r.shaped.kl_penalty[i]));
            }
            o.insert("advantage".into(), json!(a));
            o.insert("reflection".into(), json!(s.reflected));
            if let Some(b) = &s.before {
                // A correction: the scores of the completion it corrects.
                let mut before = Map::new();
                for (k, name) in r.criteria.iter().enumerate() {
                    before.insert(name.clone(), json!(b.criteria[k]));
                }
                before.insert("reward".into(), json!(b.total));
                o.insert("before".into(), Value::Object(before));
            }
            o.insert("text".into(), json!(s.text));
            Value::Object(o)
        })
        .collect()
}
