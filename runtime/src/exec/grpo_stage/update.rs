//! A GRPO step's `RefLogprob → Update`: the reference model's log-probs,
//! the policy's, the loss and μ AdamW updates, over micro-batches.
//!
//! Completions are split into micro-batches of `micro_batch` (all of them
//! by default); each micro-batch is scored, its loss back-propagated and
//! its gradients accumulated before one clipped AdamW step per iteration,
//! so memory follows the micro-batch, not `batch`. The loss of each
//! micro-batch is scaled so that the accumulated gradient is the whole
//! batch's: `token_mean` divides by the step's active tokens,
//! `seq_mean_token_mean` and `seq_sum_const` weigh a micro-batch by its
//! share of the completions, and `token_mean_local` (TRL's `bnpo`) takes
//! each micro-batch's own token mean divided by the number of
//! micro-batches, as TRL's gradient accumulation does.
//!
//! Shapes: a micro-batch of n completions of at most T tokens has
//! per-token tensors `[n, T]` (column j is completion token j, scored
//! after its group's prompt) and advantages `[n]`.

use std::time::Instant;

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safer_ir::plan::GrpoSpec;

use super::super::reflect::Sample;
use super::super::ExecError;
use crate::generate::fused_logprobs::FusedScores;
use crate::generate::{completion_logprobs, fused_completion_scores, FinishReason, Prompt};
use crate::grpo::aggregate::Aggregation;
use crate::grpo::policy_loss::{self, LossConfig, LossInputs, LossStats};
use crate::grpo::{clip, kl, to_vec};
use crate::model::on_cpu::is_cpu;
use crate::model::Model;

type AD<B> = Autodiff<B>;

/// What an update needs besides the policy and its optimiser.
pub struct UpdateContext<'a, B: Backend> {
    /// The stage's GRPO settings.
    pub grpo: &'a GrpoSpec,
    /// The loss settings made from them.
    pub loss: &'a LossConfig,
    /// The frozen reference, when a KL term needs it.
    pub reference: Option<&'a Model<B>>,
    /// The reference holds the policy's weights as they are now (the
    /// stage's first step, with `reference = policy`). Its log-probs for a
    /// KL loss term are then the policy's own first scores, bit for bit:
    /// the reference's scoring pass differs from the training pass by
    /// rounding (about 1e-7 a token), which gave the KL, and through
    /// AdamW the weights, a step of noise where no group had a signal.
    pub reference_is_policy: bool,
    /// Logits are divided by this before log-probs (the rollout's).
    pub temperature: f32,
    /// The tokenizer's padding id.
    pub pad: u32,
    /// Where tensors live.
    pub device: &'a B::Device,
}

/// What an update did.
#[derive(Clone, Debug)]
pub struct Updated {
    /// The last iteration's loss (NaN when nothing was trainable).
    pub loss: f32,
    /// The last iteration's statistics, token-weighted over micro-batches.
    pub stats: LossStats,
    /// The last iteration's gradient norm before clipping.
    pub grad_norm: f64,
    /// Seconds of the reference pass (on the CPU, while it shares the
    /// threads with the policy's first pass, inside `update`).
    pub seconds_reference: f64,
    /// Seconds of scoring, losses and updates.
    pub seconds_update: f64,
    /// Completion tokens in the loss (0 when `mask_truncated` masked every
    /// completion: the step trained on nothing).
    pub loss_tokens: f32,
}

/// One micro-batch: which completions, as `(group, tokens)` pairs, and its mask.
struct Micro<'s> {
    pairs: Vec<(usize, &'s [u32])>,
    /// `[n, width]` row-major: 1 for completion tokens that count.
    mask: Vec<f32>,
    width: usize,
}

/// Scores from the policy's first pass over a micro-batch, kept to train on
/// when there is one micro-batch.
type FirstPass = Option<FusedScores>;

/// Updates `policy` on `samples` (of `prompts`); `advantages_of` gives
/// every sample's advantage from each one's Σ_t k_t (the estimator's
/// per-token values, [`crate::grpo::kl::token_value`]) when the KL is in
/// the reward (`None` otherwise), and is called once, after
/// the first scoring passes.
///
/// # Errors
/// Model errors, non-finite losses or gradient norms (E0500), shape errors.
#[allow(clippy::too_many_arguments)]
pub fn update<B, O>(
    cx: &UpdateContext<'_, B>,
    mut policy: Model<AD<B>>,
    optim: &mut O,
    prompts: &[Prompt],
    samples: &[Sample],
    step: u64,
    lr: f64,
    advantages_of: impl FnOnce(Option<&[f64]>) -> Result<Vec<f32>, ExecError>,
) -> Result<(Model<AD<B>>, Updated), ExecError>
where
    B: Backend,
    O: Optimizer<Model<AD<B>>, AD<B>>,
{
    let g = cx.grpo;
    let kl_in_reward = g.kl.beta > 0.0 && g.kl.placement == "reward" && cx.reference.is_some();
    let trainable: Vec<usize> = (0..samples.len())
        .filter(|&i| !samples[i].tokens.is_empty())
        .collect();
    let mut updated = Updated {
        loss: f32::NAN,
        stats: LossStats::default(),
        grad_norm: 0.0,
        seconds_reference: 0.0,
        seconds_update: 0.0,
        loss_tokens: 0.0,
    };
    if trainable.is_empty() {
        advantages_of(None)?;
        return Ok((policy, updated));
    }
    let chunk = g.micro_batch.unwrap_or(trainable.len()).max(1);
    let micros: Vec<(&[usize], Micro<'_>)> = trainable
        .chunks(chunk)
        .map(|rows| (rows, micro(samples, rows, g.mask_truncated)))
        .collect();
    let single = micros.len() == 1;

    // First passes: the reference's log-probs and the policy's first scores.
    let t0 = Instant::now();
    // With the KL in the reward, the policy's log-probs for it come from
    // the same code as the reference's (the inference path, on a copy of the
    // weights): two implementations differ by rounding (about 1e-6 a token
    // here), which group normalisation would blow up into advantages for
    // groups whose rewards are equal.
    let policy_now: Option<Model<B>> = kl_in_reward.then(|| policy.valid().with_scoring_layout());
    let mut refs: Vec<Option<Tensor<AD<B>, 2>>> = Vec::with_capacity(micros.len());
    let mut firsts: Vec<Option<FirstPass>> = Vec::with_capacity(micros.len());
    let mut kl_sums = vec![0.0f64; samples.len()];
    let reward_estimator = super::estimator(&g.kl.estimator);
    for (rows, m) in &micros {
        // The reference pass and the policy's first scoring pass read the
        // same completions and do not depend on each other: on the CPU
        // backend they run side by side on the worker threads, each
        // filling the other's idle moments (a step of
        // runtime/benches/grpo_step.safer 0.262 → 0.237 s). Their values
        // do not depend on how the threads are shared.
        let mut t_reference = 0.0;
        // The policy's first scores stand for the reference's (see
        // `UpdateContext::reference_is_policy`); not for a KL in the reward,
        // whose policy side is scored by the reference's own code above.
        // With several micro-batches too: each micro-batch's first pass is
        // scored here and dropped (its activations are what micro-batches
        // bound), and the training pass below scores it again with the
        // same code and weights, to the same values.
        let from_first = cx.reference_is_policy && !kl_in_reward && cx.reference.is_some();
        let mut reference_pass = || -> Result<Option<Tensor<AD<B>, 2>>, ExecError> {
            let t = Instant::now();
            let logp = match cx.reference {
                Some(r) => {
                    let s = completion_logprobs(r, prompts, &m.pairs, cx.temperature, cx.pad)?;
                    Some(Tensor::<AD<B>, 2>::from_data(
                        s.logprobs.into_data(),
                        cx.device,
                    ))
                }
                None => None,
            };
            t_reference = t.elapsed().as_secs_f64();
            Ok(logp)
        };
        // With several micro-batches the policy's training passes come
        // below, one micro-batch at a time (a first pass here only stands
        // for the reference).
        let wanted = single || from_first;
        let first_scores = || {
            wanted
                .then(|| fused_completion_scores(&policy, prompts, &m.pairs, cx.temperature))
                .flatten()
        };
        let (ref_logp, first) = match (from_first, is_cpu::<B>()) {
            (true, _) => (Ok(None), first_scores()),
            (false, true) => rayon::join(&mut reference_pass, first_scores),
            (false, false) => (reference_pass(), first_scores()),
        };
        let ref_logp = match (&first, from_first) {
            (Some(f), true) => Some(Tensor::<AD<B>, 2>::from_data(
                TensorData::new(f.logprobs.clone(), [m.pairs.len(), f.width]),
                cx.device,
            )),
            // No fused first pass (another backend): the reference's own.
            (None, true) => reference_pass()?,
            (_, false) => ref_logp?,
        };
        updated.seconds_reference += t_reference;
        if let Some(current) = &policy_now {
            let policy_logp = to_vec(
                &completion_logprobs(current, prompts, &m.pairs, cx.temperature, cx.pad)?.logprobs,
            );
            let reference_logp = ref_logp.as_ref().map(to_vec).unwrap_or_default();
            for (k, &i) in rows.iter().enumerate() {
                let len = samples[i].tokens.len().min(m.width);
                kl_sums[i] = (0..len)
                    .map(|j| {
                        let at = k * m.width + j;
                        kl::token_value(
                            reward_estimator,
                            f64::from(policy_logp.get(at).copied().unwrap_or(0.0)),
                            f64::from(reference_logp.get(at).copied().unwrap_or(0.0)),
                        )
                    })
                    .sum();
            }
        }
        refs.push(ref_logp);
        // With several micro-batches the first scores are not kept: each
        // holds its activations, which is what micro-batches bound.
        firsts.push(single.then_some(first));
    }
    let advantages = advantages_of(kl_in_reward.then_some(kl_sums.as_slice()))?;

    // μ iterations over the same completions; one AdamW step each.
    let active_tokens: f32 = micros.iter().map(|(_, m)| m.mask.iter().sum::<f32>()).sum();
    if active_tokens == 0.0 {
        // Every completion token is masked (`mask_truncated`): no loss, and
        // no optimiser step either (AdamW's weight decay and moment decay
        // would still move every weight in a step that trained on nothing).
        updated.stats.entropy_mean = None;
        updated.stats.kl_mean = None;
        updated.seconds_update = t0.elapsed().as_secs_f64();
        return Ok((policy, updated));
    }
    let mut old_logp: Vec<Option<Tensor<AD<B>, 2>>> = vec![None; micros.len()];
    // Without a bonus the entropy is only measured (the metric and the
    // collapse warning), so it carries no gradient.
    let entropy_grad = g.entropy_coef > 0.0;
    for iteration in 0..g.iterations {
        let mut accumulated = GradientsAccumulator::<Model<AD<B>>>::new();
        let mut whole: Option<GradientsParams> = None;
        let mut loss_value = 0.0f32;
        let mut stats = StatsSum::default();
        for (ci, (rows, m)) in micros.iter().enumerate() {
            // On the CPU backend the fused training passes score the
            // completions and give the weights' gradients; the loss's
            // gradients with respect to the scores come from autodiff on
            // the loss alone. Elsewhere autodiff runs through the model.
            let fused = firsts
                .get_mut(ci)
                .and_then(Option::take)
                .unwrap_or_else(|| {
                    fused_completion_scores(&policy, prompts, &m.pairs, cx.temperature)
                })
                .map(|f| {
                    let leaves = f.leaves::<B>(cx.device, entropy_grad);
                    (f, leaves)
                });
            let (logp, entropy) = match &fused {
                Some((_, leaves)) => (leaves.logprobs.clone(), leaves.entropy.clone()),
                None => {
                    let s =
                        completion_logprobs(&policy, prompts, &m.pairs, cx.temperature, cx.pad)?;
                    let entropy = if entropy_grad {
                        s.entropy
                    } else {
                        s.entropy.detach()
                    };
                    (s.logprobs, entropy)
                }
            };
            if g.iterations > 1 && iteration == 0 {
                old_logp[ci] = Some(logp.clone().detach());
            }
            let n = m.pairs.len();
            let mask_t = Tensor::<AD<B>, 2>::from_data(
                TensorData::new(m.mask.clone(), [n, m.width]),
                cx.device,
            );
            let adv_t = Tensor::<AD<B>, 1>::from_data(
                TensorData::new(
                    rows.iter().map(|&i| advantages[i]).collect::<Vec<f32>>(),
                    [n],
                ),
                cx.device,
            );
            let inputs = LossInputs {
                logp,
                old_logp: old_logp[ci].clone(),
                ref_logp: refs[ci].clone(),
                mask: mask_t,
                advantages: adv_t,
                entropy: Some(entropy),
                normaliser: (!single && cx.loss.aggregation == Aggregation::TokenMean)
                    .then_some(active_tokens),
            };
            let out = policy_loss::compute(&inputs, cx.loss, step + 1)?;
            let loss = if single {
                out.loss
            } else {
                out.loss.mul_scalar(micro_weight(
                    cx.loss.aggregation,
                    n,
                    trainable.len(),
                    micros.len(),
                ))
            };
            let value = super::super::fault::loss_at(
                step,
                to_vec(&loss).first().copied().unwrap_or(f32::NAN),
            );
            super::super::ensure_finite(f64::from(value), step, "loss")?;
            loss_value += value;
            stats.add(&out.stats, m.mask.iter().sum());
            let grads = match &fused {
                Some((f, leaves)) => f.backward(leaves, loss),
                None => GradientsParams::from_grads::<AD<B>, _>(loss.backward(), &policy),
            };
            if single {
                whole = Some(grads);
            } else {
                accumulated.accumulate::<AD<B>>(&policy, grads);
            }
        }
        let mut grads = whole.unwrap_or_else(|| accumulated.grads());
        updated.grad_norm =
            clip::clip_global_norm::<AD<B>, _>(&policy, &mut grads, g.max_grad_norm);
        super::super::ensure_finite(updated.grad_norm, step, "gradient norm")?;
        policy = optim.step(lr, policy, grads);
        updated.loss = loss_value;
        updated.stats = stats.mean();
    }
    updated.loss_tokens = active_tokens;
    // On the CPU the reference pass shares the threads with the policy's
    // first pass and its time is inside the update's; elsewhere the passes
    // follow each other and the reference's time is not counted twice.
    updated.seconds_update = t0.elapsed().as_secs_f64()
        - if is_cpu::<B>() {
            0.0
        } else {
            updated.seconds_reference
        };
    Ok((policy, updated))
}

/// The completions `rows` of `samples` as one micro-batch.
fn micro<'s>(samples: &'s [Sample], rows: &[usize], mask_truncated: bool) -> Micro<'s> {
    let pairs: Vec<(usize, &[u32])> = rows
        .iter()
        .map(|&i| (samples[i].group, samples[i].tokens.as_slice()))
        .collect();
    let width = pairs.iter().map(|(_, c)| c.len()).max().unwrap_or(1);
    let mask = rows
        .iter()
        .flat_map(|&i| {
            let s = &samples[i];
            // A truncated completion is left out of the loss entirely.
            let counts = !(mask_truncated && s.finish == FinishReason::Length);
            (0..width).map(move |j| {
                if counts && j < s.tokens.len() {
                    1.0
                } else {
                    0.0
                }
            })
        })
        .collect();
    Micro { pairs, mask, width }
}

/// What a micro-batch of `n` of the step's `total` completions weighs, so
/// that the accumulated gradient is the whole batch's (see the module's
/// docs); `token_mean` is divided by the step's active tokens instead.
fn micro_weight(aggregation: Aggregation, n: usize, total: usize, micros: usize) -> f32 {
    match aggregation {
        Aggregation::TokenMean => 1.0,
        Aggregation::TokenMeanLocal => 1.0 / micros.max(1) as f32,
        Aggregation::SeqMeanTokenMean | Aggregation::SeqSumConst => n as f32 / total.max(1) as f32,
    }
}

/// Loss statistics summed over micro-batches, weighted by active tokens.
#[derive(Default)]
struct StatsSum {
    sums: [f64; 4],
    kl: Option<f64>,
    entropy: Option<f64>,
    ratio_min: Option<f32>,
    ratio_max: Option<f32>,
    tokens: f64,
    last: Option<LossStats>,
    parts: usize,
}

impl StatsSum {
    fn add(&mut self, s: &LossStats, tokens: f32) {
        let w = f64::from(tokens);
        self.sums[0] += f64::from(s.clip_low_fraction) * w;
        self.sums[1] += f64::from(s.clip_high_fraction) * w;
        self.sums[2] += f64::from(s.dual_clip_fraction) * w;
        self.sums[3] += f64::from(s.ratio_mean) * w;
        if let Some(k) = s.kl_mean {
            *self.kl.get_or_insert(0.0) += f64::from(k) * w;
        }
        if let Some(e) = s.entropy_mean {
            *self.entropy.get_or_insert(0.0) += f64::from(e) * w;
        }
        self.ratio_min = Some(self.ratio_min.map_or(s.ratio_min, |m| m.min(s.ratio_min)));
        self.ratio_max = Some(self.ratio_max.map_or(s.ratio_max, |m| m.max(s.ratio_max)));
        self.tokens += w;
        self.last = Some(*s);
        self.parts += 1;
    }

    /// The statistics of the whole batch (one micro-batch's unchanged).
    fn mean(&self) -> LossStats {
        if self.parts == 1 {
            return self.last.unwrap_or_default();
        }
        let t = self.tokens.max(1.0);
        LossStats {
            clip_low_fraction: (self.sums[0] / t) as f32,
            clip_high_fraction: (self.sums[1] / t) as f32,
            dual_clip_fraction: (self.sums[2] / t) as f32,
            ratio_mean: (self.sums[3] / t) as f32,
            ratio_min: self.ratio_min.unwrap_or(0.0),
            ratio_max: self.ratio_max.unwrap_or(0.0),
            kl_mean: self.kl.map(|k| (k / t) as f32),
            entropy_mean: self.entropy.map(|e| (e / t) as f32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_batch_weights_make_the_whole_batch_s_gradient() {
        // Two micro-batches of 3 and 1 completions out of 4.
        assert_eq!(micro_weight(Aggregation::TokenMean, 3, 4, 2), 1.0);
        assert_eq!(micro_weight(Aggregation::SeqMeanTokenMean, 3, 4, 2), 0.75);
        assert_eq!(micro_weight(Aggregation::SeqSumConst, 1, 4, 2), 0.25);
        assert_eq!(micro_weight(Aggregation::TokenMeanLocal, 1, 4, 2), 0.5);
    }

    #[test]
    fn statistics_of_micro_batches_are_token_weighted() {
        let mut sum = StatsSum::default();
        let a = LossStats {
            clip_low_fraction: 0.5,
            ratio_mean: 1.0,
            ratio_min: 0.9,
            ratio_max: 1.1,
            kl_mean: Some(0.2),
            ..LossStats::default()
        };
        let b = LossStats {
            clip_low_fraction: 0.0,
            ratio_mean: 2.0,
            ratio_min: 0.5,
            ratio_max: 3.0,
            kl_mean: Some(0.0),
            ..LossStats::default()
        };
        sum.add(&a, 3.0);
        sum.add(&b, 1.0);
        let m = sum.mean();
        assert!((m.clip_low_fraction - 0.375).abs() < 1e-6);
        assert!((m.ratio_mean - 1.25).abs() < 1e-6);
        assert_eq!((m.ratio_min, m.ratio_max), (0.5, 3.0));
        assert!((m.kl_mean.unwrap_or(f32::NAN) - 0.15).abs() < 1e-6);
        let mut one = StatsSum::default();
        one.add(&a, 7.0);
        assert_eq!(one.mean(), a);
    }
}
