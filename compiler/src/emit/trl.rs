//! The TRL target: `train_trl.py`, a script that builds TRL's
//! `GRPOConfig` from the stage's settings and trains with `GRPOTrainer` on
//! the stage's data, `safer_reward.trl_reward` as the reward function.
//!
//! Mapping (TRL ≥ 1.0): `group` → `num_generations`; `clip_low`/`clip_high`
//! → `epsilon`/`epsilon_high`; `loss` `token_mean` → `dapo`,
//! `seq_mean_token_mean` → `grpo`, `token_mean_local` → `bnpo`,
//! `seq_sum_const` → `dr_grpo`; `advantage` `group_std` → `scale_rewards =
//! "group"`, `batch_std` → `"batch"`, `group_mean` → `"none"`; KL `k3` →
//! `beta` with `use_bias_correction_kl = False`, `k3_corrected` → `True`;
//! a step of `batch` prompts × `group` completions → the per-device batch
//! and gradient accumulation (`micro_batch` completions per pass);
//! `freeze_vision` → the model's `visual` set to take no gradient before
//! training; `multi_objective = normalize_then_sum` (GDPO) →
//! `multi_objective_aggregation = "normalize_then_sum"` over one reward
//! function per criterion and one for the rest of the total
//! (`safer_reward.trl_gdpo_rewards`), weighted as `saferc run` weighs them.

use super::{py_float, quoted};
use safer_ir::plan::{GrpoSpec, Plan, RolloutSpec, StageSpec};

/// The TRL files of `stage` (`train_trl.py`); settings TRL lacks go to `notes`.
pub fn files(
    plan: &Plan,
    stage: &StageSpec,
    grpo: &GrpoSpec,
    pipeline: &str,
    notes: &mut Vec<String>,
) -> Vec<(String, String)> {
    let rollout = plan.rollout(stage.rollout.as_ref());
    let policy = plan.models.get(&stage.policy);
    let model = policy.map_or_else(String::new, |m| m.weights.clone());
    let tokenizer = policy
        .and_then(|m| m.tokenizer.as_ref())
        .map_or_else(|| "None".into(), |t| quoted(t));
    let dtype = policy.map_or("f32", |m| m.dtype.as_str());
    let arch = policy.map_or("qwen2", |m| m.arch.as_str());
    let vision = arch == "qwen2_5_vl";
    if stage.freeze_vision && !vision {
        notes.push("`freeze_vision` is not emitted: the emitted script freezes the vision tower of a `qwen2_5_vl` policy only; freeze the model's tower yourself (`model.visual.requires_grad_(False)` before `trainer.train()`)".into());
    }
    let updates = u64::try_from(grpo.iterations.max(1)).unwrap_or(1);
    let mut config: Vec<(&str, String)> = vec![
        ("output_dir", quoted(&format!("trl-{}", stage.name))),
        ("seed", stage.seed.to_string()),
        // TRL counts each of the `iterations` updates of a batch as a step,
        // saferc counts the batch.
        (
            "max_steps",
            stage
                .steps
                .map_or_else(|| "-1".into(), |s| (s * updates).to_string()),
        ),
        ("num_train_epochs", "1".into()),
        ("learning_rate", py_float(grpo.lr)),
        (
            "lr_scheduler_type",
            quoted(scheduler(&grpo.schedule, grpo.warmup)),
        ),
        ("warmup_steps", (grpo.warmup * updates).to_string()),
        ("weight_decay", py_float(grpo.weight_decay)),
        ("adam_beta1", py_float(grpo.adam.adam_beta1)),
        ("adam_beta2", py_float(grpo.adam.adam_beta2)),
        ("adam_epsilon", py_float(grpo.adam.adam_epsilon)),
        ("max_grad_norm", py_float(grpo.max_grad_norm)),
        ("per_device_train_batch_size", "PER_DEVICE".into()),
        ("gradient_accumulation_steps", "ACCUMULATION".into()),
        ("num_generations", rollout.group.to_string()),
        ("max_completion_length", rollout.max_tokens.to_string()),
        ("temperature", py_float(temperature(&rollout, notes))),
        ("top_p", py_float(rollout.top_p)),
        ("top_k", rollout.top_k.to_string()),
        ("num_iterations", grpo.iterations.to_string()),
        ("epsilon", py_float(grpo.clip_low)),
        ("epsilon_high", py_float(grpo.clip_high)),
        ("loss_type", quoted(loss_type(&grpo.loss))),
        ("scale_rewards", quoted(scale_rewards(&grpo.advantage))),
        ("importance_sampling_level", quoted(&grpo.importance)),
        (
            "mask_truncated_completions",
            python_bool(grpo.mask_truncated).into(),
        ),
        (
            "save_steps",
            (stage.checkpoint_every.max(1) * updates).to_string(),
        ),
        ("save_total_limit", stage.checkpoint_keep.max(1).to_string()),
        ("bf16", "BF16".into()),
        ("use_cpu", "not ON_GPU".into()),
        ("logging_steps", "1".into()),
        ("log_completions", "True".into()),
    ];
    let (beta, bias_correction) = kl(grpo, notes);
    config.push(("beta", py_float(beta)));
    config.push((
        "use_bias_correction_kl",
        python_bool(bias_correction).into(),
    ));
    if rollout.min_tokens > 0 {
        config.push((
            "generation_kwargs",
            format!("{{\"min_new_tokens\": {}}}", rollout.min_tokens),
        ));
    }
    if !rollout.stop.is_empty() {
        notes.push(format!(
            "stop strings {:?} are not emitted: TRL stops at the end-of-sequence token and `max_completion_length`",
            rollout.stop
        ));
    }
    if grpo.advantage != "group_mean" && grpo.eps != 1e-4 {
        notes.push(format!(
            "`eps = {}`: TRL adds 1e-4 to the std it divides advantages by",
            grpo.eps
        ));
    }
    if let Some(c) = grpo.dual_clip {
        // TRL's `delta` caps the ratio of the unclipped term, which binds
        // only where the advantage is negative once it exceeds 1 + ε_high:
        // dual-clip's bound.
        if c > 1.0 + grpo.clip_high {
            config.push(("delta", py_float(c)));
        } else {
            notes.push(format!(
                "`dual_clip = {c}` is within the clip range (at most 1 + clip_high): TRL's `delta` would also cap positive advantages there; not emitted"
            ));
        }
    }
    if grpo.entropy_coef != 0.0 {
        config.push(("entropy_coef", py_float(grpo.entropy_coef)));
        // TRL's bonus is each pass's token mean: saferc's
        // `token_mean_local`, and `token_mean` when a step is one pass.
        let same = grpo.loss == "token_mean_local"
            || (grpo.loss == "token_mean" && grpo.micro_batch.is_none());
        if !same {
            notes.push(format!(
                "`entropy_coef = {}`: TRL adds each pass's mean token entropy, while saferc aggregates the bonus as `loss = {}` aggregates the loss{}",
                grpo.entropy_coef,
                grpo.loss,
                if grpo.loss == "token_mean" { " over the whole step" } else { "" }
            ));
        }
    }
    if grpo.dynamic_sampling.is_some() {
        notes.push("dynamic sampling has no TRL setting: every group is trained on".into());
    }
    // GDPO normalises each objective in its group: one reward function per
    // objective, in the order and with the weights `saferc run` uses.
    let gdpo = grpo.multi_objective == "normalize_then_sum";
    if gdpo {
        config.push(("multi_objective_aggregation", quoted("normalize_then_sum")));
        config.push(("reward_weights", "safer_reward.trl_gdpo_weights()".into()));
    }
    let settings: Vec<String> = config
        .iter()
        .map(|(k, v)| format!("    {k}={v},"))
        .collect();
    let eval_split = stage
        .eval_data
        .as_ref()
        .map_or_else(|| "None".into(), |s| quoted(&s.to_string()));
    let script = format!(
        r#""""Stage `{stage}` of {pipeline_q} on TRL's GRPOTrainer (written by `saferc emit --target trl`).

Run: python train_trl.py [MODEL_DIR [TOKENIZER_DIR]]   (accelerate launch train_trl.py for several GPUs)
{reward_line}
"""

import json
import os
import sys

import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safer_reward  # noqa: E402

MODEL = sys.argv[1] if len(sys.argv) > 1 else {model}
# The tokenizer's folder where the model declares one apart from its weights
# (`tokenizer = ...`); None: the model folder's own, as TRL loads it.
TOKENIZER = sys.argv[2] if len(sys.argv) > 2 else {tokenizer}
# The reward module decodes and counts tokens with the policy's tokenizer.
os.environ.setdefault("SAFER_TOKENIZER", TOKENIZER or MODEL)
TRAIN_SPLIT = {train}
EVAL_SPLIT = {eval_split}
# The rollout's stop strings: the held-out completions end at them, as in `saferc run`.
STOP = {stop}
ON_GPU = torch.cuda.is_available()
# The model is declared `dtype = {dtype}`: bf16 training where it is bf16 and the GPU has it.
BF16 = {bf16} and ON_GPU and torch.cuda.is_bf16_supported()

# One optimiser step: {batch} prompts x {group} completions{micro_comment}.
COMPLETIONS = {batch} * {group}
WORLD = int(os.environ.get("WORLD_SIZE", "1"))
PER_PASS = {micro}
if PER_PASS is None:  # no `micro_batch`: one pass per process
    if COMPLETIONS % WORLD:
        sys.exit(f"{{COMPLETIONS}} completions per step do not divide among {{WORLD}} processes")
    PER_PASS = COMPLETIONS // WORLD
if COMPLETIONS % (PER_PASS * WORLD):
    sys.exit(f"{{COMPLETIONS}} completions per step do not divide into passes of {{PER_PASS}} on {{WORLD}} processes")
PER_DEVICE = PER_PASS
ACCUMULATION = COMPLETIONS // (PER_PASS * WORLD)


{vision_comment}
VISION = {vision}


def row_images(row):
    """The row's images in RGB (TRL's processor resizes and patches them)."""
    if row.images and row.image_files is None:
        sys.exit(f"{{row.origin}}: the data was moved (SAFER_DATA); set SAFER_IMAGES to its images folder")
    return [safer_reward.rgb_over_white(path) for path in row.image_files or []]


def examples(split):
    """The split's rows as TRL prompts (chat messages, with the rows' images when VISION);
    `safer_row` keeps each row for the reward."""
    # Rows whose images Pillow cannot decode are bad rows, as saferc skips them.
    check = safer_reward.pillow_check if VISION else None
    rows = safer_reward.split_rows(split, images_passed=VISION, image_check=check)
    out = []
    for row in rows:
        example = {{"prompt": [{{"role": "user", "content": row.prompt}}], "safer_row": json.dumps(row.raw)}}
        if VISION:
            example["images"] = row_images(row)
        out.append(example)
    return Dataset.from_list(out)


config = GRPOConfig(
{settings}
)

def held_out_means(trainer):
    """The held-out split scored as `saferc run` scores it: one greedy
    completion per row (no repetition penalty, at most {max_tokens} tokens, the
    rollout's stop strings), each criterion's mean, the reward's (`reward`)
    and the rows' `count`, as summary.json holds them. TRL's own `evaluate()`
    samples `num_generations` completions per prompt at the training
    temperature instead. Every process scores its share of the rows."""
    from contextlib import nullcontext

    from transformers import GenerationConfig
    from trl.models import unwrap_model_for_generation

    reward = safer_reward.reward()
    criteria, _ = reward.names()
    check = safer_reward.pillow_check if VISION else None
    rows = safer_reward.split_rows(EVAL_SPLIT, images_passed=VISION, image_check=check)
    accelerator = trainer.accelerator
    mine = rows[accelerator.process_index :: accelerator.num_processes]
    processing = trainer.processing_class
    tokenizer = getattr(processing, "tokenizer", processing)
    sums = [0.0] * (len(criteria) + 1)
    wrapped = trainer.model_wrapped
    with unwrap_model_for_generation(wrapped, accelerator) as model:
        # The end tokens `saferc run` stops at: the generation config's,
        # else the model config's.
        ends = model.generation_config.eos_token_id
        if ends is None:
            text_config = getattr(model.config, "text_config", None)
            ends = getattr(model.config, "eos_token_id", None) or getattr(text_config, "eos_token_id", None)
        ends = set(ends if isinstance(ends, list) else [] if ends is None else [ends])
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(ends, default=0)
        greedy = GenerationConfig(
            do_sample=False,
            max_new_tokens={max_tokens},
            min_new_tokens={min_tokens},
            eos_token_id=sorted(ends) or None,
            pad_token_id=pad,
            repetition_penalty=1.0,
        )
        stops = {{"stop_strings": STOP, "tokenizer": tokenizer}} if STOP else {{}}
        was_training = model.training
        model.eval()
        full = None
        if trainer.is_fsdp_enabled:
            from torch.distributed.fsdp import FullyShardedDataParallel

            full = FullyShardedDataParallel.summon_full_params(wrapped, recurse=False)
        with full or nullcontext():
            for row in mine:
                images = row_images(row) if VISION else []
                content = row.prompt
                if images:
                    content = [{{"type": "image"}} for _ in images] + [{{"type": "text", "text": row.prompt}}]
                text = processing.apply_chat_template(
                    [{{"role": "user", "content": content}}], add_generation_prompt=True, tokenize=False
                )
                if images:
                    inputs = processing(text=[text], images=[images], return_tensors="pt")
                else:
                    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
                inputs = inputs.to(model.device)
                with torch.no_grad():
                    out = model.generate(**inputs, generation_config=greedy, **stops)
                ids = out[0, inputs["input_ids"].shape[1] :].tolist()
                # The completion runs to its end token, which saferc counts.
                for i, token in enumerate(ids):
                    if token in ends:
                        ids = ids[: i + 1]
                        break
                completion = tokenizer.decode(ids, skip_special_tokens=True)
                # The text ends with the first stop string, as saferc cuts it
                # (the token that completed it may run past it).
                found = [(completion.find(s), completion.find(s) + len(s)) for s in STOP if s and s in completion]
                if found:
                    completion = completion[: min(found)[1]]
                scores = reward.score(row, completion, len(ids))
                for i, value in enumerate(scores["criteria"] + [scores["total"]]):
                    sums[i] += value
        if was_training:
            model.train()
    totals = accelerator.reduce(
        torch.tensor(sums + [len(mine)], dtype=torch.float64, device=accelerator.device), reduction="sum"
    ).tolist()
    count = int(totals[-1])
    means = {{name: (total / count if count else None) for name, total in zip(criteria + ["reward"], totals)}}
    means["count"] = count
    return means


def processing_class():
    """The declared tokenizer folder's tokenizer (with its chat template), padded
    and truncated on the left as TRL loads a model folder's own; for a vision
    policy inside the model folder's processor, whose image settings saferc reads
    there too. None when there is no such folder."""
    if TOKENIZER is None:
        return None
    from transformers import AutoProcessor, AutoTokenizer

    # `tokenizer = "tok/tokenizer.json"` names the file: its folder holds the rest.
    folder = os.path.dirname(TOKENIZER) if os.path.isfile(TOKENIZER) else TOKENIZER
    tokenizer = AutoTokenizer.from_pretrained(folder, truncation_side="left", padding_side="left")
    if not VISION:
        return tokenizer
    processor = AutoProcessor.from_pretrained(
        MODEL, tokenizer=tokenizer, truncation_side="left", padding_side="left"
    )
    if tokenizer.chat_template:
        processor.chat_template = tokenizer.chat_template
    return processor


trainer = GRPOTrainer(
    model=MODEL,
    processing_class=processing_class(),
    reward_funcs={reward_funcs},
    args=config,
    train_dataset=examples(TRAIN_SPLIT),
)
{freeze}main = trainer.accelerator.is_main_process
evaluated = {{}}
if EVAL_SPLIT:
    evaluated["before"] = held_out_means(trainer)
    if main:
        print("held-out before:", evaluated["before"])
trainer.train()
if EVAL_SPLIT:
    evaluated["after"] = held_out_means(trainer)
    if main:
        print("held-out after:", evaluated["after"])
        # As `saferc run`'s summary.json holds them.
        with open(os.path.join(config.output_dir, "safer_eval.json"), "w") as f:
            json.dump({{"eval": evaluated}}, f, indent=2)
trainer.save_model(config.output_dir)
"#,
        stage = stage.name,
        pipeline_q = quoted(pipeline),
        reward_line = match gdpo {
            false => format!(
                "The reward is safer_reward.trl_reward: the rubric `{}` as `saferc run` scores it.",
                stage.reward.as_deref().unwrap_or_default()
            ),
            true => format!(
                "The rewards are safer_reward.trl_gdpo_rewards(): the rubric `{}` as `saferc run` scores it,\none reward per criterion and one for the rest of the total, normalised each in its group (GDPO).",
                stage.reward.as_deref().unwrap_or_default()
            ),
        },
        reward_funcs = match gdpo {
            false => "safer_reward.trl_reward",
            true => "safer_reward.trl_gdpo_rewards()",
        },
        model = quoted(&model),
        tokenizer = tokenizer,
        train = quoted(&stage.data.to_string()),
        batch = grpo.batch_prompts,
        group = rollout.group,
        micro = grpo
            .micro_batch
            .map_or_else(|| "None".into(), |m| m.max(1).to_string()),
        micro_comment = grpo
            .micro_batch
            .map_or_else(String::new, |m| format!(", {m} completions per pass")),
        settings = settings.join("\n"),
        dtype = dtype,
        bf16 = python_bool(dtype == "bf16"),
        vision_comment = if vision {
            "# The policy is a vision-language model (`arch = qwen2_5_vl`): the rows' images go to TRL,\n# which puts them before the question's text in the user turn, as `saferc run` does."
        } else {
            "# Only a `qwen2_5_vl` policy takes the rows' images here: they are not passed on (the script\n# warns of rows that have them)."
        },
        vision = python_bool(vision),
        stop = python_strings(&rollout.stop),
        max_tokens = rollout.max_tokens,
        min_tokens = rollout.min_tokens,
        freeze = if vision && stage.freeze_vision {
            "# `freeze_vision`: the vision tower (`visual`, merger included) takes no gradient. Frozen\n# before train() builds the optimiser, which leaves out weights that take none.\nprint(f\"froze {safer_reward.freeze_vision_tower(trainer.model)} weights of the vision tower\")\n"
        } else {
            ""
        },
    );
    vec![("train_trl.py".into(), script)]
}

/// `items` as a Python list of strings.
fn python_strings(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quoted(s)).collect();
    format!("[{}]", quoted.join(", "))
}

fn python_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

/// TRL's sampling temperature: a greedy rollout (0) samples at 1 there,
/// since TRL always samples.
fn temperature(rollout: &RolloutSpec, notes: &mut Vec<String>) -> f64 {
    if rollout.temperature <= 0.0 {
        notes.push("`temperature = 0` (greedy) gives a group of equal completions; TRL always samples, so the emitted config uses 1.0".into());
        1.0
    } else {
        rollout.temperature
    }
}

fn scheduler(schedule: &str, warmup: u64) -> &'static str {
    match schedule {
        "linear" => "linear",
        "cosine" => "cosine",
        _ if warmup > 0 => "constant_with_warmup",
        _ => "constant",
    }
}

fn loss_type(loss: &str) -> &'static str {
    match loss {
        "seq_mean_token_mean" => "grpo",
        "token_mean_local" => "bnpo",
        "seq_sum_const" => "dr_grpo",
        _ => "dapo",
    }
}

fn scale_rewards(advantage: &str) -> &'static str {
    match advantage {
        "batch_std" => "batch",
        "group_mean" => "none",
        _ => "group",
    }
}

/// TRL's `beta` and `use_bias_correction_kl`: TRL has the k3 estimator in
/// the loss only.
fn kl(grpo: &GrpoSpec, notes: &mut Vec<String>) -> (f64, bool) {
    let kl = &grpo.kl;
    if kl.beta == 0.0 {
        return (0.0, false);
    }
    if kl.placement == "reward" {
        notes.push(format!(
            "KL in the reward (`placement = reward`): TRL puts KL in the loss only; the emitted config has beta {} in the loss, estimator k3",
            kl.beta
        ));
    } else if kl.estimator == "k1" || kl.estimator == "k2" {
        notes.push(format!(
            "KL estimator `{}`: TRL has k3 only; the emitted config uses k3",
            kl.estimator
        ));
    }
    (kl.beta, kl.estimator == "k3_corrected")
}
