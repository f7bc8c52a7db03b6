//! Loss aggregation over tokens and completions (length normalisation).
//!
//! | mode | loss | as in |
//! | --- | --- | --- |
//! | `SeqMeanTokenMean` | (1/N) Σ_i (Σ_t m L / Σ_t m) | original GRPO; TRL `grpo` |
//! | `TokenMean` | Σ m L / normaliser (global active tokens, all micro-batches) | DAPO; TRL `dapo`, verl `token-mean` |
//! | `TokenMeanLocal` | Σ m L / Σ m (this micro-batch) | TRL `bnpo` |
//! | `SeqSumConst` | Σ m L / (N · L_max) | Dr. GRPO; TRL `dr_grpo` |
//!
//! `TokenMean` takes the normaliser from the caller so that gradient
//! accumulation over micro-batches gives the same gradient as one big
//! batch; without one it falls back to the micro-batch's own count.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// The aggregation mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    /// Mean over completions of the per-completion token mean.
    SeqMeanTokenMean,
    /// Token sum over the global active-token count.
    TokenMean,
    /// Token sum over this micro-batch's active tokens.
    TokenMeanLocal,
    /// Token sum over N times the maximum completion length.
    SeqSumConst,
}

/// Aggregates a per-token loss `[N, T]` with its mask `[N, T]` to a scalar `[1]`.
pub fn aggregate<B: Backend>(
    mode: Aggregation,
    per_token: Tensor<B, 2>,
    mask: Tensor<B, 2>,
    normaliser: Option<f32>,
    max_completion_length: usize,
) -> Tensor<B, 1> {
    let [n, _] = per_token.dims();
    let masked = per_token * mask.clone();
    match mode {
        Aggregation::SeqMeanTokenMean => {
            let per_seq = masked.sum_dim(1) / mask.sum_dim(1).clamp_min(1.0);
            per_seq.mean()
        }
        Aggregation::TokenMean => match normaliser {
            Some(count) => masked.sum().div_scalar(count.max(1.0)),
            None => masked.sum() / mask.sum().clamp_min(1.0),
        },
        Aggregation::TokenMeanLocal => masked.sum() / mask.sum().clamp_min(1.0),
        Aggregation::SeqSumConst => masked
            .sum()
            .div_scalar((n * max_completion_length.max(1)) as f32),
    }
}
