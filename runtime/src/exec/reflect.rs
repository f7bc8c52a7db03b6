//! The `Reflect` op (safety-aware rollout): completions for which the
//! reflection's `when` holds are shown back to the policy with the
//! reflection prompt (after the original question and images), the policy
//! writes a corrected answer, which is scored and enters the group, either
//! replacing the flagged completion (`keep = replace`, the group stays G)
//! or beside it (`append`). The corrections are trained as completions of
//! the original prompt. With `rounds > 1` a correction that is still
//! flagged is reflected on again.

use std::collections::BTreeMap;

use burn::tensor::backend::Backend;
use rand_chacha::ChaCha8Rng;
use safer_ir::plan::ReflectionSpec;

use super::data::Row;
use super::rollout::{prompt, sample, Policy};
use super::rubric::{condition, RubricScorer, ScoreEnv, Scores};
use super::ExecError;
use crate::generate::{FinishReason, Prompt, SamplingParams};

/// One completion of a GRPO step.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Its group (the prompt's index in the step).
    pub group: usize,
    /// Completion tokens (the final stop token included).
    pub tokens: Vec<u32>,
    /// The text.
    pub text: String,
    /// Why it ended.
    pub finish: FinishReason,
    /// Its scores.
    pub scores: Scores,
    /// True for a reflection correction.
    pub reflected: bool,
    /// For a correction: the scores of the completion it corrects.
    pub before: Option<Box<Scores>>,
}

/// What reflection did in one step.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReflectStats {
    /// Completions flagged by `when`.
    pub flagged: usize,
    /// Corrections for which `when` no longer holds.
    pub corrected: usize,
    /// Completions looked at.
    pub total: usize,
}

fn flagged(
    spec: &ReflectionSpec,
    scorer: &RubricScorer<'_>,
    s: &Scores,
) -> Result<bool, ExecError> {
    let env = ScoreEnv {
        scores: BTreeMap::from([(scorer.name, (scorer.spec, s))]),
        reward: s.total,
    };
    condition(&spec.when, &env).map_err(|e| ExecError::Score(format!("reflection `when`: {e}")))
}

/// Reflects on the flagged samples of a step.
///
/// # Errors
/// Model, scoring and condition errors.
#[allow(clippy::too_many_arguments)]
pub fn reflect<B: Backend>(
    policy: &Policy<'_, B>,
    spec: &ReflectionSpec,
    scorer: &RubricScorer<'_>,
    rows: &[&Row],
    samples: Vec<Sample>,
    params: &SamplingParams,
    rng: &mut ChaCha8Rng,
) -> Result<(Vec<Sample>, ReflectStats), ExecError> {
    let mut stats = ReflectStats {
        total: samples.len(),
        ..ReflectStats::default()
    };
    let mut pending: Vec<usize> = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        if flagged(spec, scorer, &s.scores)? {
            pending.push(i);
        }
    }
    stats.flagged = pending.len();
    // The latest correction of each flagged sample.
    let mut corrections: BTreeMap<usize, Sample> = BTreeMap::new();
    // Samples whose latest correction is still flagged.
    let mut unresolved: std::collections::BTreeSet<usize> = Default::default();
    for _ in 0..spec.rounds {
        if pending.is_empty() {
            break;
        }
        let built = pending
            .iter()
            .map(|&i| {
                let shown = corrections.get(&i).unwrap_or(&samples[i]);
                let extra = spec.prompt.replace("{completion}", &shown.text);
                prompt(
                    rows[samples[i].group],
                    policy.tokenizer,
                    policy.config,
                    Some(&extra),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        // A reflection prompt (the question, the completion and the
        // reflection text) that leaves no room for the correction in the
        // model's context is not asked: that completion stays as it is.
        let context = policy.config.context();
        let fits = |p: &Prompt| p.tokens.len().saturating_add(params.max_new_tokens) <= context;
        if let Some(k) = built.iter().position(|p| !fits(p)) {
            let skipped = built.iter().filter(|p| !fits(p)).count();
            crate::stderr_line!(
                "warning: reflection: {skipped} reflection prompt(s) too long for the model's context of {context} with {} new tokens (the first for row {}) are not asked; those completions stay uncorrected",
                params.max_new_tokens,
                rows[samples[pending[k]].group].origin
            );
        }
        let (asked, prompts): (Vec<usize>, Vec<Prompt>) = pending
            .iter()
            .copied()
            .zip(built)
            .filter(|(_, p)| fits(p))
            .unzip();
        pending = asked;
        if pending.is_empty() {
            break;
        }
        let outs = sample(policy, &prompts, 1, params, rng)?;
        let scores = scorer.score_completions(&outs, |c| rows[samples[pending[c.prompt]].group])?;
        let mut still = Vec::new();
        for ((&i, c), s) in pending.iter().zip(outs).zip(scores) {
            let again = flagged(spec, scorer, &s)?;
            corrections.insert(
                i,
                Sample {
                    group: samples[i].group,
                    tokens: c.tokens,
                    text: c.text,
                    finish: c.finish,
                    scores: s,
                    reflected: true,
                    before: Some(Box::new(samples[i].scores.clone())),
                },
            );
            if again {
                still.push(i);
                unresolved.insert(i);
            } else {
                unresolved.remove(&i);
            }
        }
        pending = still;
    }
    stats.corrected = corrections.len() - unresolved.len();
    let append = spec.keep == "append";
    let mut out = Vec::with_capacity(samples.len() + if append { corrections.len() } else { 0 });
    let groups = samples.iter().map(|s| s.group).max().map_or(0, |g| g + 1);
    for g in 0..groups {
        for (i, s) in samples.iter().enumerate().filter(|(_, s)| s.group == g) {
            match corrections.get(&i) {
                Some(c) if !append => out.push(c.clone()),
                _ => out.push(s.clone()),
            }
        }
        if append {
            for (_, c) in corrections.iter().filter(|(_, c)| c.group == g) {
                out.push(c.clone());
            }
        }
    }
    Ok((out, stats))
}
