//! Choosing the next token from one row of logits: greedy, or temperature,
//! top-k and top-p (nucleus) sampling in transformers' order (temperature,
//! then top-k, then top-p over the renormalised survivors), with a seedable
//! RNG so CPU runs repeat exactly.
//!
//! The log-probability returned with each token is taken under the
//! temperature-scaled distribution before top-k/top-p truncation, the
//! quantity TRL's GRPO recomputes for importance ratios (`logits / T`).
//!
//! A sample is one uniform draw walked over the cumulative weights of the
//! candidates: in token-id order without truncation (no sort), in decreasing
//! order of probability under top-k or top-p, where the truncation needs it.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// How tokens are chosen and when a completion ends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Take the most likely token (temperature, top-k and top-p are ignored).
    pub greedy: bool,
    /// Divides the logits; must be positive unless `greedy`.
    pub temperature: f32,
    /// Keep the smallest set of most likely tokens whose mass reaches `top_p` (1 = off).
    pub top_p: f32,
    /// Keep the `top_k` most likely tokens (0 = off).
    pub top_k: usize,
    /// The most tokens generated per completion.
    pub max_new_tokens: usize,
    /// End-of-sequence tokens are suppressed until this many tokens exist (transformers' `min_new_tokens`).
    pub min_new_tokens: usize,
    /// Extra token ids that end a completion (the tokenizer's EOS ids are always included).
    pub stop_tokens: Vec<u32>,
    /// Strings that end a completion; its text ends with the first one
    /// (which its tokens hold), as transformers' `stop_strings` and vLLM's
    /// `include_stop_str_in_output` give it.
    pub stop_strings: Vec<String>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            greedy: false,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            max_new_tokens: 128,
            min_new_tokens: 0,
            stop_tokens: Vec::new(),
            stop_strings: Vec::new(),
        }
    }
}

impl SamplingParams {
    /// Greedy decoding of up to `max_new_tokens`.
    pub fn greedy(max_new_tokens: usize) -> Self {
        Self {
            greedy: true,
            max_new_tokens,
            ..Self::default()
        }
    }

    /// Checks the ranges; the message names the offending setting.
    pub fn validate(&self) -> Result<(), String> {
        let usable_temperature = self.temperature > 0.0 && self.temperature.is_finite();
        if !self.greedy && !usable_temperature {
            return Err(format!(
                "temperature must be positive (or 0 for greedy decoding), got {}",
                self.temperature
            ));
        }
        let usable_top_p = self.top_p > 0.0 && self.top_p <= 1.0;
        if !usable_top_p {
            return Err(format!("top-p must be in (0, 1], got {}", self.top_p));
        }
        if self.min_new_tokens > self.max_new_tokens {
            return Err(format!(
                "min tokens ({}) exceed max tokens ({})",
                self.min_new_tokens, self.max_new_tokens
            ));
        }
        Ok(())
    }
}

/// The chosen token and its log-probability.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Choice {
    /// The token id.
    pub token: u32,
    /// Its log-probability (temperature-scaled, before truncation).
    pub logprob: f32,
}

/// Chooses a token from `logits` (one row, `[vocab]`); ids in `suppressed`
/// get no probability. NaN logits are treated as impossible tokens.
pub fn choose(
    logits: &[f32],
    params: &SamplingParams,
    suppressed: &[u32],
    rng: &mut impl Rng,
) -> Choice {
    let temperature = if params.greedy {
        1.0
    } else {
        params.temperature
    };
    let mut scaled: Vec<f32> = logits
        .iter()
        .map(|&l| {
            if l.is_nan() {
                f32::NEG_INFINITY
            } else {
                l / temperature
            }
        })
        .collect();
    for &id in suppressed {
        if let Some(slot) = scaled.get_mut(id as usize) {
            *slot = f32::NEG_INFINITY;
        }
    }
    if params.greedy {
        let log_z = log_sum_exp(&scaled);
        let token = argmax(&scaled);
        return Choice {
            token: token as u32,
            logprob: scaled.get(token).map_or(f32::NEG_INFINITY, |l| l - log_z),
        };
    }
    // `exp(l - top)` of every token, computed once for the normaliser and
    // the sampling weights (the same f64 sum `log_sum_exp` takes).
    let top = scaled.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if top == f32::NEG_INFINITY {
        return Choice {
            token: 0,
            logprob: f32::NEG_INFINITY,
        };
    }
    let exps: Vec<f64> = scaled.iter().map(|&l| f64::from(l - top).exp()).collect();
    let log_z = top + exps.iter().sum::<f64>().ln() as f32;
    let logprob_of = |token: usize| scaled.get(token).map_or(f32::NEG_INFINITY, |l| l - log_z);
    // The candidates: every possible token in id order, or, under top-k or
    // top-p, the survivors in decreasing order of probability (both
    // truncations are defined on that order).
    let mut order: Vec<usize> = (0..scaled.len())
        .filter(|&i| scaled[i] > f32::NEG_INFINITY)
        .collect();
    let truncated = params.top_k > 0 || params.top_p < 1.0;
    if truncated {
        let by_probability =
            |a: &usize, b: &usize| scaled[*b].total_cmp(&scaled[*a]).then(a.cmp(b));
        if params.top_k > 0 && params.top_k < order.len() {
            order.select_nth_unstable_by(params.top_k - 1, by_probability);
            order.truncate(params.top_k);
        }
        order.sort_unstable_by(by_probability);
    }
    let mut kept = order.len();
    if params.top_p < 1.0 {
        let total: f64 = order.iter().map(|&i| exps[i]).sum();
        let mut cumulative = 0.0;
        for (n, &i) in order.iter().enumerate() {
            cumulative += exps[i] / total;
            if cumulative >= f64::from(params.top_p) {
                kept = n + 1;
                break;
            }
        }
    }
    let total: f64 = order[..kept].iter().map(|&i| exps[i]).sum();
    let mut target = rng.random::<f64>() * total;
    let mut chosen = order[kept - 1];
    for &i in &order[..kept] {
        if target < exps[i] {
            chosen = i;
            break;
        }
        target -= exps[i];
    }
    Choice {
        token: chosen as u32,
        logprob: logprob_of(chosen),
    }
}

/// The index of the largest value (the first, on ties).
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

/// `log(sum(exp(values)))`, stable.
pub fn log_sum_exp(values: &[f32]) -> f32 {
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return max;
    }
    let sum: f64 = values.iter().map(|&v| f64::from(v - max).exp()).sum();
    max + sum.ln() as f32
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn sampled(logits: &[f32], params: &SamplingParams, n: usize) -> Vec<usize> {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut counts = vec![0; logits.len()];
        for _ in 0..n {
            counts[choose(logits, params, &[], &mut rng).token as usize] += 1;
        }
        counts
    }

    #[test]
    fn greedy_takes_the_maximum_and_reports_its_log_probability() {
        let c = choose(
            &[0.0, 2.0, 1.0],
            &SamplingParams::greedy(1),
            &[],
            &mut ChaCha8Rng::seed_from_u64(0),
        );
        assert_eq!(c.token, 1);
        let expected = 2.0 - (1.0f32 + 2.0f32.exp() + 1.0f32.exp()).ln();
        assert!((c.logprob - expected).abs() < 1e-6);
    }

    #[test]
    fn suppression_removes_tokens() {
        let c = choose(
            &[0.0, 2.0, 1.0],
            &SamplingParams::greedy(1),
            &[1],
            &mut ChaCha8Rng::seed_from_u64(0),
        );
        assert_eq!(c.token, 2);
    }

    #[test]
    fn top_k_and_top_p_restrict_the_support() {
        let logits = [3.0, 2.0, 1.0, 0.0];
        let top_k = SamplingParams {
            top_k: 2,
            ..SamplingParams::default()
        };
        let counts = sampled(&logits, &top_k, 2000);
        assert_eq!(counts[2] + counts[3], 0);
        assert!(counts[1] > 300, "{counts:?}");
        // p = [0.644, 0.237, 0.087, 0.032]: top-p 0.8 keeps the first two.
        let top_p = SamplingParams {
            top_p: 0.8,
            ..SamplingParams::default()
        };
        let counts = sampled(&logits, &top_p, 2000);
        assert_eq!(counts[2] + counts[3], 0, "{counts:?}");
    }

    #[test]
    fn frequencies_follow_the_tempered_distribution() {
        let logits = [1.0, 0.0];
        let params = SamplingParams {
            temperature: 0.5,
            ..SamplingParams::default()
        };
        let counts = sampled(&logits, &params, 20_000);
        let p0 = 1.0 / (1.0 + (-2.0f64).exp()); // softmax([2, 0])[0] = 0.881
        let observed = counts[0] as f64 / 20_000.0;
        assert!((observed - p0).abs() < 0.01, "{observed} vs {p0}");
    }

    #[test]
    fn same_seed_same_tokens() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let params = SamplingParams::default();
        let run = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..20)
                .map(|_| choose(&logits, &params, &[], &mut rng).token)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }
}
