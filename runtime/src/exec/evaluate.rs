//! Scoring a model on a split: one greedy completion per row (so that
//! scores before and after training compare the models, not the draws;
//! a rollout gives only its `max_tokens`, `min_tokens` and `stop`), scored
//! by a rubric; means per criterion and of the
//! reward, overall and per value of the rows' `label` field (so that
//! helpfulness on benign prompts can be read apart from safety on harmful
//! ones).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

use burn::tensor::backend::Backend;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use safer_ir::plan::RolloutSpec;
use serde_json::{json, Map, Value};

use super::data::Row;
use super::rollout::{sample, sampling, Policy};
use super::rubric::{RubricScorer, Scores};
use super::session::Loaded;
use super::skipped_rows::SkippedRows;
use super::{stop_if_interrupted, ExecError};
use crate::generate::SamplingParams;

/// Rows scored per generation batch.
const BATCH: usize = 32;

/// Evaluates `model` on `rows`; rows too long for the context are skipped,
/// or stop it with `fail_on_bad_rows` (the dataset's `on_bad_row = fail`).
///
/// # Errors
/// Model and scoring errors; with `fail_on_bad_rows`, a row too long.
pub fn evaluate<B: Backend>(
    model: &Loaded<B>,
    rows: &[Row],
    scorer: &RubricScorer<'_>,
    rollout: Option<&RolloutSpec>,
    seed: u64,
    fail_on_bad_rows: bool,
    interrupt: &AtomicBool,
) -> Result<Value, ExecError> {
    let params = match rollout {
        Some(r) => SamplingParams {
            greedy: true,
            ..sampling(r)
        },
        None => SamplingParams::greedy(safer_ir::plan::SCORING_MAX_TOKENS),
    };
    let policy = Policy {
        model: &model.model,
        dir: &model.dir,
        tokenizer: &model.tokenizer,
        config: &model.model.config,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut scores: Vec<(String, Scores)> = Vec::with_capacity(rows.len());
    // Each row's completion and scores, for `eval_samples.jsonl`.
    let mut completions_scored: Vec<Value> = Vec::with_capacity(rows.len());
    let names = scorer.criterion_names();
    let penalty_names: Vec<&str> = scorer
        .spec
        .penalties
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    // Rows whose prompt cannot be built or is too long for the context are
    // skipped (and named once, after the last chunk), not the whole
    // evaluation stopped.
    let mut skipped = SkippedRows::new("evaluation");
    for chunk in rows.chunks(BATCH) {
        stop_if_interrupted(interrupt, || "evaluating".into())?;
        let (chunk, prompts) = skipped.usable(
            chunk.to_vec(),
            policy.tokenizer,
            policy.config,
            params.max_new_tokens,
            fail_on_bad_rows,
        )?;
        if chunk.is_empty() {
            continue;
        }
        let completions = sample(&policy, &prompts, 1, &params, &mut rng)?;
        let s = scorer.score_completions(&completions, |c| &chunk[c.prompt])?;
        for ((row, sc), completion) in chunk.iter().zip(s).zip(&completions) {
            let label = row.text("label").unwrap_or_default();
            let mut line = Map::new();
            line.insert("row".into(), json!(row.origin));
            line.insert("id".into(), json!(row.id));
            // No label: null (as the row has none), not "".
            line.insert("label".into(), json!(row.text("label")));
            for (name, value) in names.iter().zip(&sc.criteria) {
                line.insert(name.clone(), json!(value));
            }
            for (name, value) in penalty_names.iter().zip(&sc.penalties) {
                line.insert(format!("penalty.{name}"), json!(value));
            }
            line.insert("reward".into(), json!(sc.total));
            line.insert("text".into(), json!(completion.text));
            completions_scored.push(Value::Object(line));
            scores.push((label, sc));
        }
    }
    skipped.warn();
    // Means over no rows are `null`, not 0: an empty split scores nothing.
    let mean = |values: Vec<f64>| -> Value {
        if values.is_empty() {
            Value::Null
        } else {
            json!(values.iter().sum::<f64>() / values.len() as f64)
        }
    };
    let means = |subset: &[&Scores]| -> Value {
        let mut m = Map::new();
        for (i, name) in names.iter().enumerate() {
            m.insert(
                name.clone(),
                mean(subset.iter().map(|s| s.criteria[i]).collect()),
            );
        }
        m.insert(
            "reward".into(),
            mean(subset.iter().map(|s| s.total).collect()),
        );
        m.insert("count".into(), json!(subset.len()));
        Value::Object(m)
    };
    let all: Vec<&Scores> = scores.iter().map(|(_, s)| s).collect();
    let mut by_label: BTreeMap<String, Vec<&Scores>> = BTreeMap::new();
    // Where some rows have a label, those without one are counted too,
    // under a key no label is likely to be, so that the counts add up to
    // the means' count (a dataset without labels has no `by_label`).
    let labelled = scores.iter().any(|(label, _)| !label.is_empty());
    for (label, s) in scores.iter().filter(|_| labelled) {
        let key = if label.is_empty() { NO_LABEL } else { label };
        by_label.entry(key.to_string()).or_default().push(s);
    }
    Ok(json!({
        "means": means(&all),
        "by_label": by_label.iter().map(|(k, v)| (k.clone(), means(v))).collect::<Map<String, Value>>(),
        "skipped_rows": skipped.count(),
        COMPLETIONS: completions_scored,
    }))
}

/// The key of an evaluation's result that holds each row's completion and
/// scores: written to `eval_samples.jsonl`, left out of `summary.json`.
pub const COMPLETIONS: &str = "completions";

/// `result` without its completions (what `summary.json` shows).
pub fn without_completions(result: &Value) -> Value {
    let mut shown = result.clone();
    if let Value::Object(o) = &mut shown {
        o.remove(COMPLETIONS);
    }
    shown
}

/// The lines of `eval_samples.jsonl` for one evaluation's `result`: each
/// completion with `scored` (what was scored, and when) in front.
pub fn sample_lines(scored: &Map<String, Value>, result: &Value) -> Vec<Value> {
    result[COMPLETIONS]
        .as_array()
        .into_iter()
        .flatten()
        .map(|line| {
            let mut out = scored.clone();
            if let Value::Object(fields) = line {
                out.extend(fields.clone());
            }
            Value::Object(out)
        })
        .collect()
}

/// The `by_label` key of the rows that have no `label` (or an empty one).
pub const NO_LABEL: &str = "(no label)";

/// One line for the console: `safety 0.42, helpful 0.61, reward 0.30 (n = 40)`.
pub fn describe(result: &Value) -> String {
    let Some(m) = result["means"].as_object() else {
        return String::new();
    };
    let parts: Vec<String> = m
        .iter()
        .filter(|(k, _)| k.as_str() != "count")
        .map(|(k, v)| match v.as_f64() {
            Some(x) => format!("{k} {x:.3}"),
            None => format!("{k} -"),
        })
        .collect();
    format!(
        "{} (n = {})",
        parts.join(", "),
        m.get("count").and_then(Value::as_u64).unwrap_or(0)
    )
}
