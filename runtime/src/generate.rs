//! Generation and scoring: batched sampling with a KV cache
//! ([`generation`], its batch split across threads by `shard`), the token
//! choice ([`sampling`]), and the differentiable per-token log-probs of given
//! sequences ([`logprobs`]), and the same scores for training on the CPU
//! through the fused training passes ([`fused_logprobs`]).

pub mod fused_logprobs;
pub mod generation;
pub mod logprobs;
pub mod prompt;
pub mod sampling;
mod shard;

pub use fused_logprobs::{fused_completion_scores, FusedScores, ScoreLeaves};
pub use generation::{generate, merge_images, Completion, FinishReason, Prompt};
pub use logprobs::{completion_logprobs, sequence_logprobs, TokenScores};
pub use prompt::user_prompt;
pub use sampling::SamplingParams;
pub use shard::shard_bounds;
