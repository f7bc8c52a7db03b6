//! A GRPO stage: the step loop `Batch → Generate → Score → Reflect →
//! Advantage → RefLogprob → Update → Metrics → Checkpoint`, on the engine
//! in [`crate::grpo`]. Drawing the groups is [`draw`], shaping rewards and
//! advantages [`shaping`], the reference pass and the update [`update`],
//! the lines written [`step_log`].
//!
//! Shapes: a step has N completions of P prompts (groups contiguous);
//! per-token tensors are `[N, T]` (column j scores completion token j after
//! its group's prompt) and the loss mask keeps completion tokens only.

mod draw;
mod shaping;
mod step_log;
mod update;

use std::time::Instant;

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::tensor::backend::Backend;
use safer_ir::plan::{CostSpec, GrpoSpec, StageSpec};
use serde_json::{json, Value};

use super::checkpoint;
use super::data::Row;
use super::health::Health;
use super::rollout::{oversized_batch_warning, sampling, Policy, PromptCache};
use super::session::{ModelDirs, Session, Trained};
use super::skipped_rows::usable_prompts;
use super::ExecError;
use crate::adamw::AdamWSettings;
use crate::grpo::advantage::{AdvantageConfig, MultiObjective, Scale};
use crate::grpo::aggregate::Aggregation;
use crate::grpo::cost::{CostConfig, Lagrangian};
use crate::grpo::kl::{Clamp, Estimator};
use crate::grpo::policy_loss::{Importance, KlInLoss, LossConfig};
use crate::grpo::schedule::{self, Schedule};
use crate::model::Model;
use shaping::{Shaped, Shaping};
use step_log::StepRecord;

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

fn advantage_config(g: &GrpoSpec) -> AdvantageConfig {
    AdvantageConfig {
        // Set per group: groups differ in size with `keep = append`.
        group_size: 1,
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
    }
}

/// The cost constraint's multiplier, as the checkpoint's `extra` left it on
/// a resumed run.
fn cost_constraint(c: &CostSpec, extra: &Value) -> Lagrangian {
    let cfg = CostConfig {
        threshold: c.threshold,
        lambda_init: c.lambda_init,
        lambda_lr: c.lambda_lr,
        lambda_max: c.lambda_max,
        window: c.window,
        delay: c.delay,
    };
    match extra.get("cost") {
        Some(saved) => Lagrangian::restored(
            cfg,
            saved["log_lambda"]
                .as_f64()
                .unwrap_or(c.lambda_init.max(1e-12).ln()),
            saved["window"]
                .as_array()
                .map(|w| w.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default(),
        ),
        None => Lagrangian::new(cfg),
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
    // The reference is taken from the policy readied for training (its
    // vision tower's weights copied contiguous), so that at step 1 both
    // hold the same weights: their log-probs are equal and the KL is 0,
    // with no rounding noise (the run case `kl_zero_at_first_step` pins
    // it). It only scores, so its weights are kept in the layout scoring
    // reads fastest, which gives the same numbers as the policy's (the
    // update's KL-in-reward copies of the policy take it too).
    let policy: Model<AD<B>> = super::training_policy(loaded.model, stage);
    let reference: Option<Model<B>> = match (&stage.reference, g.kl.beta > 0.0) {
        (Some(r), true) if *r == stage.policy => Some(policy.valid().with_scoring_layout()),
        (Some(r), true) => Some(
            session
                .model_dirs(r)?
                .load::<B>(&device)?
                .model
                .with_scoring_layout(),
        ),
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
    // The KL term scores every completion under the reference with its
    // prompt's images: a text-only reference cannot, and would stop the
    // first step with an error naming no model.
    if let (Some(r), Some(name)) = (&reference, &stage.reference) {
        let text_only = r.config.is_text_only();
        if let Some(row) = rows.iter().find(|row| text_only && !row.images.is_empty()) {
            return Err(ExecError::Usage(format!(
                "row {} has {} image(s), and the reference model `{name}` of stage `{}` takes text only (a `qwen2` model): the KL term scores each completion under it with its prompt's images; use a vision-language reference (`tiny_vlm` or `qwen2_5_vl`), or a dataset whose rows have no images",
                row.origin,
                row.images.len(),
                stage.name
            )));
        }
    }
    // Every prompt is built once here (and cached): rows whose prompt
    // cannot be built, or leaves no room for `max_tokens`, are skipped by
    // the dataset's bad-row policy.
    let (rows, built, unusable) = usable_prompts(
        &format!("stage {}", stage.name),
        rows,
        &tokenizer,
        &policy.config,
        rollout.max_tokens,
        session.fails_on_bad_rows(&stage.data.dataset),
    )?;
    if rows.is_empty() {
        return Err(ExecError::Data {
            dataset: stage.data.dataset.clone(),
            message: format!(
                "every row of `{}`, the training split of stage `{}`, was skipped (the warnings above say why: too long for the context, or a prompt that cannot be built); nothing is left to train on",
                stage.data, stage.name
            ),
        });
    }
    if let Some(warning) =
        oversized_batch_warning(&stage.name, &stage.data, g.batch_prompts, rows.len())
    {
        crate::stderr_line!("{warning}");
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
    let adv_cfg = advantage_config(g);
    let kl_in_reward = reference.is_some() && g.kl.placement == "reward";
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
        checkpoint::within_steps(&stage.name, state.step, total_steps)?;
    }
    // The stage's checks passed, its checkpoint among them: a forced
    // resume's pipeline is the run's now.
    session.run.commit_forced()?;
    if session.options.resume {
        // Lines the killed run wrote after its last checkpoint are written again below.
        if let Some(warning) = session.run.rewind(&stage.name, state.step, true)? {
            crate::stderr_line!("{warning}");
        }
    }
    let mut progress = super::report::Progress::new(
        &stage.name,
        total_steps,
        state.step,
        session.options.progress,
    );
    let mut prompt_cache = PromptCache::filled(built);
    let mut health = Health::restore(&state.extra).with_bar(progress.bar());
    let mut cost = g.cost.as_ref().map(|c| cost_constraint(c, &state.extra));
    let pad = tokenizer.pad_id;
    // A resumed stage takes the judge counts and last reward its checkpoint
    // kept (a stage resumed at its last step runs no step to set them).
    if let Some(counts) = state.extra.get("judges") {
        session.restore_judge_counts(counts);
    }
    let mut last_reward = state
        .extra
        .get("last_reward")
        .and_then(Value::as_f64)
        .unwrap_or(f64::NAN);
    while state.step < total_steps {
        checkpoint::at_step_start::<AD<B>, _>(
            &ck_root,
            &start.tokenizer,
            (&policy, &optim),
            &state,
            (&stage.name, stage.checkpoint_keep),
            &session.options.interrupt,
        )?;
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
            dir: &start.weights,
            tokenizer: &tokenizer,
            config: &inner.config,
        };
        let scorer = session.scorer(&reward_name, &vocab)?;
        // The state before this step's draws: an interrupt that ends the
        // step before its update (a judge waiting to retry) checkpoints it,
        // and the resumed run draws the step again as it would have.
        let at_start = state.clone();
        let drawn = draw::draw(
            &draw::Rollouts {
                policy: &pol,
                scorer: &scorer,
                rollout: &rollout,
                params: &params,
                reflection: reflection.as_ref(),
                dynamic_sampling: g.dynamic_sampling.as_ref(),
                batch_prompts: g.batch_prompts,
                seed: stage.seed,
                interrupt: &session.options.interrupt,
            },
            &rows,
            &mut prompt_cache,
            &mut state,
        );
        // A checkpoint of the state before this step's draws, for a step
        // that ends before its update (an interrupt, a scoring failure).
        let save_step_start = || {
            checkpoint::save_unless_there::<AD<B>, _>(
                &ck_root,
                &start.tokenizer,
                &policy,
                &optim,
                &at_start,
                stage.checkpoint_keep,
            )
        };
        let drawn = match drawn {
            Err(e)
                if session
                    .options
                    .interrupt
                    .load(std::sync::atomic::Ordering::SeqCst) =>
            {
                crate::stderr_line!("step {}: {e}", step + 1);
                let checkpoint = save_step_start()?;
                return Err(ExecError::Interrupted { checkpoint });
            }
            // A judge or scorer that fails for good (a judge answering 400,
            // a reply without a score) stops the run with the steps trained
            // so far checkpointed, as an interrupt does: a resume after the
            // fix draws this step again instead of training from the last
            // `every` checkpoint.
            Err(ExecError::Score(why)) if step > 0 => {
                match save_step_start() {
                    Ok(checkpoint) => crate::stderr_line!(
                        "step {}: scoring failed; the {step} step{} trained {} saved in {} (fix the cause, then resume with `--resume`)",
                        step + 1,
                        if step == 1 { "" } else { "s" },
                        if step == 1 { "is" } else { "are" },
                        checkpoint.display()
                    ),
                    Err(e) => crate::stderr_line!(
                        "warning: step {}: scoring failed, and saving the {step} step{} trained failed too: {e}",
                        step + 1,
                        if step == 1 { "" } else { "s" }
                    ),
                }
                return Err(ExecError::Score(why));
            }
            other => other?,
        };
        if let Some(ds) = &g.dynamic_sampling {
            if drawn.rows.len() < g.batch_prompts {
                health.warn(step, "dynamic_sampling", &format!(
                    "dynamic sampling kept {} of {} groups after {} draws ({} groups drawn) on `{}`; healthy: a full batch within max_resample = {}",
                    drawn.rows.len(), g.batch_prompts, drawn.draws, drawn.drawn_groups, ds.criterion.as_deref().unwrap_or("reward"), ds.max_resample
                ));
            }
        }
        let names: Vec<String> = scorer.criterion_names();
        let penalty_names: Vec<String> = scorer
            .spec
            .penalties
            .iter()
            .map(|p| p.name.clone())
            .collect();
        let criterion_weights: Vec<f64> = scorer.spec.criteria.iter().map(|c| c.weight).collect();
        // The cost constraint's λ moves with this step's costs before it
        // weighs them (Safe RLHF's PPO-Lagrangian).
        let cost_now = match (&mut cost, &g.cost) {
            (Some(lagrangian), Some(spec)) => {
                let index = names.iter().position(|n| *n == spec.criterion).ok_or_else(|| {
                    ExecError::Usage(format!(
                        "stage `{}`: the cost criterion `{}` is not a criterion of the reward rubric `{reward_name}` (it has {})",
                        stage.name,
                        spec.criterion,
                        names.join(", ")
                    ))
                })?;
                let costs: Vec<f32> = drawn
                    .samples
                    .iter()
                    .map(|s| s.scores.criteria.get(index).copied().unwrap_or(0.0) as f32)
                    .collect();
                lagrangian.observe(&costs);
                let lambda = lagrangian.update(step);
                Some((index, lambda, lagrangian.mean_cost()))
            }
            _ => None,
        };
        let shaping = Shaping {
            overlong: g.overlong.as_ref(),
            kl_beta: kl_in_reward.then_some(g.kl.beta),
            cost: cost_now.map(|(i, lambda, _)| (i, lambda)),
        };
        let mut shaped = Shaped::default();
        let mut step_advantages = None;
        let (new_policy, updated) = update::update(
            &update::UpdateContext {
                grpo: g,
                loss: &loss_cfg,
                reference: reference.as_ref(),
                reference_is_policy: step == 0 && stage.reference.as_ref() == Some(&stage.policy),
                temperature,
                pad,
                device: &device,
            },
            policy,
            &mut optim,
            &drawn.prompts,
            &drawn.samples,
            step,
            lr,
            |kl_sums| {
                shaped = shaping::shape(&drawn.samples, kl_sums, &shaping);
                let a = shaping::advantages(
                    &drawn.samples,
                    &shaped,
                    &shaping,
                    &criterion_weights,
                    &adv_cfg,
                    step,
                )?;
                let values = a.values.clone();
                step_advantages = Some(a);
                Ok(values)
            },
        )?;
        policy = new_policy;
        let advantages = step_advantages.ok_or_else(|| {
            ExecError::Usage(format!(
                "stage `{}`: step {} computed no advantages",
                stage.name,
                step + 1
            ))
        })?;
        let row_ids: Vec<String> = drawn.rows.iter().map(|r| r.id.clone()).collect();
        let record = StepRecord {
            stage: &stage.name,
            step: step + 1,
            lr,
            criteria: &names,
            penalties: &penalty_names,
            samples: &drawn.samples,
            row_ids: &row_ids,
            shaped: &shaped,
            advantages: &advantages.values,
            zero_variance_groups: advantages.zero_variance_groups,
            groups: drawn.rows.len(),
            draws: drawn.draws,
            reflection: drawn.reflection,
            update: &updated,
            seconds: drawn.seconds,
            step_seconds: started.elapsed().as_secs_f64(),
            shaping_terms: (g.overlong.is_some(), kl_in_reward),
            cost: cost_now.map(|(_, lambda, mean)| (lambda, mean)),
            format: &rollout.format,
        };
        let line = step_log::metrics_line(&record);
        last_reward = line["reward"].as_f64().unwrap_or(f64::NAN);
        health.check(step, &line, rollout.max_tokens, reflection.is_some());
        session.run.metric(&line)?;
        session.run.samples(&step_log::sample_lines(&record))?;
        state.step += 1;
        // No KL term (no reference): `kl -`, not a measured 0.
        let kl = updated
            .stats
            .kl_mean
            .map_or_else(|| "-".to_string(), |k| format!("{k:.4}"));
        progress.step(format!(
            "reward {last_reward:.3} kl {kl} {:.1}s/step",
            record.step_seconds
        ));
        state.extra = health.save();
        if let Value::Object(extra) = &mut state.extra {
            extra.insert("judges".into(), session.judge_counts());
            extra.insert("last_reward".into(), json!(last_reward));
            if let Some(lagrangian) = &cost {
                let (log_lambda, window) = lagrangian.state();
                extra.insert(
                    "cost".into(),
                    json!({"log_lambda": log_lambda, "window": window}),
                );
            }
        }
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
    progress.finish(format!("reward {last_reward:.3}"));
    Ok(Trained {
        model: policy.for_generation(),
        summary: json!({"algorithm": "grpo", "steps": total_steps, "final_reward": last_reward, "warnings": health.count(), "skipped_rows": unusable}),
    })
}
