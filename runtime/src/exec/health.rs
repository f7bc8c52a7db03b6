//! Health warnings during GRPO, printed as they happen, each naming the
//! healthy range that was left: every group with zero reward variance, KL
//! spikes (against the steps before) and KL too high (above 1 nat per
//! token at any step), entropy collapse, clip fractions, response lengths, completions
//! that do not follow the rollout's `format`, and reflection that never or
//! always fires. A condition that holds step
//! after step prints once, when it starts, and again only after it has
//! cleared for a step; every step it holds is counted (the stage's
//! `warnings` in `summary.json`). Reflection is judged over windows of
//! `WINDOW` steps: each window that never or always fired prints and
//! counts once. The running window and the streaks are part of the
//! checkpoint, so a resumed run warns as an uninterrupted one would.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Steps over which reflection firing is judged.
const WINDOW: usize = 10;
/// Warning kinds judged over a window of [`WINDOW`] steps (printed once per
/// window while they hold; the window starts afresh after each).
const WINDOWED: &[&str] = &["reflection_never", "reflection_always"];
/// The steps before the current one whose KL sizes a spike is judged
/// against: a jump above [`KL_SPIKE_FACTOR`] times their mean. A window of
/// recent steps, not a running mean of the whole run: KL grows from 0 as
/// the policy leaves the reference, and a slow mean seeded at the first
/// steps' tiny values called that steady growth a spike.
const KL_RECENT: usize = 5;
/// How far above the recent steps' mean a KL is a spike.
const KL_SPIKE_FACTOR: f64 = 5.0;
/// Below this size no KL is a spike (tiny values jump by large factors).
const KL_SPIKE_FLOOR: f64 = 0.05;
/// Above this size (nats per token) KL is too high whatever came before:
/// the policy has left the reference far behind (a spike check alone never
/// fires when KL is that high from the first steps on).
const KL_HIGH: f64 = 1.0;

/// Running health state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Health {
    /// The sizes of the last [`KL_RECENT`] steps' KL, oldest first.
    #[serde(default)]
    kl_recent: Vec<f64>,
    reflection_rates: Vec<f64>,
    warnings: usize,
    /// The last step each kind of warning held.
    #[serde(default)]
    last_held: BTreeMap<String, u64>,
    /// The live progress bar, hidden while a warning prints.
    #[serde(skip)]
    bar: Option<indicatif::ProgressBar>,
}

impl Health {
    /// The state saved in a checkpoint (or fresh).
    pub fn restore(extra: &Value) -> Self {
        serde_json::from_value(extra.clone()).unwrap_or_default()
    }

    /// The state to save.
    pub fn save(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Steps flagged so far, one per warning kind that held.
    pub fn count(&self) -> usize {
        self.warnings
    }

    /// Counts a warning of `kind` at `step` and prints it unless the same
    /// kind held at the step before (a streak prints once); returns the
    /// line printed.
    pub fn warn(&mut self, step: u64, kind: &str, message: &str) -> Option<String> {
        self.warnings += 1;
        let streak = step > 0 && self.last_held.get(kind) == Some(&(step - 1));
        self.last_held.insert(kind.to_string(), step);
        if streak {
            return None;
        }
        // Windowed kinds are judged once per window, so they never streak.
        let suffix = if WINDOWED.contains(&kind) {
            ""
        } else {
            " [not repeated while it lasts]"
        };
        let line = format!("warning: step {}: {message}{suffix}", step + 1);
        match &self.bar {
            Some(bar) => bar.suspend(|| crate::stderr_line!("{line}")),
            None => crate::stderr_line!("{line}"),
        }
        Some(line)
    }

    /// Prints warnings above `bar` instead of through it.
    pub fn with_bar(mut self, bar: Option<&indicatif::ProgressBar>) -> Self {
        self.bar = bar.cloned();
        self
    }

    /// Judges one step's KL: too high in itself, or a spike against the
    /// steps before it (a full window of them).
    fn check_kl(&mut self, step: u64, kl: f64) -> Vec<String> {
        let mut said = Vec::new();
        // Its size: the k1 estimator is signed, and "5x a negative mean"
        // would call any positive value a spike.
        let size = kl.abs();
        if size > KL_HIGH {
            // Its size: a signed estimator's -1.5 is as far as 1.5.
            said.extend(self.warn(step, "kl_high", &format!("KL's size is {size:.3} nats per token; healthy: below {KL_HIGH} (the policy has moved far from the reference: lower lr or raise kl.beta)")));
        } else if self.kl_recent.len() == KL_RECENT {
            let mean = self.kl_recent.iter().sum::<f64>() / KL_RECENT as f64;
            if size > KL_SPIKE_FLOOR && size > KL_SPIKE_FACTOR * mean {
                // After steps of 0 (a reference equal to the policy) no
                // factor says anything.
                let against = if mean > 0.0 {
                    format!(
                        "{:.0}x the mean size of the {KL_RECENT} steps before ({mean:.4})",
                        size / mean
                    )
                } else {
                    format!("after {KL_RECENT} steps of 0")
                };
                said.extend(self.warn(step, "kl_spike", &format!("KL spiked to {kl:.4}, {against}; healthy: within {KL_SPIKE_FACTOR}x of them (lower lr or raise kl.beta)")));
            }
        }
        self.kl_recent.push(size);
        if self.kl_recent.len() > KL_RECENT {
            self.kl_recent.remove(0);
        }
        said
    }

    /// Checks one step's metrics line; returns the warnings it printed.
    pub fn check(
        &mut self,
        step: u64,
        m: &Value,
        max_tokens: usize,
        reflection: bool,
    ) -> Vec<String> {
        let f = |k: &str| m[k].as_f64();
        let mut said = Vec::new();
        if f("zero_variance_fraction").is_some_and(|z| z >= 1.0) {
            said.extend(self.warn(step, "zero_variance", "every group has zero reward variance, so this step has no learning signal; healthy: below 1.0 (raise temperature or group size, or use dynamic_sampling)"));
        }
        if let Some(kl) = f("kl") {
            said.extend(self.check_kl(step, kl));
        }
        if f("loss_tokens").is_some_and(|t| t == 0.0) {
            said.extend(self.warn(step, "no_tokens", "no completion token is in the loss: every completion reached max_tokens and `mask_truncated` masks them, so this step trained on nothing; healthy: completions that end before max_tokens (raise max_tokens, or turn mask_truncated off)"));
        }
        if f("entropy").is_some_and(|e| e < 0.05) {
            said.extend(self.warn(step, "entropy", "token entropy collapsed below 0.05; healthy: above 0.05 (the policy samples one answer; raise temperature or entropy_coef)"));
        }
        let clip = f("clip_low_fraction").unwrap_or(0.0) + f("clip_high_fraction").unwrap_or(0.0);
        if clip > 0.3 {
            said.extend(self.warn(
                step,
                "clip",
                &format!(
                    "{:.1}% of tokens were clipped; healthy: below 30% (lower lr or iterations)",
                    clip * 100.0
                ),
            ));
        }
        if let Some(len) = f("length_mean") {
            if len >= 0.95 * max_tokens as f64 {
                said.extend(self.warn(step, "length_cut", &format!("mean response length {len:.0} is at max_tokens = {max_tokens}; healthy: below 95% of it (responses are being cut)")));
            } else if len < 2.0 {
                said.extend(self.warn(step, "length_short", &format!("mean response length {len:.1} tokens; healthy: at least 2 (the policy stops at once)")));
            }
        }
        if let Some(rate) = f("format_compliance").filter(|r| *r < 0.5) {
            said.extend(self.warn(step, "format", &format!("{:.0}% of completions follow the rollout's `format`; healthy: at least half (warm the policy up with `sft` on answers in that format, or reward it with a rubric `format` term)", rate * 100.0)));
        }
        if reflection {
            if let Some(rate) = f("reflection_rate") {
                self.reflection_rates.push(rate);
                if self.reflection_rates.len() > WINDOW {
                    self.reflection_rates.remove(0);
                }
                if self.reflection_rates.len() == WINDOW {
                    if self.reflection_rates.iter().all(|r| *r == 0.0) {
                        said.extend(self.warn(step, "reflection_never", &format!("reflection has not fired for {WINDOW} steps; healthy: fires on some completions (check its `when`)")));
                        self.reflection_rates.clear();
                    } else if self.reflection_rates.iter().all(|r| *r >= 1.0) {
                        said.extend(self.warn(step, "reflection_always", &format!("reflection fired on every completion for {WINDOW} steps; healthy: below 100% (its `when` may always hold)")));
                        self.reflection_rates.clear();
                    }
                }
            }
        }
        said
    }
}

#[cfg(test)]
mod tests {
    use super::{Health, WINDOW};
    use serde_json::json;

    /// A step whose every metric is in its healthy range.
    fn healthy() -> serde_json::Value {
        json!({"zero_variance_fraction": 0.25, "kl": 0.01, "entropy": 1.2,
               "clip_low_fraction": 0.05, "clip_high_fraction": 0.05, "length_mean": 20.0,
               "reflection_rate": 0.3})
    }

    fn with(key: &str, value: f64) -> serde_json::Value {
        let mut m = healthy();
        m[key] = json!(value);
        m
    }

    /// The one warning `m` raises at `step` after `before` healthy steps.
    fn one_warning(m: &serde_json::Value) -> String {
        let mut health = Health::default();
        for step in 0..6 {
            assert!(health.check(step, &healthy(), 32, true).is_empty());
        }
        let said = health.check(6, m, 32, true);
        assert_eq!(said.len(), 1, "{said:?}");
        assert_eq!(health.count(), 1);
        said[0].clone()
    }

    #[test]
    fn healthy_steps_raise_nothing() {
        let mut health = Health::default();
        for step in 0..3 * WINDOW as u64 {
            assert!(health.check(step, &healthy(), 32, true).is_empty());
        }
        assert_eq!(health.count(), 0);
    }

    #[test]
    fn each_warning_names_the_healthy_range_it_left() {
        for (m, says) in [
            (
                with("zero_variance_fraction", 1.0),
                [
                    "step 7: every group has zero reward variance",
                    "healthy: below 1.0",
                ],
            ),
            (
                with("kl", 0.5),
                [
                    "KL spiked to 0.5000, 50x the mean size of the 5 steps before (0.0100)",
                    "healthy: within 5x of them",
                ],
            ),
            (
                with("kl", 1.5),
                ["KL's size is 1.500 nats per token", "healthy: below 1"],
            ),
            (
                with("entropy", 0.01),
                ["entropy collapsed below 0.05", "healthy: above 0.05"],
            ),
            (
                with("clip_high_fraction", 0.35),
                ["40.0% of tokens were clipped", "healthy: below 30%"],
            ),
            (
                with("length_mean", 31.0),
                [
                    "mean response length 31 is at max_tokens = 32",
                    "healthy: below 95% of it",
                ],
            ),
            (
                with("length_mean", 1.0),
                ["mean response length 1.0 tokens", "healthy: at least 2"],
            ),
        ] {
            let line = one_warning(&m);
            for part in says {
                assert!(line.contains(part), "{line:?} lacks {part:?}");
            }
        }
    }

    #[test]
    fn a_streak_prints_once_and_counts_every_step() {
        let mut health = Health::default();
        let mut lines = Vec::new();
        // Steps 1-4 without variance, a healthy step 5, then step 6 again.
        for step in 0..4 {
            lines.extend(health.check(step, &with("zero_variance_fraction", 1.0), 32, false));
        }
        lines.extend(health.check(4, &healthy(), 32, false));
        lines.extend(health.check(5, &with("zero_variance_fraction", 1.0), 32, false));
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].starts_with("warning: step 1: every group has zero reward variance"));
        assert!(
            lines[0].ends_with("[not repeated while it lasts]"),
            "{lines:?}"
        );
        assert!(lines[1].starts_with("warning: step 6: "), "{lines:?}");
        assert_eq!(health.count(), 5);
        // Two kinds in one streak print once each; the streak survives a checkpoint.
        let mut health = Health::default();
        let both = {
            let mut m = with("zero_variance_fraction", 1.0);
            m["entropy"] = json!(0.01);
            m
        };
        assert_eq!(health.check(0, &both, 32, false).len(), 2);
        let mut resumed = Health::restore(&health.save());
        assert!(resumed.check(1, &both, 32, false).is_empty());
        assert_eq!(resumed.count(), 4);
    }

    #[test]
    fn kl_spikes_wait_for_steps_to_compare_with() {
        // A large KL in the first steps is not a spike: nothing came before.
        let mut health = Health::default();
        assert!(health.check(0, &with("kl", 0.5), 32, false).is_empty());
        assert!(health.check(1, &with("kl", 0.5), 32, false).is_empty());
    }

    /// KL far from the reference is too high whatever came before, from
    /// the first step: a run that diverges at once never spikes.
    #[test]
    fn a_kl_too_high_warns_from_the_first_step() {
        let mut health = Health::default();
        let mut lines = Vec::new();
        // A quickstart variant at lr 3e-3 (a helper's probe): KL by step.
        for (step, kl) in [0.0, 2.32, 3.80, 5.97].into_iter().enumerate() {
            lines.extend(health.check(step as u64, &with("kl", kl), 32, false));
        }
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("warning: step 2: KL's size is 2.320 nats per token"),
            "{lines:?}"
        );
        assert_eq!(health.count(), 3);
    }

    /// KL growing from 0 as the policy learns is not a spike: the
    /// quickstart's KL by step (a helper's probe found a running mean
    /// seeded at the first steps calling it one at steps 5 and 6).
    #[test]
    fn kl_growing_step_by_step_is_not_a_spike() {
        let mut health = Health::default();
        for (step, kl) in [
            0.0, 0.0036, 0.0082, 0.0183, 0.0356, 0.0576, 0.065, 0.08, 0.1,
        ]
        .into_iter()
        .enumerate()
        {
            let said = health.check(step as u64, &with("kl", kl), 32, false);
            assert!(said.is_empty(), "step {}: {said:?}", step + 1);
        }
        // A jump to 5x the steps before it is one.
        let said = health.check(9, &with("kl", 0.6), 32, false);
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(
            said[0].starts_with("warning: step 10: KL spiked to 0.6000"),
            "{said:?}"
        );
        // After steps of exactly 0, the spike says so (no factor).
        let mut health = Health::default();
        for step in 0..5 {
            assert!(health.check(step, &with("kl", 0.0), 32, false).is_empty());
        }
        let said = health.check(5, &with("kl", 0.2), 32, false);
        assert!(
            said[0].contains("KL spiked to 0.2000, after 5 steps of 0;"),
            "{said:?}"
        );
        // A signed estimator's large negative value is too high by its size.
        let said = Health::default().check(0, &with("kl", -1.5), 32, false);
        assert!(said[0].contains("KL's size is 1.500"), "{said:?}");
    }

    #[test]
    fn reflection_that_never_or_always_fires_warns_once_per_window() {
        for (rate, says) in [
            (0.0, "reflection has not fired for 10 steps"),
            (1.0, "reflection fired on every completion for 10 steps"),
        ] {
            let mut health = Health::default();
            let mut lines = Vec::new();
            for step in 0..2 * WINDOW as u64 {
                lines.extend(health.check(step, &with("reflection_rate", rate), 32, true));
            }
            assert_eq!(lines.len(), 2, "{lines:?}");
            assert!(
                lines[0].starts_with("warning: step 10: ") && lines[0].contains(says),
                "{lines:?}"
            );
            assert!(lines[0].contains("healthy: "), "{lines:?}");
            // Judged per window, it says nothing of streaks.
            assert!(!lines[0].contains("[not repeated"), "{lines:?}");
            // Without reflection in the pipeline its rate is not judged.
            let mut health = Health::default();
            for step in 0..2 * WINDOW as u64 {
                assert!(health
                    .check(step, &with("reflection_rate", rate), 32, false)
                    .is_empty());
            }
        }
    }

    #[test]
    fn the_window_survives_a_checkpoint() {
        let mut health = Health::default();
        for step in 0..WINDOW as u64 - 1 {
            assert!(health
                .check(step, &with("reflection_rate", 0.0), 32, true)
                .is_empty());
        }
        let mut resumed = Health::restore(&health.save());
        let said = resumed.check(WINDOW as u64 - 1, &with("reflection_rate", 0.0), 32, true);
        assert_eq!(said.len(), 1, "{said:?}");
    }

    /// A KL spike is judged from step 6 on, against the five steps before
    /// it, as running.md says.
    #[test]
    fn kl_spikes_are_judged_from_step_6() {
        let mut health = Health::default();
        for step in 0..4 {
            assert!(health.check(step, &with("kl", 0.02), 32, false).is_empty());
        }
        // Step 5 (index 4): a spike is not judged yet.
        assert!(health.check(4, &with("kl", 0.5), 32, false).is_empty());
        let mut health = Health::default();
        for step in 0..5 {
            assert!(health.check(step, &with("kl", 0.02), 32, false).is_empty());
        }
        let said = health.check(5, &with("kl", 0.5), 32, false);
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(
            said[0].starts_with("warning: step 6: KL spiked"),
            "{said:?}"
        );
        // A signed estimator (k1) around 0 is judged by its size: no spike
        // in this run's values (whose signed mean is below 0).
        let mut health = Health::default();
        for (step, kl) in [0.0, 0.029, -0.020, -0.015, -0.037, 0.057, 0.06]
            .into_iter()
            .enumerate()
        {
            let said = health.check(step as u64, &with("kl", kl), 32, false);
            assert!(said.is_empty(), "step {}: {said:?}", step + 1);
        }
    }
}
