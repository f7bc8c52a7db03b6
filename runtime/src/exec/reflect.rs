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

/// What reflection did in one group, or summed over a step's groups.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ReflectStats {
    /// Completions flagged by `when`.
    pub flagged: usize,
    /// Corrections for which `when` no longer holds.
    pub corrected: usize,
    /// Completions looked at.
    pub total: usize,
}

impl ReflectStats {
    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &ReflectStats) {
        self.flagged += other.flagged;
        self.corrected += other.corrected;
        self.total += other.total;
    }
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

/// The prompt that shows `completion`, written for `row`, back to the
/// policy with the reflection text `reflection` (whose `{completion}` it
/// fills): `Ok(Err(why))` when it cannot be asked because the completion
/// spells one of the model's special tokens (the row's own prompt was asked
/// already, so a prompt that fails now fails for the completion's text).
///
/// # Errors
/// The model's template or tokenizer failing.
fn reflection_prompt<B: Backend>(
    policy: &Policy<'_, B>,
    reflection: &str,
    row: &Row,
    completion: &str,
) -> Result<Result<Prompt, String>, ExecError> {
    let extra = reflection.replace("{completion}", completion);
    match prompt(row, policy.tokenizer, policy.config, Some(&extra)) {
        Ok(p) => Ok(Ok(p)),
        Err(ExecError::Row { message, .. }) => Ok(Err(format!("row {}: {message}", row.origin))),
        Err(e) => Err(e),
    }
}

/// Reflects on the flagged samples of a step; returns the samples, group
/// by group, with what reflection did in each group (dynamic sampling keeps
/// some groups only, and the step's metrics count those).
///
/// A reflection prompt that cannot be asked is skipped with a warning, its
/// completion kept as it stands: one too long for the model's context, or
/// one whose completion spells a special token of the model. A reflection
/// prompt that itself holds a special token stops the run, naming it.
///
/// # Errors
/// Model, scoring and condition errors; a special token in the reflection
/// prompt.
#[allow(clippy::too_many_arguments)]
pub fn reflect<B: Backend>(
    policy: &Policy<'_, B>,
    spec: &ReflectionSpec,
    scorer: &RubricScorer<'_>,
    rows: &[&Row],
    samples: Vec<Sample>,
    params: &SamplingParams,
    rng: &mut ChaCha8Rng,
) -> Result<(Vec<Sample>, Vec<ReflectStats>), ExecError> {
    if let Some(token) = policy.tokenizer.special_token_in(&spec.prompt) {
        return Err(ExecError::Usage(format!(
            "the reflection prompt holds `{token}`, one of the model's special tokens, which would be read as that control token, not as text: reword the prompt"
        )));
    }
    let groups = samples.iter().map(|s| s.group).max().map_or(0, |g| g + 1);
    let mut stats = vec![ReflectStats::default(); groups];
    let mut pending: Vec<usize> = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        stats[s.group].total += 1;
        if flagged(spec, scorer, &s.scores)? {
            pending.push(i);
            stats[s.group].flagged += 1;
        }
    }
    // The latest correction of each flagged sample.
    let mut corrections: BTreeMap<usize, Sample> = BTreeMap::new();
    // Samples whose latest correction is still flagged.
    let mut unresolved: std::collections::BTreeSet<usize> = Default::default();
    for round in 1..=spec.rounds {
        if pending.is_empty() {
            break;
        }
        let stays = match round {
            1 => "those completions stay uncorrected".to_string(),
            _ => format!(
                "those completions keep their correction of round {}",
                round - 1
            ),
        };
        let mut built = Vec::with_capacity(pending.len());
        let mut spelled = Vec::new();
        for &i in &pending {
            let shown = corrections.get(&i).unwrap_or(&samples[i]);
            let row = rows[samples[i].group];
            match reflection_prompt(policy, &spec.prompt, row, &shown.text)? {
                Ok(p) => built.push(Some(p)),
                Err(why) => {
                    spelled.push(why);
                    built.push(None);
                }
            }
        }
        if let Some(first) = spelled.first() {
            crate::stderr_line!(
                "warning: reflection: {} reflection prompt(s) cannot be asked, as the completion shown in them reads as the model's control tokens (the first: {first}); {stays}",
                spelled.len()
            );
        }
        // A reflection prompt (the question, the completion and the
        // reflection text) that leaves no room for the correction in the
        // model's context is not asked: that completion stays as it is.
        let context = policy.config.context();
        let fits = |p: &Prompt| p.tokens.len().saturating_add(params.max_new_tokens) <= context;
        if let Some(k) = built
            .iter()
            .position(|p| p.as_ref().is_some_and(|p| !fits(p)))
        {
            let skipped = built.iter().flatten().filter(|p| !fits(p)).count();
            crate::stderr_line!(
                "warning: reflection: {skipped} reflection prompt(s) too long for the model's context of {context} with {} new tokens (the first for row {}) are not asked; {stays}",
                params.max_new_tokens,
                rows[samples[pending[k]].group].origin
            );
        }
        let (asked, prompts): (Vec<usize>, Vec<Prompt>) = pending
            .iter()
            .copied()
            .zip(built)
            .filter_map(|(i, p)| p.filter(|p| fits(p)).map(|p| (i, p)))
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
    for (i, c) in &corrections {
        if !unresolved.contains(i) {
            stats[c.group].corrected += 1;
        }
    }
    let append = spec.keep == "append";
    let mut out = Vec::with_capacity(samples.len() + if append { corrections.len() } else { 0 });
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::{reflection_prompt, Policy, Row};
    use crate::model::{Model, ModelConfig};
    use crate::text::TextTokenizer;

    /// A completion that spells a control token (its pieces sampled one by
    /// one) cannot be shown back to the model as text: its reflection is
    /// not asked, and the reason names the row; a plain completion is.
    #[test]
    fn a_completion_spelling_a_special_token_is_not_reflected_on() {
        type B = crate::CpuBackend;
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/qwen2-tied");
        let tokenizer = TextTokenizer::load(&dir).unwrap();
        let config = ModelConfig::read(&dir).unwrap();
        let model = Model::<B>::load(&dir, &Default::default()).unwrap();
        let policy = Policy {
            model: &model,
            dir: &dir,
            tokenizer: &tokenizer,
            config: &config,
        };
        let mut row = Row::at("rows.jsonl:3");
        row.prompt = "How do I pick a lock?".into();
        let reflection = "Your answer was: {completion}\nIs it safe? Answer again.";
        let plain = reflection_prompt(&policy, reflection, &row, "Use a tension wrench.").unwrap();
        let asked = plain.expect("a plain completion is reflected on");
        let text = tokenizer.decode(&asked.tokens, false).unwrap();
        assert!(
            text.contains("Your answer was: Use a tension wrench."),
            "{text}"
        );
        let spelled =
            reflection_prompt(&policy, reflection, &row, "Sure.<|im_end|> More.").unwrap();
        let why = spelled.expect_err("a completion spelling a special token is not asked");
        assert!(why.starts_with("row rows.jsonl:3: "), "{why}");
        assert!(why.contains("<|im_end|>"), "{why}");
    }
}
