//! A GRPO step's groups: `Batch → Generate → Score → Reflect`, drawing more
//! prompts under dynamic sampling until the step has `batch` groups or
//! `max_resample` extra batches are spent.

use std::time::Instant;

use burn::tensor::backend::Backend;
use safer_ir::plan::{DynamicSamplingSpec, ReflectionSpec, RolloutSpec};

use super::super::checkpoint::TrainState;
use super::super::data::Row;
use super::super::reflect::{reflect, ReflectStats, Sample};
use super::super::rollout::{sample, Policy, PromptCache};
use super::super::rubric::RubricScorer;
use super::super::ExecError;
use crate::generate::{Prompt, SamplingParams};
use crate::grpo::dynamic_sampling::{keep_groups, Keep};
use crate::grpo::GrpoError;
use crate::model::ModelError;

/// What a step's drawing needs.
pub struct Rollouts<'a, B: Backend> {
    /// The policy, in its decoding layout.
    pub policy: &'a Policy<'a, B>,
    /// The stage's reward rubric.
    pub scorer: &'a RubricScorer<'a>,
    /// The rollout settings.
    pub rollout: &'a RolloutSpec,
    /// Sampling settings made from `rollout`.
    pub params: &'a SamplingParams,
    /// The stage's reflection, if any.
    pub reflection: Option<&'a ReflectionSpec>,
    /// The stage's dynamic sampling, if any.
    pub dynamic_sampling: Option<&'a DynamicSamplingSpec>,
    /// Groups a step needs.
    pub batch_prompts: usize,
    /// The stage's seed (the data cursor's shuffles).
    pub seed: u64,
    /// Set by Ctrl+C or SIGTERM: dynamic sampling draws no further batch.
    pub interrupt: &'a std::sync::atomic::AtomicBool,
}

/// The groups of one step.
pub struct Drawn<'r> {
    /// The kept groups' rows, in group order.
    pub rows: Vec<&'r Row>,
    /// Their prompts.
    pub prompts: Vec<Prompt>,
    /// The kept groups' completions (corrections included); `group` indexes `rows`.
    pub samples: Vec<Sample>,
    /// What reflection did in the groups kept.
    pub reflection: ReflectStats,
    /// Batches drawn.
    pub draws: usize,
    /// Groups drawn over all batches.
    pub drawn_groups: usize,
    /// Seconds spent generating, scoring and reflecting.
    pub seconds: DrawSeconds,
}

/// Where a step's drawing spent its time.
#[derive(Clone, Copy, Debug, Default)]
pub struct DrawSeconds {
    /// Generating completions.
    pub generate: f64,
    /// Scoring them.
    pub score: f64,
    /// Reflecting on the flagged ones.
    pub reflect: f64,
}

/// Draws a step's groups from `rows` at the data cursor of `state`,
/// sampling with its RNG.
///
/// # Errors
/// Model, scoring and reflection errors; with dynamic sampling, E0502 when
/// no group at all was kept after the last allowed batch (a step that kept
/// some trains on those, and the caller warns).
pub fn draw<'r, B: Backend>(
    r: &Rollouts<'_, B>,
    rows: &'r [Row],
    prompt_cache: &mut PromptCache,
    state: &mut TrainState,
) -> Result<Drawn<'r>, ExecError> {
    let mut drawn = Drawn {
        rows: Vec::new(),
        prompts: Vec::new(),
        samples: Vec::new(),
        reflection: ReflectStats::default(),
        draws: 0,
        drawn_groups: 0,
        seconds: DrawSeconds::default(),
    };
    let group_size = r.rollout.group;
    loop {
        // Dynamic sampling may draw thousands of batches for a step: an
        // interrupt stops it between two (the caller checkpoints the state
        // from before the step's draws, which a resume draws again).
        if drawn.draws > 0 && r.interrupt.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ExecError::Usage(format!(
                "interrupted while dynamic sampling drew batch {} of at most {}",
                drawn.draws + 1,
                r.dynamic_sampling.map_or(1, |d| d.max_resample + 1)
            )));
        }
        drawn.draws += 1;
        let need = r.batch_prompts - drawn.rows.len();
        let idx = state.cursor.next(need, rows.len(), r.seed);
        let batch: Vec<&Row> = idx.iter().map(|&i| &rows[i]).collect();
        let prompts = prompt_cache.get_many(&idx, rows, r.policy.tokenizer, r.policy.config)?;
        let t0 = Instant::now();
        // Logits gone NaN in training are the step's divergence (E0500),
        // with its last good checkpoint kept.
        let completions = sample(r.policy, &prompts, group_size, r.params, &mut state.rng)
            .map_err(|e| match e {
                ExecError::Model(ModelError::NonFiniteLogits { .. }) if state.step > 0 => {
                    ExecError::Grpo(GrpoError::NonFinite {
                        step: state.step + 1,
                        what: "the policy's logits, sampling the step's completions,".into(),
                        index: 0,
                        value: f32::NAN,
                    })
                }
                e => e,
            })?;
        drawn.seconds.generate += t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let scores = r
            .scorer
            .score_completions(&completions, |c| batch[c.prompt / group_size])?;
        let mut samples: Vec<Sample> = completions
            .into_iter()
            .zip(scores)
            .map(|(c, s)| Sample {
                group: c.prompt / group_size,
                tokens: c.tokens,
                text: c.text,
                finish: c.finish,
                scores: s,
                reflected: false,
                before: None,
            })
            .collect();
        drawn.seconds.score += t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let mut group_reflection = Vec::new();
        if let Some(spec) = r.reflection {
            let (out, st) = reflect(
                r.policy,
                spec,
                r.scorer,
                &batch,
                samples,
                r.params,
                &mut state.rng,
            )?;
            samples = out;
            group_reflection = st;
        }
        drawn.seconds.reflect += t0.elapsed().as_secs_f64();
        drawn.drawn_groups += batch.len();
        let keep = kept_groups(r, &samples, batch.len())?;
        for (grp, row) in batch.iter().enumerate() {
            if !keep[grp] || drawn.rows.len() >= r.batch_prompts {
                continue;
            }
            let new_group = drawn.rows.len();
            // Counted for the groups kept only, as every other metric.
            if let Some(st) = group_reflection.get(grp) {
                drawn.reflection.add(st);
            }
            drawn.rows.push(row);
            drawn.prompts.push(prompts[grp].clone());
            drawn
                .samples
                .extend(
                    samples
                        .iter()
                        .filter(|s| s.group == grp)
                        .cloned()
                        .map(|mut s| {
                            s.group = new_group;
                            s
                        }),
                );
        }
        let max_draws = r.dynamic_sampling.map_or(1, |d| d.max_resample + 1);
        if drawn.rows.len() >= r.batch_prompts || drawn.draws >= max_draws {
            break;
        }
    }
    if let (Some(ds), true) = (r.dynamic_sampling, drawn.rows.is_empty()) {
        return Err(ExecError::Grpo(GrpoError::NothingKept {
            criterion: ds.criterion.clone().unwrap_or_else(|| "reward".into()),
            needed: r.batch_prompts,
            kept: 0,
            attempts: drawn.draws,
        }));
    }
    Ok(drawn)
}

/// Which of a batch's `groups` dynamic sampling keeps (all without it).
fn kept_groups<B: Backend>(
    r: &Rollouts<'_, B>,
    samples: &[Sample],
    groups: usize,
) -> Result<Vec<bool>, ExecError> {
    let Some(ds) = r.dynamic_sampling else {
        return Ok(vec![true; groups]);
    };
    let mode = match ds.band {
        Some((lo, hi)) => Keep::Band(lo as f32, hi as f32),
        None => Keep::Varies,
    };
    (0..groups)
        .map(|grp| {
            let vals: Vec<f32> = samples
                .iter()
                .filter(|s| s.group == grp)
                .map(|s| r.scorer.pick(&s.scores, ds.criterion.as_deref()) as f32)
                .collect();
            keep_groups(&vals, vals.len().max(1), mode)
                .map(|v| v.first().copied().unwrap_or(false))
                .map_err(ExecError::from)
        })
        .collect()
}
