//! Health warnings during GRPO, printed as they happen, each naming the
//! healthy range that was left: every group with zero reward variance, KL
//! spikes, entropy collapse, clip fractions, response lengths, and
//! reflection that never or always fires. The running window is part of
//! the checkpoint so a resumed run warns as an uninterrupted one would.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Steps over which reflection firing is judged.
const WINDOW: usize = 10;
/// Steps before KL spikes are judged (the running mean starts at 0).
const KL_WARMUP: u64 = 5;

/// Running health state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Health {
    kl_mean: Option<f64>,
    reflection_rates: Vec<f64>,
    warnings: usize,
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

    /// Warnings so far.
    pub fn count(&self) -> usize {
        self.warnings
    }

    /// Prints a warning.
    pub fn warn(&mut self, step: u64, message: &str) {
        self.warnings += 1;
        let line = format!("warning: step {}: {message}", step + 1);
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// Prints warnings above `bar` instead of through it.
    pub fn with_bar(mut self, bar: Option<&indicatif::ProgressBar>) -> Self {
        self.bar = bar.cloned();
        self
    }

    /// Checks one step's metrics line.
    pub fn check(&mut self, step: u64, m: &Value, max_tokens: usize, reflection: bool) {
        let f = |k: &str| m[k].as_f64();
        if f("zero_variance_fraction").is_some_and(|z| z >= 1.0) {
            self.warn(step, "every group has zero reward variance, so this step has no learning signal; healthy: below 1.0 (raise temperature or group size, or use dynamic_sampling)");
        }
        if let Some(kl) = f("kl") {
            if let Some(mean) = self.kl_mean {
                if step >= KL_WARMUP && kl > 0.05 && kl > 5.0 * mean {
                    self.warn(step, &format!("KL spiked to {kl:.4} (running mean {mean:.4}); healthy: within 5x the running mean (lower lr or raise kl.beta)"));
                }
            }
            self.kl_mean = Some(self.kl_mean.map_or(kl, |m| 0.9 * m + 0.1 * kl));
        }
        if f("entropy").is_some_and(|e| e < 0.05) {
            self.warn(step, "token entropy collapsed below 0.05; healthy: above 0.05 (the policy samples one answer; raise temperature or entropy_coef)");
        }
        let clip = f("clip_low_fraction").unwrap_or(0.0) + f("clip_high_fraction").unwrap_or(0.0);
        if clip > 0.3 {
            self.warn(
                step,
                &format!(
                    "{:.0}% of tokens were clipped; healthy: below 30% (lower lr or iterations)",
                    clip * 100.0
                ),
            );
        }
        if let Some(len) = f("length_mean") {
            if len >= 0.95 * max_tokens as f64 {
                self.warn(step, &format!("mean response length {len:.0} is at max_tokens = {max_tokens}; healthy: below 95% of it (responses are being cut)"));
            } else if len < 2.0 {
                self.warn(step, &format!("mean response length {len:.1} tokens; healthy: at least 2 (the policy stops at once)"));
            }
        }
        if reflection {
            if let Some(rate) = f("reflection_rate") {
                self.reflection_rates.push(rate);
                if self.reflection_rates.len() > WINDOW {
                    self.reflection_rates.remove(0);
                }
                if self.reflection_rates.len() == WINDOW {
                    if self.reflection_rates.iter().all(|r| *r == 0.0) {
                        self.warn(step, &format!("reflection has not fired for {WINDOW} steps; healthy: fires on some completions (check its `when`)"));
                        self.reflection_rates.clear();
                    } else if self.reflection_rates.iter().all(|r| *r >= 1.0) {
                        self.warn(step, &format!("reflection fired on every completion for {WINDOW} steps; healthy: below 100% (its `when` may always hold)"));
                        self.reflection_rates.clear();
                    }
                }
            }
        }
    }
}
