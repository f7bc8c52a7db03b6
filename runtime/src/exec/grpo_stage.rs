//! A GRPO stage: the step loop `Batch → Generate → Score → Reflect →
//! Advantage → RefLogprob → Update → Metrics → Checkpoint`, on the engine
//! in [`crate::grpo`].
//!
//! Shapes: a step has N completions of P prompts (groups contiguous);
//! sequences are prompt + completion, right-padded to T tokens; per-token
//! tensors are `[N, T - 1]` (position t scores token t + 1) and the loss
//! mask keeps completion tokens only.

use std::time::Instant;

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safer_ir::plan::{GrpoSpec, StageSpec};
use serde_json::{json, Value};

use super::checkpoint;
use super::data::Row;
use super::health::Health;
use super::reflect::{reflect, ReflectStats, Sample};
use super::rollout::{oversized_batch_warning, sample, sampling, Policy, PromptCache};
use super::session::{ModelDirs, Session, Trained};
use super::ExecError;
use crate::adamw::AdamWSettings;
use crate::generate::{completion_logprobs, fused_completion_scores, FinishReason, Prompt};
use crate::grpo::advantage::{self, AdvantageConfig, MultiObjective, Scale};
use crate::grpo::aggregate::Aggregation;
use crate::grpo::dynamic_sampling::{keep_groups, Keep};
use crate::grpo::kl::{Clamp, Estimator};
use crate::grpo::policy_loss::{self, Importance, KlInLoss, LossConfig, LossInputs};
use crate::grpo::schedule::{self, Schedule};
use crate::grpo::{clip, to_vec};
use crate::model::on_cpu::is_cpu;
use crate::model::Model;

fn loss_config(g: &GrpoSpec, max_tokens: usize) -> LossConfig {
    LossConfig {
        clip_low: g.clip_low as f32,
        clip_high: g.clip_high as f32,
        dual_clip: g.dual_clip.map(|c| c as f32),
        importance: if g.importance == "sequence" {
            Importance::Sequence
        } else {
            Importance::Token
        },
        aggregation: match g.loss.as_str() {
            "seq_mean_token_mean" => Aggregation::SeqMeanTokenMean,
            "token_mean_local" => Aggregation::TokenMeanLocal,
            "seq_sum_const" => Aggregation::SeqSumConst,
            _ => Aggregation::TokenMean,
        },
        kl: (g.kl.beta > 0.0 && g.kl.placement == "loss").then(|| KlInLoss {
            estimator: estimator(&g.kl.estimator),
            beta: g.kl.beta as f32,
            clamp: Clamp::None,
        }),
        entropy_coef: g.entropy_coef as f32,
        max_completion_length: max_tokens,
        log_ratio_clamp: None,
    }
}

fn estimator(name: &str) -> Estimator {
    match name {
        "k1" => Estimator::K1,
        "k2" => Estimator::K2,
        "k3_corrected" => Estimator::K3Corrected,
        _ => Estimator::K3,
    }
}

/// Trains a stage with GRPO.
///
/// # Errors
/// Any step failure; checkpoints written stay.
pub fn train<B: Backend>(
    session: &mut Session<'_, B>,
    stage: &StageSpec,
    g: &GrpoSpec,
    start: &ModelDirs,
) -> Result<Trained<B>, ExecError> {
    type AD<B> = Autodiff<B>;
    let device = session.device.clone();
    let loaded = start.load::<AD<B>>(&device)?;
    let tokenizer = loaded.tokenizer;
    let policy: Model<AD<B>> = loaded.model;
    let reference: Option<Model<B>> = match (&stage.reference, g.kl.beta > 0.0) {
        (Some(r), true) if *r == stage.policy => Some(policy.valid()),
        (Some(r), true) => Some(session.model_dirs(r)?.load::<B>(&device)?.model),
        _ => None,
    };
    let rollout = session.rollout(stage.rollout.as_ref());
    let params = sampling(&rollout);
    let temperature = if rollout.temperature > 0.0 {
        rollout.temperature as f32
    } else {
        1.0
    };
    let reward_name = stage.reward.clone().ok_or_else(|| {
        ExecError::Usage(format!("stage `{}` has no `reward` rubric", stage.name))
    })?;
    let vocab = session.vocabulary(&stage.data.dataset).clone();
    let rows: Vec<Row> = session.rows(&stage.data)?.to_vec();
    if rows.is_empty() {
        return Err(ExecError::Data {
            dataset: stage.data.dataset.clone(),
            message: format!(
                "the training split of stage `{}` is empty (after filters and curation)",
                stage.name
            ),
        });
    }
    if let Some(warning) =
        oversized_batch_warning(&stage.name, &stage.data, g.batch_prompts, rows.len())
    {
        eprintln!("{warning}");
    }
    let reflection = stage
        .reflection
        .as_ref()
        .and_then(|r| session.plan.reflections.get(r))
        .cloned();
    let total_steps = stage
        .steps
        .unwrap_or_else(|| (rows.len().div_ceil(g.batch_prompts)) as u64);
    let loss_cfg = loss_config(g, rollout.max_tokens);
    let adv_cfg = |group_size| AdvantageConfig {
        group_size,
        scale: match g.advantage.as_str() {
            "group_mean" => Scale::None,
            "batch_std" => Scale::Batch,
            _ => Scale::Group,
        },
        eps: g.eps,
        multi: if g.multi_objective == "normalize_then_sum" {
            MultiObjective::NormalizeThenSum
        } else {
            MultiObjective::SumThenNormalize
        },
    };
    let ck_root = session.run.checkpoints(&stage.name);
    let (mut policy, mut optim, mut state) = checkpoint::start_or_resume::<AD<B>>(
        &ck_root,
        policy,
        AdamWSettings::of(&g.adam, g.weight_decay),
        stage.seed,
        session.options.resume,
        &device,
    )?;
    if session.options.resume {
        // Lines the killed run wrote after its last checkpoint are written again below.
        session.run.rewind(&stage.name, state.step)?;
    }
    let bar = super::report::progress(
        &stage.name,
        total_steps,
        state.step,
        session.options.progress,
    );
    let mut prompt_cache = PromptCache::new(rows.len());
    let mut health = Health::restore(&state.extra).with_bar(bar.as_ref());
    let pad = tokenizer.pad_id;
    let mut last_reward = f64::NAN;
    while state.step < total_steps {
        let step = state.step;
        let started = Instant::now();
        let lr = schedule::lr(
            g.lr,
            Schedule::named(&g.schedule),
            g.warmup,
            total_steps,
            step,
        );
        let inner = policy.for_generation();
        let pol = Policy {
            model: &inner,
            tokenizer: &tokenizer,
            config: &inner.config,
        };
        let scorer = session.scorer(&reward_name, &vocab)?;
        // Batch → Generate → Score → Reflect, with dynamic sampling drawing more prompts.
        let mut kept_rows: Vec<&Row> = Vec::new();
        let mut kept_prompts: Vec<Prompt> = Vec::new();
        let mut kept: Vec<Sample> = Vec::new();
        let mut refl = ReflectStats::default();
        let mut attempts = 0usize;
        let mut drawn_groups = 0usize;
        let (mut t_generate, mut t_score, mut t_reflect) = (0.0f64, 0.0f64, 0.0f64);
        loop {
            attempts += 1;
            let need = g.batch_prompts - kept_rows.len();
            let idx = state.cursor.next(need, rows.len(), stage.seed);
            let batch: Vec<&Row> = idx.iter().map(|&i| &rows[i]).collect();
            let prompts = prompt_cache.get_many(&idx, &rows, &tokenizer, &inner.config)?;
            let t0 = Instant::now();
            let completions = sample(&pol, &prompts, rollout.group, &params, &mut state.rng)?;
            t_generate += t0.elapsed().as_secs_f64();
            let t0 = Instant::now();
            let scores =
                scorer.score_completions(&completions, |c| batch[c.prompt / rollout.group])?;
            let mut samples: Vec<Sample> = completions
                .into_iter()
                .zip(scores)
                .map(|(c, s)| Sample {
                    group: c.prompt / rollout.group,
                    tokens: c.tokens,
                    text: c.text,
                    finish: c.finish,
                    scores: s,
                    reflected: false,
                    before: None,
                })
                .collect();
            t_score += t0.elapsed().as_secs_f64();
            let t0 = Instant::now();
            if let Some(spec) = &reflection {
                let (out, st) = reflect(
                    &pol,
                    spec,
                    &scorer,
                    &batch,
                    samples,
                    &params,
                    &mut state.rng,
                )?;
                samples = out;
                refl.flagged += st.flagged;
                refl.corrected += st.corrected;
                refl.total += st.total;
            }
            t_reflect += t0.elapsed().as_secs_f64();
            drawn_groups += batch.len();
            let keep: Vec<bool> = match &g.dynamic_sampling {
                Some(ds) => {
                    let mode = match ds.band {
                        Some((lo, hi)) => Keep::Band(lo as f32, hi as f32),
                        None => Keep::Varies,
                    };
                    (0..batch.len())
                        .map(|grp| {
                            let vals: Vec<f32> = samples
                                .iter()
                                .filter(|s| s.group == grp)
                                .map(|s| scorer.pick(&s.scores, ds.criterion.as_deref()) as f32)
                                .collect();
                            keep_groups(&vals, vals.len().max(1), mode)
                                .map(|v| v.first().copied().unwrap_or(false))
                        })
                        .collect::<Result<_, _>>()?
                }
                None => vec![true; batch.len()],
            };
            for (grp, row) in batch.iter().enumerate() {
                if !keep[grp] || kept_rows.len() >= g.batch_prompts {
                    continue;
                }
                let new_group = kept_rows.len();
                kept_rows.push(row);
                kept_prompts.push(prompts[grp].clone());
                kept.extend(
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
            let max_attempts = g
                .dynamic_sampling
                .as_ref()
                .map_or(1, |d| d.max_resample + 1);
            if kept_rows.len() >= g.batch_prompts || attempts >= max_attempts {
                break;
            }
        }
        if let Some(ds) = &g.dynamic_sampling {
            if kept_rows.len() < g.batch_prompts {
                health.warn(step, "dynamic_sampling", &format!(
                    "dynamic sampling kept {} of {} groups after {} draws ({} groups drawn) on `{}`; healthy: a full batch within max_resample = {}",
                    kept_rows.len(), g.batch_prompts, attempts, drawn_groups, ds.criterion.as_deref().unwrap_or("reward"), ds.max_resample
                ));
            }
        }
        // Advantage: per group (groups may differ in size with `append`).
        let names: Vec<String> = scorer.criterion_names();
        let mut advantages = Vec::with_capacity(kept.len());
        let mut zero_var = 0usize;
        let groups = kept_rows.len();
        let batch_std = {
            let all: Vec<f64> = kept.iter().map(|s| s.scores.total).collect();
            advantage::std(&all)
        };
        for grp in 0..groups {
            let totals: Vec<f32> = kept
                .iter()
                .filter(|s| s.group == grp)
                .map(|s| s.scores.total as f32)
                .collect();
            let mut cfg = adv_cfg(totals.len());
            let batch_scale = cfg.scale == Scale::Batch;
            if batch_scale {
                cfg.scale = Scale::None;
            }
            let a = advantage::compute(&[totals], &["reward"], &[1.0], &cfg, step + 1)?;
            zero_var += a.zero_variance_groups;
            advantages.extend(a.values.iter().map(|v| {
                if batch_scale {
                    (f64::from(*v) / (batch_std + g.eps)) as f32
                } else {
                    *v
                }
            }));
        }
        // Update (μ iterations over the same samples).
        let mut loss_value = f32::NAN;
        let mut stats = policy_loss::LossStats::default();
        let mut grad_norm = 0.0;
        let (mut t_reference, mut t_update) = (0.0f64, 0.0f64);
        let trainable: Vec<usize> = (0..kept.len())
            .filter(|&i| !kept[i].tokens.is_empty())
            .collect();
        if !trainable.is_empty() && kept_rows.len() == groups {
            let pairs: Vec<(usize, &[u32])> = trainable
                .iter()
                .map(|&i| (kept[i].group, kept[i].tokens.as_slice()))
                .collect();
            // Scored after their group's prompt, run once per group: column j
            // is completion token j.
            let n = pairs.len();
            let width = pairs.iter().map(|(_, c)| c.len()).max().unwrap_or(1);
            let mask: Vec<f32> = pairs
                .iter()
                .flat_map(|(_, c)| (0..width).map(move |j| if j < c.len() { 1.0 } else { 0.0 }))
                .collect();
            let mask_t = Tensor::<AD<B>, 2>::from_data(TensorData::new(mask, [n, width]), &device);
            let adv_t = Tensor::<AD<B>, 1>::from_data(
                TensorData::new(
                    trainable
                        .iter()
                        .map(|&i| advantages[i])
                        .collect::<Vec<f32>>(),
                    [n],
                ),
                &device,
            );
            let mask_t = if g.mask_truncated {
                let truncated: Vec<bool> = trainable
                    .iter()
                    .map(|&i| kept[i].finish == FinishReason::Length)
                    .collect();
                policy_loss::mask_truncated(mask_t, &truncated)
            } else {
                mask_t
            };
            // The reference pass and the policy's first scoring pass read the
            // same completions and do not depend on each other: on the CPU
            // backend they run side by side on the worker threads, each
            // filling the other's idle moments (a step of
            // runtime/benches/grpo_step.safer 0.262 → 0.237 s). Their values
            // do not depend on how the threads are shared. There
            // `time_s.reference` is the reference pass's wall time while it
            // shares the threads, inside `time_s.update`; elsewhere the two
            // phases follow each other.
            let mut reference_pass = || -> Result<Option<Tensor<AD<B>, 2>>, ExecError> {
                let t0 = Instant::now();
                let logp = match &reference {
                    Some(r) => {
                        let s = completion_logprobs(r, &kept_prompts, &pairs, temperature, pad)?;
                        Some(Tensor::<AD<B>, 2>::from_data(
                            s.logprobs.into_data(),
                            &device,
                        ))
                    }
                    None => None,
                };
                t_reference = t0.elapsed().as_secs_f64();
                Ok(logp)
            };
            let mut t0 = Instant::now();
            let first_scores =
                || fused_completion_scores(&policy, &kept_prompts, &pairs, temperature);
            let (ref_logp, first_fused) = if is_cpu::<B>() {
                rayon::join(reference_pass, first_scores)
            } else {
                let ref_logp = reference_pass();
                t0 = Instant::now();
                (ref_logp, first_scores())
            };
            let ref_logp = ref_logp?;
            let mut first_fused = Some(first_fused);
            let mut old_logp: Option<Tensor<AD<B>, 2>> = None;
            // Without a bonus the entropy is only measured (the metric and the
            // collapse warning), so it carries no gradient.
            let entropy_grad = g.entropy_coef > 0.0;
            for iteration in 0..g.iterations {
                // On the CPU backend the fused training passes score the
                // completions and give the weights' gradients; the loss's
                // gradients with respect to the scores come from autodiff on
                // the loss alone. Elsewhere autodiff runs through the model.
                let fused = first_fused
                    .take()
                    .unwrap_or_else(|| {
                        fused_completion_scores(&policy, &kept_prompts, &pairs, temperature)
                    })
                    .map(|f| {
                        let leaves = f.leaves::<B>(&device, entropy_grad);
                        (f, leaves)
                    });
                let (logp, entropy) = match &fused {
                    Some((_, leaves)) => (leaves.logprobs.clone(), leaves.entropy.clone()),
                    None => {
                        let s =
                            completion_logprobs(&policy, &kept_prompts, &pairs, temperature, pad)?;
                        let entropy = if entropy_grad {
                            s.entropy
                        } else {
                            s.entropy.detach()
                        };
                        (s.logprobs, entropy)
                    }
                };
                if g.iterations > 1 && iteration == 0 {
                    old_logp = Some(logp.clone().detach());
                }
                let inputs = LossInputs {
                    logp,
                    old_logp: old_logp.clone(),
                    ref_logp: ref_logp.clone(),
                    mask: mask_t.clone(),
                    advantages: adv_t.clone(),
                    entropy: Some(entropy),
                    normaliser: None,
                };
                let out = policy_loss::compute(&inputs, &loss_cfg, step + 1)?;
                loss_value = super::fault::loss_at(
                    step,
                    to_vec(&out.loss).first().copied().unwrap_or(f32::NAN),
                );
                super::ensure_finite(f64::from(loss_value), step, "loss")?;
                stats = out.stats;
                let mut grads = match &fused {
                    Some((f, leaves)) => f.backward(leaves, out.loss),
                    None => GradientsParams::from_grads::<AD<B>, _>(out.loss.backward(), &policy),
                };
                grad_norm =
                    clip::clip_global_norm::<AD<B>, _>(&policy, &mut grads, g.max_grad_norm);
                super::ensure_finite(grad_norm, step, "gradient norm")?;
                policy = optim.step(lr, policy, grads);
            }
            t_update = t0.elapsed().as_secs_f64();
        }
        // Metrics and samples.
        let n = kept.len().max(1) as f64;
        let reward_mean = kept.iter().map(|s| s.scores.total).sum::<f64>() / n;
        last_reward = reward_mean;
        let mut criteria = serde_json::Map::new();
        for (i, name) in names.iter().enumerate() {
            criteria.insert(
                name.clone(),
                json!(kept.iter().map(|s| s.scores.criteria[i]).sum::<f64>() / n),
            );
        }
        let penalty_names: Vec<String> = scorer
            .spec
            .penalties
            .iter()
            .map(|p| p.name.clone())
            .collect();
        let mut penalties = serde_json::Map::new();
        for (i, name) in penalty_names.iter().enumerate() {
            penalties.insert(
                name.clone(),
                json!(kept.iter().map(|s| s.scores.penalties[i]).sum::<f64>() / n),
            );
        }
        let length_mean = kept.iter().map(|s| s.tokens.len()).sum::<usize>() as f64 / n;
        let truncated = kept
            .iter()
            .filter(|s| s.finish == FinishReason::Length)
            .count() as f64
            / n;
        let elapsed = started.elapsed().as_secs_f64();
        let line = json!({
            "stage": stage.name, "step": step + 1, "lr": lr, "loss": loss_value,
            "reward": reward_mean, "criteria": criteria, "penalties": penalties,
            "format": kept.iter().map(|s| s.scores.format).sum::<f64>() / n,
            "kl": stats.kl_mean, "entropy": stats.entropy_mean,
            "clip_low_fraction": stats.clip_low_fraction, "clip_high_fraction": stats.clip_high_fraction,
            "ratio_mean": stats.ratio_mean, "grad_norm": grad_norm,
            "zero_variance_fraction": zero_var as f64 / groups.max(1) as f64,
            "length_mean": length_mean, "truncated_fraction": truncated,
            "reflection_rate": if refl.total > 0 { refl.flagged as f64 / refl.total as f64 } else { 0.0 },
            "corrected_fraction": if refl.flagged > 0 { refl.corrected as f64 / refl.flagged as f64 } else { 0.0 },
            "groups": groups, "draws": attempts, "step_time_s": elapsed,
            "time_s": {"generate": t_generate, "score": t_score, "reflect": t_reflect, "reference": t_reference, "update": t_update},
        });
        health.check(step, &line, rollout.max_tokens, reflection.is_some());
        session.run.metric(&line)?;
        let sample_lines: Vec<Value> = kept
            .iter()
            .zip(&advantages)
            .map(|(s, a)| {
                let mut o = serde_json::Map::new();
                o.insert("stage".into(), json!(stage.name));
                o.insert("step".into(), json!(step + 1));
                o.insert("group".into(), json!(format!("{}-{}", step + 1, s.group)));
                o.insert("row".into(), json!(kept_rows[s.group].id));
                for (i, name) in names.iter().enumerate() {
                    o.insert(name.clone(), json!(s.scores.criteria[i]));
                }
                for (i, name) in penalty_names.iter().enumerate() {
                    o.insert(format!("penalty.{name}"), json!(s.scores.penalties[i]));
                }
                o.insert("reward".into(), json!(s.scores.total));
                o.insert("advantage".into(), json!(a));
                o.insert("reflection".into(), json!(s.reflected));
                if let Some(b) = &s.before {
                    // A correction: the scores of the completion it corrects.
                    let mut before = serde_json::Map::new();
                    for (i, name) in names.iter().enumerate() {
                        before.insert(name.clone(), json!(b.criteria[i]));
                    }
                    before.insert("reward".into(), json!(b.total));
                    o.insert("before".into(), Value::Object(before));
                }
                o.insert("text".into(), json!(s.text));
                Value::Object(o)
            })
            .collect();
        session.run.samples(&sample_lines)?;
        state.step += 1;
        if let Some(b) = &bar {
            b.set_message(format!(
                "reward {reward_mean:.3} kl {:.4} {elapsed:.1}s/step",
                stats.kl_mean.unwrap_or(0.0)
            ));
            b.inc(1);
        }
        state.extra = health.save();
        checkpoint::at_step_end::<AD<B>, _>(
            &ck_root,
            &start.tokenizer,
            &policy,
            &optim,
            &state,
            (stage.checkpoint_every, total_steps, stage.checkpoint_keep),
            &session.options.interrupt,
        )?;
    }
    super::report::finish(bar, format!("reward {last_reward:.3}"));
    Ok(Trained {
        model: policy.for_generation(),
        summary: json!({"algorithm": "grpo", "steps": total_steps, "final_reward": last_reward, "warnings": health.count()}),
    })
}
