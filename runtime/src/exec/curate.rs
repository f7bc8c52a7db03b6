//! The `Curate` op (the paper's QI-Box): each prompt is rolled out K times
//! by the curation policy and scored by the rubric; prompts whose score
//! statistics (`mean`, `std`, `min`, `max` of the totals clamped to 0..1,
//! rounded to 9 decimal places) satisfy `keep` stay. The report holds the
//! kept and dropped counts and a 10-bin histogram of the prompt means.

use std::collections::{BTreeMap, BTreeSet};

use burn::tensor::backend::Backend;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use safer_ir::plan::{eval, CurateSpec, Env, Val};
use serde_json::{json, Value};

use super::data::Row;
use super::rollout::{sample, sampling, Policy};
use super::session::Session;
use super::skipped_rows::SkippedRows;
use super::ExecError;
use crate::grpo::advantage::std;

/// Prompts rolled out per generation batch.
const PROMPTS_PER_BATCH: usize = 8;

/// Places the statistics are rounded to.
const STATS_DECIMALS: i32 = 9;

/// A prompt's score statistics, as `keep` reads them.
struct Stats(BTreeMap<&'static str, f64>);

impl Stats {
    /// The statistics of a prompt's rollout totals, each clamped to 0..1.
    /// Totals and statistics are rounded to [`STATS_DECIMALS`] places: a
    /// weighted rubric's total of 0.7 comes out as 0.7000000000000001 or
    /// 0.6999999999999999, and K equal scores must give that mean exactly
    /// and a `std` of 0, or a float's last bit would decide a `keep` at a
    /// band's edge (`mean >= 0.7`, `std > 0`) and the histogram's bin.
    fn of(totals: &[f64]) -> Self {
        let scale = 10f64.powi(STATS_DECIMALS);
        let round = |x: f64| (x * scale).round() / scale;
        let totals: Vec<f64> = totals.iter().map(|t| round(t.clamp(0.0, 1.0))).collect();
        let mean = totals.iter().sum::<f64>() / totals.len().max(1) as f64;
        Self(BTreeMap::from([
            ("mean", round(mean)),
            ("std", round(std(&totals))),
            ("min", totals.iter().copied().fold(f64::INFINITY, f64::min)),
            (
                "max",
                totals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            ),
        ]))
    }
}

impl Env for Stats {
    fn var(&self, name: &str) -> Option<Val> {
        self.0.get(name).map(|v| Val::Num(*v))
    }
}

/// Curates `rows`; returns the kept rows and the report.
///
/// # Errors
/// Model, scoring and `keep` evaluation errors.
pub fn curate<B: Backend>(
    session: &Session<'_, B>,
    dataset: &str,
    rows: Vec<Row>,
    spec: &CurateSpec,
    vocabulary: &BTreeSet<String>,
) -> Result<(Vec<Row>, Value), ExecError> {
    let model = session
        .model_dirs(&spec.policy)?
        .load::<B>(&session.device)?;
    let mut rollout = session.rollout(spec.rollout.as_ref().or_else(|| {
        session
            .plan
            .stages
            .iter()
            .find(|s| s.data.dataset == dataset)
            .and_then(|s| s.rollout.as_ref())
    }));
    rollout.group = spec.rollouts;
    let params = sampling(&rollout);
    let scorer = session.scorer(&spec.rubric, vocabulary)?;
    for line in super::row_fields::warnings(
        session.plan,
        &spec.rubric,
        &rows,
        &format!("`{dataset}` (before curation)"),
    ) {
        crate::stderr_line!("{line}");
    }
    let policy = Policy {
        model: &model.model,
        dir: &model.dir,
        tokenizer: &model.tokenizer,
        config: &model.model.config,
    };
    let seed = session.plan.datasets.get(dataset).map_or(0, |d| d.seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xc0ffee);
    let mut kept = Vec::new();
    let mut histogram = [0usize; 10];
    let mut dropped = 0usize;
    // Rows whose prompt cannot be built or is too long for the model's
    // context are bad rows: skipped (named once, after the last chunk), or
    // the run's end under `on_bad_row = fail`.
    let what = format!("curation of `{dataset}`");
    let mut skipped = SkippedRows::new(&what);
    let fail = session.fails_on_bad_rows(dataset);
    for chunk in rows.chunks(PROMPTS_PER_BATCH) {
        super::stop_if_interrupted(&session.options.interrupt, || {
            format!("curating `{dataset}`")
        })?;
        let (chunk, prompts) = skipped.usable(
            chunk.to_vec(),
            policy.tokenizer,
            policy.config,
            params.max_new_tokens,
            fail,
        )?;
        if chunk.is_empty() {
            continue;
        }
        let completions = sample(&policy, &prompts, spec.rollouts, &params, &mut rng)?;
        let scores =
            scorer.score_completions(&completions, |c| &chunk[c.prompt / spec.rollouts])?;
        for (i, row) in chunk.iter().enumerate() {
            let totals: Vec<f64> = scores[i * spec.rollouts..(i + 1) * spec.rollouts]
                .iter()
                .map(|s| s.total)
                .collect();
            let stats = Stats::of(&totals);
            let mean = stats.0["mean"];
            histogram[((mean * 10.0) as usize).min(9)] += 1;
            let keep = eval(&spec.keep, &stats)
                .and_then(|v| v.truth("`keep`"))
                .map_err(|e| ExecError::Data {
                    dataset: dataset.to_string(),
                    message: format!("curation `keep`: {e}"),
                })?;
            if keep {
                kept.push(row.clone());
            } else {
                dropped += 1;
            }
        }
    }
    skipped.warn();
    crate::stderr_line!(
        "dataset {dataset}: curation kept {} of {} prompts ({} rollouts each)",
        kept.len(),
        kept.len() + dropped,
        spec.rollouts
    );
    let report = json!({
        "rollouts": spec.rollouts,
        "kept": kept.len(),
        "dropped": dropped,
        "skipped_rows": skipped.count(),
        "mean_histogram": {"bins": (0..10).map(|i| format!("{:.1}-{:.1}", i as f64 / 10.0, (i + 1) as f64 / 10.0)).collect::<Vec<_>>(), "counts": histogram},
    });
    Ok((kept, report))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::Stats;

    #[test]
    fn equal_scores_give_their_value_and_no_spread() {
        // 0.1 + 0.2 + ... in floats: sums of weighted terms land a bit off.
        let point_two = 0.1_f64 + 0.1;
        let point_seven = 0.1_f64 * 7.0;
        for (total, k) in [(point_two, 8), (point_seven, 3), (0.8, 6), (1.5, 4)] {
            let stats = Stats::of(&vec![total; k]);
            let want = (total.clamp(0.0, 1.0) * 1e9).round() / 1e9;
            assert_eq!(stats.0["mean"], want, "{total} x{k}");
            assert_eq!(stats.0["std"], 0.0, "{total} x{k}");
            assert_eq!(stats.0["min"], stats.0["max"]);
        }
        let sum_of_eight = (0..8).map(|_| 0.2).collect::<Vec<f64>>();
        assert_eq!(Stats::of(&sum_of_eight).0["mean"], 0.2);
        let spread = Stats::of(&[0.0, 0.0, 1.0]);
        assert!((spread.0["std"] - 0.577_350_269).abs() < 1e-9);
        assert!((spread.0["mean"] - 0.333_333_333).abs() < 1e-12);
    }
}
