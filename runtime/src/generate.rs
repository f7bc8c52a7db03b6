//! Generation and scoring: batched sampling with a KV cache
//! ([`generation`], its batch split across threads by [`shard`]), the token
//! choice ([`sampling`]), and the differentiable per-token log-probs of given
//! sequences ([`logprobs`]).

pub mod generation;
pub mod logprobs;
pub mod prompt;
pub mod sampling;
mod shard;

pub use generation::{generate, merge_images, Completion, FinishReason, Prompt};
pub use logprobs::{completion_logprobs, sequence_logprobs, TokenScores};
pub use prompt::user_prompt;
pub use sampling::SamplingParams;
pub use shard::shard_bounds;
