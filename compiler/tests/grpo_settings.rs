//! GRPO settings that change how a step trains, through the real `saferc
//! run` on the shipped warm `tiny_vlm` (examples/models/tiny-safety) and 24
//! rows of the quickstart's data, one step each: micro-batches give the
//! whole batch's gradient; `overlong`, `kl { placement = reward }` and
//! `cost` shape the reward the advantages come from; `multi_objective`
//! changes the advantages of the same completions. A step here samples the
//! same completions whatever these settings, since they act after sampling.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .canonicalize()
        .unwrap()
}

/// A one-step pipeline; `grpo` is added to the `grpo` block.
fn pipeline(grpo: &str) -> String {
    pipeline_with(grpo, None)
}

/// A one-step pipeline whose reference is the policy itself, or, given
/// `init`, model `init`: the untrained `tiny_vlm` in that folder.
fn pipeline_with(grpo: &str, init: Option<&Path>) -> String {
    let ex = examples();
    let (reference, init_model) = match init {
        Some(dir) => (
            "init",
            format!(
                "model init {{\n  arch    = tiny_vlm\n  weights = \"{}\"\n}}\n",
                dir.display()
            ),
        ),
        None => ("policy", String::new()),
    };
    format!(
        r#"use "std/rubrics/safety.safer"

model policy {{
  arch    = tiny_vlm
  weights = "{model}"
}}

{init_model}
dataset d {{
  source = jsonl("{data}")
  images = "{images}"
  limit  = 24
  split {{ train = 1.0 }}
  seed = 7
}}

rollout s {{
  group       = 4
  temperature = 1.0
  max_tokens  = 32 tokens
  format      = think_answer
}}

train t {{
  policy    = policy
  reference = {reference}
  data      = d.train
  rollout   = s
  reward    = safety_rubric
  grpo {{
    lr    = 1e-4
    batch = 2 prompts
{grpo}
  }}
  steps = 1 steps
  seed  = 7
}}
"#,
        model = ex.join("models/tiny-safety").display(),
        data = ex.join("data/qi-safe-mini.jsonl").display(),
        images = ex.join("data/images").display(),
    )
}

/// Runs `grpo`'s pipeline; returns step 1's metrics line and its samples.
fn run(dir: &Path, label: &str, grpo: &str) -> (Value, Vec<Value>) {
    run_text(dir, label, &pipeline(grpo))
}

/// Runs pipeline `text`; returns step 1's metrics line and its samples.
fn run_text(dir: &Path, label: &str, text: &str) -> (Value, Vec<Value>) {
    let file = dir.join(format!("{label}.safer"));
    std::fs::write(&file, text).unwrap();
    let out = dir.join(label);
    let output = Command::new(env!("CARGO_BIN_EXE_saferc"))
        .args(["run", "--no-progress", "--out"])
        .arg(&out)
        .arg(&file)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{label}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines = |name: &str| -> Vec<Value> {
        std::fs::read_to_string(out.join(name))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let metrics = lines("metrics.jsonl").remove(0);
    (metrics, lines("samples.jsonl"))
}

fn number(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number `{key}` in {v}"))
}

fn close(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance * a.abs().max(b.abs()).max(1e-12)
}

#[test]
fn micro_batches_give_the_whole_batch_s_gradient() {
    let dir = common::temp_dir("micro-batches");
    for loss in ["token_mean", "seq_mean_token_mean", "seq_sum_const"] {
        let (whole, whole_samples) = run(
            &dir,
            &format!("{loss}-whole"),
            &format!("    loss = {loss}"),
        );
        let (split, split_samples) = run(
            &dir,
            &format!("{loss}-split"),
            &format!("    loss = {loss}\n    micro_batch = 2 completions"),
        );
        let texts = |s: &[Value]| s.iter().map(|r| r["text"].clone()).collect::<Vec<_>>();
        assert_eq!(texts(&whole_samples), texts(&split_samples));
        let norm = number(&whole, "grad_norm");
        assert!(norm > 1e-6, "{loss}: no gradient to compare: {whole}");
        assert!(
            close(norm, number(&split, "grad_norm"), 1e-4),
            "{loss}: gradient norm {norm} over the whole batch, {} over micro-batches of 2",
            number(&split, "grad_norm")
        );
        assert!(
            (number(&whole, "loss") - number(&split, "loss")).abs() < 1e-6,
            "{loss}: loss {} over the whole batch, {} over micro-batches",
            number(&whole, "loss"),
            number(&split, "loss")
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn overlong_kl_in_the_reward_and_cost_shape_the_reward_advantages_use() {
    let dir = common::temp_dir("shaping");
    let (plain, plain_samples) = run(&dir, "plain", "    kl { beta = 0.04 }");
    assert!(plain.get("shaped_reward").is_none(), "{plain}");
    let (m, samples) = run(
        &dir,
        "shaped",
        "    kl { beta = 0.04, placement = reward }\n    overlong { max = 12 tokens, cache = 8 tokens, factor = 0.5 }\n    cost { criterion = safety, threshold = 0.1, lambda { init = 0.5, lr = 0.1 } }",
    );
    assert_eq!(samples.len(), plain_samples.len());
    let lambda = number(&m, "cost_lambda");
    // The mean cost is the rubric's safety here: λ moves with it at step 1.
    let safety_mean = number(&m["criteria"], "safety");
    let expected_lambda = (0.5f64.ln() + 0.1 * (safety_mean - 0.1) * 0.5).exp();
    assert!(
        close(lambda, expected_lambda, 1e-9),
        "λ {lambda}, expected {expected_lambda}"
    );
    let mut penalised = 0;
    for s in &samples {
        let (reward, overlong, kl) = (
            number(s, "reward"),
            number(s, "overlong"),
            number(s, "kl_reward_penalty"),
        );
        assert!((-0.5..=0.0).contains(&overlong), "{s}");
        penalised += usize::from(overlong < 0.0);
        // The policy is the reference at step 1, and both are scored by
        // the same code: no rounding noise enters the advantages.
        assert_eq!(kl, 0.0, "{s}");
        let expected = (reward + overlong - kl - lambda * number(s, "safety")) / (1.0 + lambda);
        assert!(close(number(s, "shaped_reward"), expected, 1e-9), "{s}");
    }
    assert!(penalised > 0, "no completion reached the overlong zone");
    // Advantages normalise the shaped reward within each group of 4.
    for group in samples.chunks(4) {
        let rewards: Vec<f64> = group.iter().map(|s| number(s, "shaped_reward")).collect();
        let advantages: Vec<f64> = group.iter().map(|s| number(s, "advantage")).collect();
        assert!(
            advantages.iter().sum::<f64>().abs() < 1e-4,
            "{advantages:?}"
        );
        for i in 0..4 {
            for j in 0..4 {
                if rewards[i] > rewards[j] + 1e-9 {
                    assert!(advantages[i] > advantages[j], "{rewards:?} {advantages:?}");
                }
            }
        }
    }
    let plain_advantages: Vec<f64> = plain_samples
        .iter()
        .map(|s| number(s, "advantage"))
        .collect();
    let shaped_advantages: Vec<f64> = samples.iter().map(|s| number(s, "advantage")).collect();
    assert_ne!(plain_advantages, shaped_advantages);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn normalize_then_sum_changes_the_advantages_of_the_same_completions() {
    let dir = common::temp_dir("multi-objective");
    let (_, summed) = run(&dir, "sum", "    multi_objective = sum_then_normalize");
    let (_, decoupled) = run(&dir, "gdpo", "    multi_objective = normalize_then_sum");
    let texts = |s: &[Value]| s.iter().map(|r| r["text"].clone()).collect::<Vec<_>>();
    assert_eq!(texts(&summed), texts(&decoupled));
    let advantages = |s: &[Value]| s.iter().map(|r| number(r, "advantage")).collect::<Vec<_>>();
    let gdpo = advantages(&decoupled);
    assert_ne!(advantages(&summed), gdpo);
    // GDPO's advantages are normalised over the batch.
    let mean = gdpo.iter().sum::<f64>() / gdpo.len() as f64;
    assert!(mean.abs() < 1e-5, "{gdpo:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A KL in the reward sums the declared estimator's per-token values: k2
/// and k3 are never negative, and each estimator gives its own penalties
/// (it used to be k1 whatever `estimator` said). Against the untrained
/// model as the reference, so that the KL is not 0 at step 1.
#[test]
fn a_kl_in_the_reward_takes_its_estimator() {
    let dir = common::temp_dir("kl-reward-estimator");
    // The untrained model the quickstart's warm one started from (as
    // examples/make_quickstart.sh makes it; not committed).
    let init = dir.join("tiny-init");
    common::saferc_ok(&[
        "init-model",
        init.to_str().unwrap(),
        "--size",
        "small",
        "--seed",
        "0",
    ]);
    let mut penalties = Vec::new();
    let mut texts = Vec::new();
    for estimator in ["k1", "k2", "k3"] {
        let grpo = format!("    kl {{ beta = 0.04, placement = reward, estimator = {estimator} }}");
        let (_, samples) = run_text(&dir, estimator, &pipeline_with(&grpo, Some(&init)));
        let values: Vec<f64> = samples
            .iter()
            .map(|s| number(s, "kl_reward_penalty"))
            .collect();
        assert!(
            values.iter().any(|v| v.abs() > 1e-6),
            "{estimator}: no KL: {values:?}"
        );
        if estimator != "k1" {
            assert!(values.iter().all(|&v| v >= 0.0), "{estimator}: {values:?}");
        }
        texts.push(
            samples
                .iter()
                .map(|s| s["text"].clone())
                .collect::<Vec<_>>(),
        );
        penalties.push(values);
    }
    // The same completions (sampling comes first), penalised differently.
    assert!(texts.windows(2).all(|w| w[0] == w[1]));
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        assert_ne!(
            penalties[a], penalties[b],
            "estimators {a} and {b} gave the same penalties"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// GDPO emitted for TRL gives `saferc run`'s advantages: the completions a
/// GDPO step of `saferc run` sampled, scored by the emitted module's
/// `trl_gdpo_rewards()` (one reward per criterion and one for the rest of
/// the total, the batch scored once) and combined with its
/// `trl_gdpo_weights()` by TRL 1.16's `normalize_then_sum` (transcribed
/// below from `GRPOTrainer._compute_advantages`: each reward normalised in
/// its group with Bessel's std and 1e-4, the weighted sum normalised over
/// the batch), equal the advantages `samples.jsonl` logged.
#[test]
fn gdpo_emitted_for_trl_gives_saferc_s_advantages() {
    let dir = common::temp_dir("gdpo-trl");
    let text = pipeline("    multi_objective = normalize_then_sum\n    eps = 1e-4");
    let (_, samples) = run_text(&dir, "gdpo", &text);
    let emitted = dir.join("emitted");
    common::saferc_ok(&[
        "emit",
        dir.join("gdpo.safer").to_str().unwrap(),
        "--target",
        "trl",
        "--out",
        emitted.to_str().unwrap(),
    ]);
    let script = std::fs::read_to_string(emitted.join("train_trl.py")).unwrap();
    assert!(
        script.contains("reward_funcs=safer_reward.trl_gdpo_rewards()")
            && script.contains("multi_objective_aggregation=\"normalize_then_sum\"")
            && script.contains("reward_weights=safer_reward.trl_gdpo_weights()"),
        "{script}"
    );
    let batch: Vec<Value> = samples
        .iter()
        .map(|s| serde_json::json!({"row": s["row"], "text": s["text"]}))
        .collect();
    let program = r#"
import json, math, sys
sys.path.insert(0, sys.argv[1])
import safer_reward

rows = {}
with open(sys.argv[2]) as f:
    for line in f:
        row = json.loads(line)
        rows[row["id"]] = row
batch = json.loads(sys.stdin.read())
scored = []
score_many = safer_reward.Reward.score_many
def counted(self, items, rubric=None):
    scored.append(len(items))
    return score_many(self, items, rubric)
safer_reward.Reward.score_many = counted

funcs = safer_reward.trl_gdpo_rewards()
weights = safer_reward.trl_gdpo_weights()
columns = {"safer_row": [json.dumps(rows[b["row"]]) for b in batch]}
prompts = [[{"role": "user", "content": rows[b["row"]]["question"]}] for b in batch]
completions = [[{"role": "assistant", "content": b["text"]}] for b in batch]
per_func = [f(prompts=prompts, completions=completions, **columns) for f in funcs]

def mean(xs):
    return sum(xs) / len(xs)

def std(xs):  # trl.trainer.utils.nanstd: Bessel-corrected
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs) * len(xs) / (len(xs) - 1))

G = 4
rewards = [0.0] * len(batch)
for values, w in zip(per_func, weights):
    for start in range(0, len(batch), G):
        group = values[start:start + G]
        m, s = mean(group), std(group)
        for j, v in enumerate(group):
            rewards[start + j] += w * (v - m) / (s + 1e-4)
m, s = mean(rewards), std(rewards)
print(json.dumps({
    "names": [f.__name__ for f in funcs],
    "weights": weights,
    "advantages": [(r - m) / (s + 1e-4) for r in rewards],
    "scored": scored,
}))
"#;
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(program)
        .arg(&emitted)
        .arg(examples().join("data/qi-safe-mini.jsonl"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(Value::Array(batch).to_string().as_bytes())
            .unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let got: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        got["names"],
        serde_json::json!([
            "safer/safety",
            "safer/helpful",
            "safer/coherence",
            "safer/rest_of_total"
        ])
    );
    assert_eq!(got["weights"], serde_json::json!([0.5, 0.3, 0.2, 1.0]));
    assert_eq!(
        got["scored"],
        serde_json::json!([samples.len()]),
        "the batch is scored once for the four rewards"
    );
    let trl: Vec<f64> = got["advantages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let saferc: Vec<f64> = samples.iter().map(|s| number(s, "advantage")).collect();
    assert!(
        saferc.iter().any(|a| a.abs() > 0.1),
        "a batch with a learning signal: {saferc:?}"
    );
    for (i, (a, b)) in saferc.iter().zip(&trl).enumerate() {
        assert!((a - b).abs() <= 1e-5, "completion {i}: saferc {a}, TRL {b}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
