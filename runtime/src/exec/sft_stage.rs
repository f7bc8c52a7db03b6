//! An SFT stage: supervised fine-tuning on the rows' reference completions
//! (the `field` of the `sft` block, `response` by default), the warm-up
//! before GRPO. The loss is the mean negative log-likelihood of the
//! completion tokens (the end-of-turn token included) given the prompt.
//! With `eval_data`, the same loss on the held-out split before the first
//! step and after the last ([`super::sft_held_out`]).

use std::time::Instant;

use burn::backend::Autodiff;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safer_ir::plan::{SftSpec, StageSpec};
use serde_json::json;

use super::checkpoint;
use super::rollout::{oversized_batch_warning, sequences, PromptCache};
use super::session::{ModelDirs, Session, Trained};
use super::sft_held_out::{target_tokens, HeldOut, Targets};
use super::skipped_rows::usable_prompts;
use super::ExecError;
use crate::adamw::AdamWSettings;
use crate::generate::{fused_completion_scores, sequence_logprobs};
use crate::grpo::schedule::{self, Schedule};
use crate::grpo::{clip, to_vec};
use crate::model::Model;

/// Trains a stage with SFT.
///
/// # Errors
/// Rows without the reference field, model errors, a non-finite loss.
pub fn train<B: Backend>(
    session: &mut Session<'_, B>,
    stage: &StageSpec,
    s: &SftSpec,
    start: &ModelDirs,
) -> Result<Trained<B>, ExecError> {
    type AD<B> = Autodiff<B>;
    let device = session.device.clone();
    let loaded = start.load::<AD<B>>(&device)?;
    let tokenizer = loaded.tokenizer;
    let policy: Model<AD<B>> = super::training_policy(loaded.model, stage);
    // A target that writes out a special token (`<|im_end|>`) would teach
    // the model that control token, not text: a bad row too.
    let Targets {
        usable: rows,
        lacking,
        special,
    } = Targets::of(session.rows(&stage.data)?, &s.field, &tokenizer);
    if let Some((first, token)) = special.first() {
        let message = format!(
            "row {}: the field `{}` that `sft` learns from holds `{token}`, one of the model's special tokens, which would be learnt as that control token",
            first.origin, s.field
        );
        if session.fails_on_bad_rows(&stage.data.dataset) {
            return Err(ExecError::Data {
                dataset: stage.data.dataset.clone(),
                message: format!("bad {message} (the dataset says `on_bad_row = fail`)"),
            });
        }
        crate::stderr_line!(
            "warning: stage {}: {message}; {} such row(s) are skipped",
            stage.name,
            special.len()
        );
    }
    let skipped_special = special.len();
    // A row without the text to learn is a bad row, under its dataset's policy.
    if let Some(first) = lacking.first() {
        let dataset = &stage.data.dataset;
        let fail = session.fails_on_bad_rows(dataset);
        if fail {
            return Err(ExecError::Data {
                dataset: dataset.clone(),
                message: format!(
                    "bad row at {}: no text in the field `{}`, which `sft` learns from (the dataset says `on_bad_row = fail`; `skip` counts and skips such rows)",
                    first.origin, s.field
                ),
            });
        }
        let shown: Vec<&str> = lacking.iter().take(5).map(|r| r.origin.as_str()).collect();
        crate::stderr_line!(
            "warning: stage {}: skipped {} row(s) without text in the field `{}` that `sft` learns from: {}{}",
            stage.name,
            lacking.len(),
            s.field,
            shown.join(", "),
            if lacking.len() > shown.len() { ", ..." } else { "" }
        );
    }
    // Every prompt is built once here (and cached); a row whose prompt
    // cannot be built, or leaves no room for one target token, is skipped
    // by the bad-row policy.
    let context = policy.config.context();
    let (rows, built, unusable) = usable_prompts(
        &format!("stage {}", stage.name),
        rows,
        &tokenizer,
        &policy.config,
        1,
        session.fails_on_bad_rows(&stage.data.dataset),
    )?;
    if rows.is_empty() {
        return Err(ExecError::Data {
            dataset: stage.data.dataset.clone(),
            message: format!(
                "no row of the training split has text in the field `{}` that `sft` learns from and fits the model's context",
                s.field
            ),
        });
    }
    if let Some(warning) = oversized_batch_warning(&stage.name, &stage.data, s.batch, rows.len()) {
        crate::stderr_line!("{warning}");
    }
    let total_steps = stage
        .steps
        .unwrap_or_else(|| (rows.len() * s.epochs).div_ceil(s.batch) as u64);
    let eos = policy.config.eos_token_ids.first().copied().unwrap_or(0);
    // The held-out split is checked with the training split, before a
    // forced resume is committed.
    let held_out = HeldOut::prepare(session, stage, s, &tokenizer, &policy.config)?;
    let ck_root = session.run.checkpoints(&stage.name);
    let (mut policy, mut optim, mut state) = checkpoint::start_or_resume::<AD<B>>(
        &ck_root,
        policy,
        AdamWSettings::of(&s.adam, s.weight_decay),
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
        if let Some(warning) = session.run.rewind(&stage.name, state.step, false)? {
            crate::stderr_line!("{warning}");
        }
    }
    let pad = tokenizer.pad_id;
    let interrupt = &session.options.interrupt;
    let eval_loss_before = loss_before(
        stage,
        held_out.as_ref(),
        (state.step, &state.extra),
        &policy,
        &tokenizer,
        interrupt,
    )?;
    // Kept in the checkpoints, with what it was computed on.
    let extra = |last_loss: f32| match (eval_loss_before, &held_out) {
        (Some(before), Some(h)) => json!({
            "last_loss": last_loss,
            "eval_loss_before": before,
            "eval_loss_identity": h.identity(),
        }),
        _ => json!({ "last_loss": last_loss }),
    };
    let mut progress = super::report::Progress::new(
        &stage.name,
        total_steps,
        state.step,
        session.options.progress,
    );
    let mut prompt_cache = PromptCache::filled(built);
    // A stage resumed at its last step runs no step: its checkpoint keeps
    // the last loss.
    let mut last_loss = state
        .extra
        .get("last_loss")
        .and_then(serde_json::Value::as_f64)
        .map_or(f32::NAN, |l| l as f32);
    let mut warned_cut = false;
    state.extra = extra(last_loss);
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
            s.lr,
            Schedule::named(&s.schedule),
            s.warmup,
            total_steps,
            step,
        );
        let idx = state.cursor.next(s.batch, rows.len(), stage.seed);
        let prompts = prompt_cache.get_many(&idx, &rows, &tokenizer, &policy.config)?;
        let mut targets: Vec<Vec<u32>> = Vec::with_capacity(idx.len());
        for (&i, prompt) in idx.iter().zip(&prompts) {
            let row = &rows[i];
            // `max_tokens`, and at most what the context leaves after the
            // prompt (the default of `max_tokens`); a cut target teaches
            // no end-of-sequence.
            let target = target_tokens(
                &tokenizer,
                &row.text(&s.field).unwrap_or_default(),
                eos,
                prompt.tokens.len(),
                context,
                s.max_tokens,
            )?;
            if target.cut_by_context && !warned_cut {
                let room = context.saturating_sub(prompt.tokens.len());
                // `max_tokens` cuts as asked; the context's cut is said once.
                warned_cut = true;
                crate::stderr_line!(
                    "warning: stage {}: step {}: the target of row {} ({} tokens with end-of-sequence) is cut to the {room} tokens the model's context of {context} leaves after its prompt, so it teaches no end-of-sequence (later cuts are not repeated); healthy: targets that fit (a larger `context`, shorter answers)",
                    stage.name,
                    step + 1,
                    row.origin,
                    target.whole
                );
            }
            targets.push(target.tokens);
        }
        let pairs: Vec<(usize, &[u32])> = targets
            .iter()
            .enumerate()
            .map(|(i, t)| (i, t.as_slice()))
            .collect();
        // Mean negative log-likelihood of the target tokens. On the CPU
        // backend the fused training passes score each target after its
        // prompt and give the weights' gradients; elsewhere autodiff runs
        // through the model over whole sequences.
        let fused = fused_completion_scores(&policy, &prompts, &pairs, 1.0).map(|f| {
            let leaves = f.leaves::<B>(&device, false);
            (f, leaves)
        });
        let (logprobs, mask, width) = match &fused {
            Some((f, leaves)) => {
                let mask: Vec<f32> = targets
                    .iter()
                    .flat_map(|t| (0..f.width).map(move |j| f32::from(u8::from(j < t.len()))))
                    .collect();
                (leaves.logprobs.clone(), mask, f.width)
            }
            None => {
                let (seqs, mask, width, images) = sequences(&prompts, &pairs);
                let scores = sequence_logprobs(&policy, &seqs, images.as_ref(), 1.0, pad)?;
                (scores.logprobs, mask, width)
            }
        };
        let n = pairs.len();
        let mask_t =
            Tensor::<AD<B>, 2>::from_data(TensorData::new(mask.clone(), [n, width]), &device);
        let count: f32 = mask.iter().sum::<f32>().max(1.0);
        let loss = (logprobs * mask_t).sum().neg().div_scalar(count);
        last_loss = super::fault::loss_at(step, to_vec(&loss).first().copied().unwrap_or(f32::NAN));
        super::ensure_finite(f64::from(last_loss), step, "SFT loss")?;
        let mut grads = match &fused {
            Some((f, leaves)) => f.backward(leaves, loss),
            None => GradientsParams::from_grads::<AD<B>, _>(loss.backward(), &policy),
        };
        let grad_norm = clip::clip_global_norm::<AD<B>, _>(&policy, &mut grads, s.max_grad_norm);
        // Stepping would write NaN into every weight.
        super::ensure_finite(grad_norm, step, "SFT gradient norm")?;
        policy = optim.step(lr, policy, grads);
        let elapsed = started.elapsed().as_secs_f64();
        session.run.metric(&json!({
            "stage": stage.name, "step": step + 1, "lr": lr, "loss": last_loss,
            "grad_norm": grad_norm, "tokens": count, "epoch": state.cursor.epochs_done(rows.len()), "step_time_s": elapsed,
        }))?;
        state.step += 1;
        state.extra = extra(last_loss);
        progress.step(format!("loss {last_loss:.3} {elapsed:.2}s/step"));
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
    progress.finish(format!("loss {last_loss:.3}"));
    let mut summary = json!({"algorithm": "sft", "steps": total_steps, "final_loss": last_loss, "skipped_rows": lacking.len() + skipped_special + unusable});
    if let Some(h) = &held_out {
        let after = h.loss(&policy, &tokenizer, interrupt)?;
        if let Some(loss) = after {
            let before = eval_loss_before.map_or(String::new(), |b| format!("{b:.4} → "));
            crate::stderr_line!("stage {}: held-out loss {before}{loss:.4}", stage.name);
        }
        summary["eval_loss"] = h.summary(eval_loss_before, after);
    }
    Ok(Trained {
        model: policy.for_generation(),
        summary,
    })
}

/// The held-out loss before training: computed at the stage's first step;
/// on a stage resumed past it (`(step, kept)`: the checkpoint's step and
/// what it kept), the one its checkpoint kept, where it was computed
/// on the same rows and targets (else unknown: the weights it was computed
/// with are gone). Printed; `None` without a held-out split, or with no row
/// to score (said).
///
/// # Errors
/// Model errors; Ctrl+C while scoring.
fn loss_before<B: burn::tensor::backend::AutodiffBackend>(
    stage: &StageSpec,
    held_out: Option<&HeldOut>,
    (step, kept): (u64, &serde_json::Value),
    policy: &Model<B>,
    tokenizer: &crate::text::TextTokenizer,
    interrupt: &std::sync::atomic::AtomicBool,
) -> Result<Option<f64>, ExecError> {
    let Some(h) = held_out else {
        return Ok(None);
    };
    if step > 0 {
        let same = kept
            .get("eval_loss_identity")
            .and_then(serde_json::Value::as_str)
            == Some(h.identity());
        let before = kept
            .get("eval_loss_before")
            .and_then(serde_json::Value::as_f64);
        if before.is_some() && !same {
            crate::stderr_line!(
                "warning: stage {}: what its held-out loss is computed on changed since the stage started (the split's rows or images, the `field` or `max_tokens`); its loss there before training is not known",
                stage.name
            );
        } else if before.is_none() && !h.is_empty() {
            crate::stderr_line!(
                "warning: stage {}: its held-out loss before training was not recorded when the stage started (it had no `eval_data` then); only the loss after is reported",
                stage.name
            );
        }
        return Ok(before.filter(|_| same));
    }
    let before = h.loss(policy, tokenizer, interrupt)?;
    match before {
        Some(loss) => crate::stderr_line!("stage {}: held-out loss {loss:.4} before training", stage.name),
        None => crate::stderr_line!(
            "warning: stage {}: no row of its held-out split can be scored (see above), so it has no held-out loss",
            stage.name
        ),
    }
    Ok(before)
}
