//! The verl target: `verl_grpo.yaml`, a Hydra config over verl's
//! `ppo_trainer` defaults with `adv_estimator: grpo` and the stage's
//! settings, and `prepare_verl_data.py`, which writes the stage's splits
//! as the parquet files verl reads (each row's `extra_info.safer_row`
//! carries the row to `safer_reward.compute_score`).
//!
//! Mapping (verl 0.5 and later): `group` → `rollout.n`; `clip_low`/
//! `clip_high` → `clip_ratio_low`/`clip_ratio_high`; `dual_clip` →
//! `clip_ratio_c`; `loss` `token_mean` → `token-mean`,
//! `seq_mean_token_mean` → `seq-mean-token-mean`, `seq_sum_const` →
//! `seq-mean-token-sum-norm`; `advantage` `group_mean` →
//! `norm_adv_by_std_in_grpo: false`; KL in the loss (`use_kl_loss`) `k1`/
//! `k2`/`k3` → `kl`/`mse`/`low_var_kl`, in the reward (`use_kl_in_reward`)
//! the same names in `kl_penalty`; `importance = sequence` → `loss_mode:
//! gspo`; `freeze_vision` → `freeze_vision_tower`. Without `micro_batch` a
//! step is one pass, as in saferc.
//!
//! A `qwen2_5_vl` policy's rows carry their images into the parquet files
//! (each file's bytes in `images`, verl's `image_key`), with one `<image>`
//! placeholder per image before the question's text: the user turn saferc
//! renders.

use super::{quoted, yaml_float};
use safer_ir::plan::{GrpoSpec, Plan, StageSpec};

/// The verl files of `stage`; settings verl lacks go to `notes`.
pub fn files(
    plan: &Plan,
    stage: &StageSpec,
    grpo: &GrpoSpec,
    pipeline: &str,
    notes: &mut Vec<String>,
) -> Vec<(String, String)> {
    let rollout = plan.rollout(stage.rollout.as_ref());
    let model = plan.models.get(&stage.policy);
    let weights = model.map_or_else(String::new, |m| m.weights.clone());
    let vision = model.is_some_and(|m| m.arch == "qwen2_5_vl");
    if let Some(tokenizer) = model.and_then(|m| m.tokenizer.as_ref()) {
        notes.push(format!(
            "model `{}` keeps its tokenizer in {}, apart from its weights: verl loads the tokenizer from `actor_rollout_ref.model.path`; copy the tokenizer's files (`tokenizer.json`, `tokenizer_config.json`) into {} before training",
            stage.policy,
            quoted(tokenizer),
            quoted(&weights)
        ));
    }
    // verl bounds prompts separately and pads every prompt to that bound:
    // the declared context less the completion; else 1024 tokens (4096 with
    // images), less where `config.json`'s positions end sooner.
    let declared = model.and_then(|m| m.context);
    let positions = super::model_positions(&weights);
    let max_prompt = match declared {
        Some(c) => c.saturating_sub(rollout.max_tokens).max(1),
        None => {
            let default = if vision { 4096 } else { 1024 };
            positions.map_or(default, |p| {
                p.saturating_sub(rollout.max_tokens).clamp(1, default)
            })
        }
    };
    if declared.is_none() {
        notes.push(format!(
            "`data.max_prompt_length` is {max_prompt} tokens{}: verl pads every prompt to it and refuses a longer one (its `data.truncation` defaults to `error`; its agent loop cuts a longer text prompt from the left and refuses one with images); declare `context` on model `{}` (prompt and completion together) to set it",
            positions.map_or_else(
                || " (the policy declares no `context`)".to_string(),
                |p| format!(" (the policy declares no `context`; its `config.json` holds {p} positions)")
            ),
            stage.policy
        ));
    }
    if model.is_some_and(|m| m.dtype == "f32") {
        notes.push(format!(
            "model `{}` is `dtype = f32`: verl's defaults train its actor in bf16 mixed precision and sample with vLLM in bf16; set `actor_rollout_ref.actor.fsdp_config.mixed_precision` and `actor_rollout_ref.rollout.dtype` for f32",
            stage.policy
        ));
    }
    let kl = &grpo.kl;
    let kl_type = match kl.estimator.as_str() {
        "k1" => "kl",
        "k2" => "mse",
        _ => "low_var_kl",
    };
    // KL in the reward: the declared estimator's per-token values summed,
    // as verl's `kl_penalty` (k3_corrected is k3 there in both: the
    // completions come from the policy scored).
    // verl's default where the KL is in the loss (it reads no other then).
    let reward_kl_type = match kl.placement == "reward" {
        true => kl_type,
        false => "kl",
    };
    if grpo.multi_objective == "normalize_then_sum" {
        notes.push("`multi_objective = normalize_then_sum` (GDPO) needs one reward per criterion, which verl's GRPO estimator does not take: the emitted reward is the rubric's total, normalised as one (`--target trl` emits GDPO)".into());
    }
    if kl.estimator == "k3_corrected" && kl.beta > 0.0 && kl.placement != "reward" {
        notes.push("KL estimator `k3_corrected`: verl has no importance-corrected k3; the emitted config uses `low_var_kl` (k3)".into());
    }
    let loss_agg = match grpo.loss.as_str() {
        "seq_mean_token_mean" => "seq-mean-token-mean",
        "seq_sum_const" => {
            notes.push("`loss = seq_sum_const` (Dr. GRPO): verl's `seq-mean-token-sum-norm` divides by the padded response length, and before verl's fix of February 2026 (PR #5417) not by the number of sequences, so its gradient is a micro-batch's size times saferc's (clipping by `max_grad_norm` comes sooner)".into());
            "seq-mean-token-sum-norm"
        }
        "token_mean_local" => {
            if grpo.micro_batch.is_none() {
                notes.push("`loss = token_mean_local` without `micro_batch`: one pass per step, so verl's `token-mean` divides by the step's tokens as saferc does".into());
            }
            "token-mean"
        }
        _ => {
            if grpo.micro_batch.is_some() {
                notes.push("`loss = token_mean` with `micro_batch`: verl's legacy FSDP worker divides each micro-batch by its own tokens (saferc's `token_mean_local`); only its newer engine worker divides by the step's tokens".into());
            }
            "token-mean"
        }
    };
    if grpo.importance == "sequence" {
        if grpo.loss != "seq_mean_token_mean" {
            notes.push(format!(
                "`importance = sequence` → verl's `gspo` loss mode: verl 0.9 aggregates it by `loss_agg_mode` as `loss = {}` asks, while earlier releases always aggregated it as `seq-mean-token-mean`",
                grpo.loss
            ));
        }
        if grpo.dual_clip.is_some() {
            notes.push(
                "`dual_clip` with `importance = sequence`: verl's `gspo` loss has no dual clip"
                    .into(),
            );
        }
    }
    if grpo.advantage == "batch_std" {
        notes.push("`advantage = batch_std`: verl's GRPO divides by each group's std; the emitted config does".into());
    }
    if grpo.advantage != "group_mean" && grpo.eps != 1e-6 {
        notes.push(format!(
            "`eps = {}`: verl adds 1e-6 to the group's std",
            grpo.eps
        ));
    }
    if grpo.mask_truncated {
        notes.push("`mask_truncated = true`: verl has no switch for it in `ppo_trainer`; truncated completions are trained on".into());
    }
    if grpo.schedule == "linear" {
        notes.push("`schedule = linear`: verl's actor has `constant` and `cosine`; the emitted config uses `constant`".into());
    }
    if grpo.adam.adam_epsilon != 1e-8 {
        notes.push(format!(
            "`adam_epsilon = {}`: verl's optimiser config has no ε; it uses PyTorch's 1e-8",
            grpo.adam.adam_epsilon
        ));
    }
    if rollout.min_tokens > 0 || !rollout.stop.is_empty() {
        notes.push("`min_tokens` and `stop` are not emitted: verl's rollout config has no such keys (vLLM's sync rollout takes `+actor_rollout_ref.rollout.min_tokens=N` on the command line)".into());
    }
    if rollout.temperature <= 0.0 {
        notes.push("`temperature = 0` (greedy) gives a group of equal completions; the emitted config samples at 1.0".into());
    }
    if grpo.dynamic_sampling.is_some() {
        notes.push(
            "dynamic sampling lives in verl's DAPO recipe, not `main_ppo`: not emitted".into(),
        );
    }
    if vision && stage.freeze_vision {
        notes.push("`freeze_vision` → `actor.freeze_vision_tower: true`, which only the FSDP worker of verl 0.6 and 0.7 applies (with `use_orig_params`); earlier releases lack the key, and the workers of verl 0.8 and later, and its Megatron strategy, accept it but leave the tower trainable".into());
    } else if stage.freeze_vision {
        notes.push("`freeze_vision` is not emitted: the emitted files freeze the vision tower of a `qwen2_5_vl` policy only; freeze the model's tower yourself (`actor.freeze_vision_tower: true` in verl 0.6 and 0.7)".into());
    }
    // Without `micro_batch`, one pass per step, as saferc does (verl's
    // legacy worker averages tokens per micro-batch). On more GPUs it
    // must divide each GPU's share of the step.
    let micro = grpo
        .micro_batch
        .unwrap_or(grpo.batch_prompts * rollout.group)
        .max(1);
    let use_kl = kl.beta > 0.0;
    let steps = stage.steps.map_or_else(|| "null".into(), |s| s.to_string());
    let yaml = format!(
        r#"# Stage `{stage}` of {pipeline_q} on verl (written by `saferc emit --target verl`).
# Run:
#   python prepare_verl_data.py
#   python -m verl.trainer.main_ppo --config-path="$PWD" --config-name=verl_grpo
# The reward is safer_reward.compute_score: the rubric `{reward}` as `saferc run` scores it.
hydra:
  searchpath:
    - pkg://verl.trainer.config
defaults:
  - ppo_trainer
  - _self_

data:
  train_files: data/train.parquet
  val_files: {val_files}
  prompt_key: prompt
{image_key}  train_batch_size: {batch}
  max_prompt_length: {max_prompt}
  max_response_length: {max_tokens}
  seed: {data_seed}

algorithm:
  adv_estimator: grpo
  norm_adv_by_std_in_grpo: {norm_by_std}
  use_kl_in_reward: {kl_in_reward}
  kl_penalty: {reward_kl_type}
  kl_ctrl:
    type: fixed
    kl_coef: {beta}

actor_rollout_ref:
  model:
    path: {weights}
  actor:
    optim:
      lr: {lr}
      weight_decay: {weight_decay}
      betas: [{beta1}, {beta2}]
      lr_warmup_steps: {warmup}
      warmup_style: {schedule}
      clip_grad: {grad_clip}
    grad_clip: {grad_clip}
{freeze}    # a step: {batch} prompts x {group} completions, {micro} completions per pass
    # (on N GPUs a pass must divide each GPU's {batch} x {group} / N)
    ppo_mini_batch_size: {batch}
    ppo_micro_batch_size_per_gpu: {micro}
    ppo_epochs: {iterations}
    clip_ratio_low: {clip_low}
    clip_ratio_high: {clip_high}
    {clip_c_comment}clip_ratio_c: {clip_c}
    loss_agg_mode: {loss_agg}
    entropy_coeff: {entropy}
    use_kl_loss: {kl_in_loss}
    kl_loss_coef: {beta}
    kl_loss_type: {kl_type}
    policy_loss:
      loss_mode: {loss_mode}
  rollout:
    name: vllm
    tensor_model_parallel_size: 1
    log_prob_micro_batch_size_per_gpu: {micro}
    n: {group}
    temperature: {temperature}
    top_p: {top_p}
    top_k: {top_k}

  ref:
    log_prob_micro_batch_size_per_gpu: {micro}

custom_reward_function:
  path: safer_reward.py
  name: compute_score

trainer:
  project_name: saferc
  experiment_name: {stage_q}
  # verl stops at the end of its epochs: enough of them for `steps`
  total_epochs: {epochs}
  total_training_steps: {steps}
  save_freq: {save_freq}
  # saferc scores the held-out split before and after training
  val_before_train: {has_eval}
  test_freq: {test_freq}
  max_actor_ckpt_to_keep: {keep}
  logger: ["console"]
  n_gpus_per_node: 1
  nnodes: 1
"#,
        stage = stage.name,
        pipeline_q = quoted(pipeline),
        stage_q = omegaconf_string(&stage.name),
        reward = stage.reward.as_deref().unwrap_or_default(),
        val_files = if stage.eval_data.is_some() {
            "data/val.parquet"
        } else {
            "data/train.parquet"
        },
        freeze = if vision && stage.freeze_vision {
            "    # `freeze_vision`: the vision tower (`visual`, merger included) takes no gradient\n    freeze_vision_tower: true\n"
        } else {
            ""
        },
        image_key = if vision {
            "  # each row's images (their bytes), one `<image>` in the prompt per image\n  image_key: images\n"
        } else {
            ""
        },
        batch = grpo.batch_prompts,
        max_prompt = max_prompt,
        max_tokens = rollout.max_tokens,
        // verl's `data.seed` shuffles the training rows: the stage's seed
        // (the dataset's deals the splits, in prepare_verl_data.py).
        data_seed = stage.seed,
        norm_by_std = grpo.advantage != "group_mean",
        kl_in_reward = use_kl && kl.placement == "reward",
        kl_in_loss = use_kl && kl.placement != "reward",
        kl_type = kl_type,
        reward_kl_type = reward_kl_type,
        beta = yaml_float(kl.beta),
        weights = omegaconf_string(&weights),
        lr = yaml_float(grpo.lr),
        weight_decay = yaml_float(grpo.weight_decay),
        beta1 = yaml_float(grpo.adam.adam_beta1),
        beta2 = yaml_float(grpo.adam.adam_beta2),
        warmup = grpo.warmup,
        schedule = if grpo.schedule == "cosine" {
            "cosine"
        } else {
            "constant"
        },
        grad_clip = yaml_float(grpo.max_grad_norm),
        micro = micro,
        iterations = grpo.iterations,
        clip_low = yaml_float(grpo.clip_low),
        clip_high = yaml_float(grpo.clip_high),
        // verl always applies dual-clip; without one declared, a bound no
        // ratio reaches leaves the loss as saferc computes it.
        clip_c = yaml_float(grpo.dual_clip.unwrap_or(1.0e9)),
        clip_c_comment = if grpo.dual_clip.is_some() {
            ""
        } else {
            "# no dual clip declared; verl always applies one, so a bound no ratio reaches\n    "
        },
        loss_agg = loss_agg,
        entropy = yaml_float(grpo.entropy_coef),
        loss_mode = if grpo.importance == "sequence" {
            "gspo"
        } else {
            "vanilla"
        },
        group = rollout.group,
        temperature = yaml_float(if rollout.temperature <= 0.0 {
            1.0
        } else {
            rollout.temperature
        }),
        top_p = yaml_float(rollout.top_p),
        top_k = if rollout.top_k == 0 {
            -1
        } else {
            i64::try_from(rollout.top_k).unwrap_or(-1)
        },
        steps = steps,
        epochs = stage.steps.unwrap_or(1).max(1),
        has_eval = stage.eval_data.is_some(),
        // verl scores the validation split at its last step when
        // `test_freq` is positive: once, after training, when it is the
        // step count, or a count no run reaches without `steps`.
        test_freq = match (&stage.eval_data, stage.steps) {
            (Some(_), Some(s)) => s.max(1).to_string(),
            (Some(_), None) => "1000000000".into(),
            (None, _) => "-1".into(),
        },
        save_freq = stage.checkpoint_every.max(1),
        keep = stage.checkpoint_keep.max(1),
    );
    let eval_split = stage
        .eval_data
        .as_ref()
        .map_or_else(|| "None".into(), |s| quoted(&s.to_string()));
    let prepare = format!(
        r#""""Writes stage `{stage}`'s data as verl's parquet files (written by `saferc emit --target verl`).

Run: python prepare_verl_data.py   (SAFER_DATA=PATH reads another copy of the dataset file,
SAFER_IMAGES=DIR its images folder)
Each row keeps the dataset row in `extra_info.safer_row` for safer_reward.compute_score.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safer_reward  # noqa: E402

TRAIN_SPLIT = {train}
EVAL_SPLIT = {eval_split}

{vision_comment}
VISION = {vision}
# What verl reads as a placeholder in the text of a row with images.
PLACEHOLDERS = ("<image>", "<video>", "<audio>")


def row_images(row):
    """The row's images as verl reads them: each one's bytes (`safer_reward.image_bytes`)."""
    if row.images and row.image_files is None:
        sys.exit(f"{{row.origin}}: the data was moved (SAFER_DATA); set SAFER_IMAGES to its images folder")
    return [{{"bytes": safer_reward.image_bytes(path)[0]}} for path in row.image_files or []]


def records(split):
    """The split's rows as verl's records: a chat prompt (with an `<image>`
    per image before the question's text when VISION) and the row."""
    # Rows whose images Pillow cannot decode are bad rows, as saferc skips them.
    check = safer_reward.pillow_check if VISION else None
    rows = safer_reward.split_rows(split, images_passed=VISION, image_check=check)
    out = []
    for i, row in enumerate(rows):
        record = {{
            "data_source": "saferc/" + split,
            "prompt": [{{"role": "user", "content": row.prompt}}],
            "ability": "safety",
            "reward_model": {{"style": "rule", "ground_truth": ""}},
            "extra_info": {{"index": i, "safer_row": json.dumps(row.raw)}},
        }}
        if VISION:
            images = row_images(row)
            # Older verl splits every row's text at placeholders once the
            # column exists, so no question may hold one.
            held = [p for p in PLACEHOLDERS if p in row.prompt]
            if held:
                sys.exit(f"{{row.origin}}: the question holds `{{held[0]}}`, which verl would read as a placeholder")
            record["prompt"][0]["content"] = "<image>" * len(images) + row.prompt
            record["images"] = images
        out.append(record)
    return out


def write(split, path):
    from datasets import Dataset

    rows = records(split)
    Dataset.from_list(rows).to_parquet(path)
    print(f"{{path}}: {{len(rows)}} rows of {{split}}")


if __name__ == "__main__":
    os.makedirs("data", exist_ok=True)
    write(TRAIN_SPLIT, "data/train.parquet")
    if EVAL_SPLIT:
        write(EVAL_SPLIT, "data/val.parquet")
"#,
        stage = stage.name,
        train = quoted(&stage.data.to_string()),
        vision_comment = if vision {
            "# The policy is a vision-language model (`arch = qwen2_5_vl`): each row's images go in the\n# parquet file, an `<image>` per image before the question's text, as `saferc run` puts them."
        } else {
            "# Only a `qwen2_5_vl` policy takes the rows' images here: they are not passed on (the script\n# warns of rows that have them)."
        },
        vision = if vision { "True" } else { "False" },
    );
    vec![
        ("verl_grpo.yaml".into(), yaml),
        ("prepare_verl_data.py".into(), prepare),
    ]
}

/// `s` as a YAML string that OmegaConf (which reads verl's config) takes
/// as written: `${` would start an interpolation, so it is escaped as
/// OmegaConf escapes it (`\${`, its backslash escaped for YAML).
fn omegaconf_string(s: &str) -> String {
    quoted(&s.replace("${", "\\${"))
}

#[cfg(test)]
mod tests {
    use super::omegaconf_string;

    /// `${` is escaped for OmegaConf (`\${`), its backslash for YAML.
    #[test]
    fn interpolations_are_escaped_for_omegaconf() {
        assert_eq!(
            omegaconf_string("/m/${oc.env:HOME}"),
            r#""/m/\\${oc.env:HOME}""#
        );
        assert_eq!(omegaconf_string("/m/$HOME {x}"), r#""/m/$HOME {x}""#);
    }
}
