//! Training's forward and backward of the text decoder on the CPU backend,
//! fused into passes over `f32` vectors: the log-probs (and entropies) of
//! scored tokens, and the gradients of every weight for given gradients of
//! those log-probs.
//!
//! burn's autodiff runs the tensor code of [`super::TextDecoder`] as some
//! 40 operations per block and records each for its backward; on a GRPO
//! step of the benchmark model (16 completions of 32 tokens) the update took
//! two thirds of the step, and gemm's kernels under half of the update: the
//! rest was burn-flex's element-wise, strided-copy and gather/scatter work
//! around them. Here the forward keeps what the backward reads
//! ([`tape::Tape`]), every product is one gemm call per worker thread
//! ([`super::few_rows::parallel_product_into`]), and the backward is written out
//! per operation ([`backward`]).
//!
//! Inputs are packed ([`Packed`]): tokens of every sequence back to back,
//! no padding, in segments. A segment attends causally to itself and to all
//! of one earlier segment, its context: a GRPO group is its prompt (a
//! segment without context) and one segment per completion whose context is
//! the prompt, so the prompt runs once for the whole group, as in
//! [`crate::generate::completion_logprobs`], whose tensor code is the
//! reference the tests compare this with.
//!
//! Some tokens' input embeddings can be given instead of looked up
//! ([`GivenInputs`]: `tiny_vlm`'s image features); the backward returns
//! their gradient, for the caller to carry further (into the vision tower).
//!
//! It applies where [`params::Weights::of`] can read the decoder: the CPU
//! backend under autodiff ([`crate::CpuAutodiff`]), `f32` weights. Callers
//! take the tensor code everywhere else (wgpu, cuda).
//! [`crate::generate::fused_completion_scores`] is the entry point GRPO's
//! policy pass and SFT use.
//!
//! Shapes (row-major vectors, `N` packed tokens): hidden states `[N, d]`,
//! queries `[N, heads, head_dim]`, keys and values `[N, kv_heads,
//! head_dim]`, MLP activations `[N, intermediate]`, the scored rows' hidden
//! states `[M, d]` and probabilities `[M, vocab]`.

pub mod attention;
pub mod backward;
pub mod ops;
pub mod params;
pub mod tape;

pub use params::{Gradients, Weights};
pub use tape::Tape;

use rayon::prelude::*;

use super::decoder::TextDecoder;
use crate::CpuAutodiff;

/// A fused forward with the weights it read: its log-probs and entropies,
/// and the gradients of those weights for gradients of them.
///
/// The forward can run over several packings at once, its parts
/// ([`Recorded::forward_parts`]): they run side by side on the worker
/// threads, and so do their backwards. Within a pass, every operation is
/// shared out among the worker threads, which wait for each other when it
/// ends; with a second pass beside it, a thread that finishes its share
/// early takes up the other pass's work instead of waiting (the
/// benchmark's GRPO update 0.173 → 0.162 s, runtime/benches/HISTORY.md). Each
/// part's backward holds a full set of weight gradients until they are
/// summed: with two parts, one more copy of the weights' size at the peak.
pub struct Recorded {
    weights: Weights,
    /// One tape per part, in part order.
    tapes: Vec<Tape>,
}

impl Recorded {
    /// The forward of `decoder` over `packed`, with `given` input
    /// embeddings in place of some tokens', and logits divided by
    /// `temperature`; or `None` where the fused passes do not apply (a
    /// weight not `f32`, a packing [`Packed::problem`] refuses, given rows
    /// out of range, repeated or with the wrong number of values, a
    /// temperature that is not positive).
    pub fn forward(
        decoder: &TextDecoder<CpuAutodiff>,
        packed: Packed,
        given: GivenInputs,
        temperature: f32,
    ) -> Option<Self> {
        Self::forward_parts(decoder, vec![(packed, given)], temperature)
    }

    /// [`Recorded::forward`] over each of `parts` (a packing and its given
    /// inputs), side by side; the scored tokens are the parts' in part
    /// order. `None` if there are no parts or any part is refused.
    pub fn forward_parts(
        decoder: &TextDecoder<CpuAutodiff>,
        parts: Vec<(Packed, GivenInputs)>,
        temperature: f32,
    ) -> Option<Self> {
        let dims = Dims::of(&decoder.config);
        let valid = dims.kv_heads > 0
            && dims.heads.is_multiple_of(dims.kv_heads)
            && dims.head_dim.is_multiple_of(2)
            && temperature > 0.0;
        if !valid || parts.is_empty() || !parts.iter().all(|(p, g)| fits(p, g, dims)) {
            return None;
        }
        let weights = Weights::of(decoder, &dims)?;
        let tapes = parts
            .into_par_iter()
            .map(|(packed, given)| {
                tape::forward(&weights, dims, &decoder.rope, packed, given, temperature)
            })
            .collect();
        Some(Self { weights, tapes })
    }

    /// Log-prob of each scored token `[M]`.
    pub fn logprobs(&self) -> impl Iterator<Item = f32> + '_ {
        self.tapes.iter().flat_map(|t| t.logprobs.iter().copied())
    }

    /// Entropy of each scored token's predicted distribution `[M]`.
    pub fn entropy(&self) -> impl Iterator<Item = f32> + '_ {
        self.tapes.iter().flat_map(|t| t.entropy.iter().copied())
    }

    /// The weights' gradients (and the given inputs', the parts' in part
    /// order) for `dlogprobs` (`[M]`) and `dentropy` (`[M]`): each part's
    /// backward, side by side, and their sum in part order, so the result
    /// does not depend on the number of threads.
    ///
    /// # Panics
    /// If either is not `M` long.
    pub fn gradients(&self, dlogprobs: &[f32], dentropy: Option<&[f32]>) -> Gradients {
        let m: usize = self.tapes.iter().map(|t| t.logprobs.len()).sum();
        assert!(
            dlogprobs.len() == m && dentropy.is_none_or(|e| e.len() == m),
            "gradients of {m} scored tokens"
        );
        // Each tape's scored tokens: `starts[i]..starts[i + 1]`.
        let starts: Vec<usize> = std::iter::once(0)
            .chain(self.tapes.iter().scan(0, |end, t| {
                *end += t.logprobs.len();
                Some(*end)
            }))
            .collect();
        let mut parts: Vec<Gradients> = self
            .tapes
            .par_iter()
            .enumerate()
            .map(|(i, tape)| {
                let range = starts[i]..starts[i + 1];
                let dentropy = dentropy.map(|e| &e[range.clone()]);
                backward::backward(tape, &self.weights, &dlogprobs[range], dentropy)
            })
            .collect();
        // `forward_parts` keeps at least one tape.
        let mut total = parts.remove(0);
        for other in parts {
            total.add(other);
        }
        total
    }
}

/// Whether the fused passes can run `packed` with `given` (see
/// [`Recorded::forward`]).
fn fits(packed: &Packed, given: &GivenInputs, dims: Dims) -> bool {
    if packed.problem(dims.vocab).is_some() || given.values.len() != given.rows.len() * dims.d {
        return false;
    }
    let n = packed.tokens.len();
    let mut seen = vec![false; n];
    given
        .rows
        .iter()
        .all(|&row| row < n && !std::mem::replace(&mut seen[row], true))
}

/// Tokens packed back to back in segments.
#[derive(Clone, Debug, Default)]
pub struct Packed {
    /// Token ids `[N]`.
    pub tokens: Vec<u32>,
    /// Rotary position of each token `[N]`.
    pub positions: Vec<i64>,
    /// The segments, in token order, covering `tokens` once.
    pub segments: Vec<Segment>,
    /// The tokens whose next-token log-probs are wanted.
    pub scored: Vec<Scored>,
}

/// Consecutive tokens that attend causally to each other and to every token
/// of their context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Index of the first token.
    pub start: usize,
    /// Number of tokens (at least 1).
    pub len: usize,
    /// An earlier segment without context of its own whose tokens all
    /// precede this one's, or `None`.
    pub context: Option<usize>,
}

/// Input embeddings given for some packed tokens instead of looked up from
/// the token table (the image features that replace `tiny_vlm`'s image
/// placeholders); the backward returns their gradient.
#[derive(Clone, Debug, Default)]
pub struct GivenInputs {
    /// The packed tokens they replace, distinct.
    pub rows: Vec<usize>,
    /// Their values `[rows, d]`.
    pub values: Vec<f32>,
}

/// A log-prob to compute: of `target` after the token at `row`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scored {
    /// The packed token whose hidden state predicts `target`.
    pub row: usize,
    /// The predicted token id.
    pub target: u32,
}

impl Packed {
    /// Why the packing is not one the fused passes can run, if it is not:
    /// segments in order, covering every token once, contexts earlier and
    /// without contexts themselves, scored rows and tokens in range.
    pub fn problem(&self, vocab: usize) -> Option<String> {
        let n = self.tokens.len();
        if n == 0 || self.positions.len() != n {
            return Some(format!("{n} tokens, {} positions", self.positions.len()));
        }
        let mut next = 0;
        for (i, s) in self.segments.iter().enumerate() {
            if s.start != next || s.len == 0 {
                return Some(format!(
                    "segment {i} holds tokens {}..{}, expected a start at {next}",
                    s.start,
                    s.start + s.len
                ));
            }
            next = s.start + s.len;
            if let Some(c) = s.context {
                if c >= i || self.segments[c].context.is_some() {
                    return Some(format!("segment {i} has context {c}"));
                }
            }
        }
        if next != n {
            return Some(format!("segments cover {next} of {n} tokens"));
        }
        if let Some(t) = self.tokens.iter().find(|&&t| t as usize >= vocab) {
            return Some(format!("token {t} outside a vocabulary of {vocab}"));
        }
        if let Some(s) = self
            .scored
            .iter()
            .find(|s| s.row >= n || s.target as usize >= vocab)
        {
            return Some(format!("scored row {} target {}", s.row, s.target));
        }
        None
    }
}

/// The sizes the passes need (from [`super::TextConfig`]).
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    /// Model width.
    pub d: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// MLP hidden width.
    pub intermediate: usize,
    /// Vocabulary size.
    pub vocab: usize,
}

impl Dims {
    /// The sizes of `config`.
    pub fn of(config: &super::TextConfig) -> Self {
        Self {
            d: config.hidden_size,
            heads: config.num_attention_heads,
            kv_heads: config.num_key_value_heads,
            head_dim: config.head_dim(),
            intermediate: config.intermediate_size,
            vocab: config.vocab_size,
        }
    }

    /// Query heads per key/value head.
    pub fn groups(&self) -> usize {
        self.heads / self.kv_heads
    }
}

#[cfg(test)]
mod tests;
