//! Batched generation with a KV cache.
//!
//! Prompts of different lengths are left-padded to one batch: padded keys are
//! masked and position ids count real tokens only (pads get position 1, as in
//! transformers), so every row decodes exactly as it would alone. One prefill
//! forward of the distinct prompts fills the cache (rows repeating a prompt
//! share its keys and values); each step then feeds one token per row. Finished
//! rows are dropped from the batch (and from the cache), so a batch costs
//! what its live rows need. On the CPU the rows are decoded in parallel
//! shards (`super::shard`).

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::sampling::{choose, SamplingParams};
use super::shard::{decode_shards, split_into_shards, Shard};
use crate::model::{ImagePatches, KvCache, Layout, Model, ModelError, ModelInput};
use crate::text::TextTokenizer;

/// One prompt: token ids (with image placeholders already expanded) and its images.
#[derive(Clone, Debug, Default)]
pub struct Prompt {
    /// Token ids.
    pub tokens: Vec<u32>,
    /// Images, if any.
    pub images: Option<ImagePatches>,
}

/// Why a completion ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-sequence or stop token was sampled.
    Stop,
    /// A stop string appeared in the text.
    StopString,
    /// `max_new_tokens` were generated.
    Length,
}

/// One generated completion.
#[derive(Clone, Debug, Serialize)]
pub struct Completion {
    /// The index of its prompt in the request.
    pub prompt: usize,
    /// Sampled token ids, the final stop token included.
    pub tokens: Vec<u32>,
    /// The log-probability of each sampled token (see [`super::sampling`]).
    pub logprobs: Vec<f32>,
    /// The decoded text, special tokens skipped, ending with the first stop
    /// string where one stopped it.
    pub text: String,
    /// Why the completion ended.
    pub finish: FinishReason,
}

/// A live row of the batch.
pub(super) struct Row {
    prompt: usize,
    /// Next position id.
    pub(super) position: i64,
    /// Padding of every key so far (left pads `true`).
    pub(super) key_padding: Vec<bool>,
    /// Sampled so far.
    pub(super) tokens: Vec<u32>,
    logprobs: Vec<f32>,
    /// The row's own random stream.
    rng: ChaCha8Rng,
}

/// Generates one completion per prompt, all prompts in one batch.
///
/// `rng` gives one seed per call; row `i` then samples from stream `i` of
/// that seed (ChaCha8), so a row's tokens depend on the seed and its index
/// alone: not on the other rows, on when they end, or on how the batch is
/// split for decoding.
pub fn generate<B: Backend>(
    model: &Model<B>,
    tokenizer: &TextTokenizer,
    prompts: &[Prompt],
    params: &SamplingParams,
    rng: &mut impl Rng,
) -> Result<Vec<Completion>, ModelError> {
    params
        .validate()
        .map_err(|reason| ModelError::Request { reason })?;
    // A completion's text is decoded without special tokens, so a stop
    // string holding one (`<|im_end|>`) would never match: refused rather
    // than accepted to do nothing.
    for stop in &params.stop_strings {
        if let Some(token) = tokenizer.special_token_in(stop) {
            return Err(ModelError::Request {
                reason: format!(
                    "the stop string {stop:?} holds the special token `{token}`, which a completion's text never holds (special tokens are decoded out of it); a completion already ends at the model's end-of-sequence tokens"
                ),
            });
        }
    }
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(i) = prompts.iter().position(|p| p.tokens.is_empty()) {
        return Err(ModelError::Request {
            reason: format!("prompt {i} is empty"),
        });
    }
    let longest = prompts.iter().map(|p| p.tokens.len()).max().unwrap_or(0);
    // The declared `context` where a pipeline sets one below the file's.
    let context = model.config.context();
    if longest.saturating_add(params.max_new_tokens) > context {
        let declared = match context < model.text.config.max_position_embeddings {
            true => " (its declared `context`)",
            false => "",
        };
        return Err(ModelError::Request {
            reason: format!(
                "a prompt of {longest} tokens plus {} new tokens exceeds the model's context of {context}{declared}",
                params.max_new_tokens
            ),
        });
    }
    let mut stop_ids = tokenizer.eos_ids.clone();
    stop_ids.extend(&params.stop_tokens);

    // Prefill each distinct prompt once, left-padded to `longest`; rows that
    // repeat a prompt (n samples of one prompt, a GRPO group) share its cache,
    // as vLLM's parallel sampling does.
    let pad = tokenizer.pad_id;
    let mut distinct: Vec<usize> = Vec::new();
    let mut source = Vec::with_capacity(prompts.len());
    for (i, prompt) in prompts.iter().enumerate() {
        let found = distinct.iter().position(|&d| {
            prompts[d].tokens == prompt.tokens && prompts[d].images == prompt.images
        });
        source.push(found.unwrap_or_else(|| {
            distinct.push(i);
            distinct.len() - 1
        }));
    }
    let mut tokens = Vec::with_capacity(distinct.len() * longest);
    let mut positions = Vec::with_capacity(distinct.len() * longest);
    let mut prefill_padding = Vec::with_capacity(distinct.len() * longest);
    for &d in &distinct {
        let prompt = &prompts[d];
        let pads = longest - prompt.tokens.len();
        tokens.extend(std::iter::repeat_n(pad, pads).chain(prompt.tokens.iter().copied()));
        positions.extend(std::iter::repeat_n(1, pads).chain(0..prompt.tokens.len() as i64));
        prefill_padding.extend((0..longest).map(|k| k < pads));
    }
    let distinct_prompts: Vec<Prompt> = distinct.iter().map(|&d| prompts[d].clone()).collect();
    let images = merge_images(&distinct_prompts);
    let layout = Layout {
        batch: distinct.len(),
        seq: longest,
        key_padding: prefill_padding,
        positions,
        causal: true,
        mrope: None,
    };
    let mut cache = KvCache::new(model.num_layers());
    let distinct_logits = last_logits(model.forward(
        &ModelInput {
            tokens,
            layout,
            images,
        },
        Some(&mut cache),
    )?)?;
    let vocab = model.vocab_size();
    let seed: u64 = rng.random();
    let mut rows = Vec::with_capacity(prompts.len());
    for (i, prompt) in prompts.iter().enumerate() {
        let pads = longest - prompt.tokens.len();
        let mut stream = ChaCha8Rng::seed_from_u64(seed);
        stream.set_stream(i as u64);
        rows.push(Row {
            prompt: i,
            position: prompt.tokens.len() as i64,
            key_padding: (0..longest).map(|k| k < pads).collect(),
            tokens: vec![],
            logprobs: vec![],
            rng: stream,
        });
    }
    let shards = split_into_shards::<B>(rows, cache, &source, &distinct_logits, vocab);
    // The image placeholder is never generated: it stands for image features,
    // and a completion holding one could not be scored again with its images.
    let never: Vec<u32> = model.config.image_token_id.into_iter().collect();
    let ends = Ends {
        with_stops: never.iter().chain(&stop_ids).copied().collect(),
        never,
        stop_ids,
    };
    let finished = decode_shards(shards, |shard| {
        decode_shard(model, tokenizer, params, &ends, shard)
    })?;
    let mut done: Vec<Completion> = finished.into_iter().flatten().collect();
    done.sort_by_key(|c| c.prompt);
    Ok(done)
}

/// The tokens that end a completion and those never sampled.
struct Ends {
    /// End-of-sequence and stop tokens.
    stop_ids: Vec<u32>,
    /// Tokens never sampled (the image placeholder).
    never: Vec<u32>,
    /// `never` and `stop_ids`: suppressed until `min_new_tokens` exist.
    with_stops: Vec<u32>,
}

/// Samples and decodes the rows of one shard until every row has ended;
/// returns their completions.
fn decode_shard<B: Backend>(
    model: &Model<B>,
    tokenizer: &TextTokenizer,
    params: &SamplingParams,
    ends: &Ends,
    mut shard: Shard<B>,
) -> Result<Vec<Completion>, ModelError> {
    let vocab = model.vocab_size();
    let mut done = Vec::with_capacity(shard.rows.len());
    for step in 0..params.max_new_tokens {
        let suppressed: &[u32] = if step < params.min_new_tokens {
            &ends.with_stops
        } else {
            &ends.never
        };
        let mut keep = Vec::with_capacity(shard.rows.len());
        for (r, row) in shard.rows.iter_mut().enumerate() {
            let row_logits = shard.logits.get(r * vocab..(r + 1) * vocab).unwrap_or(&[]);
            let choice = choose(row_logits, params, suppressed, &mut row.rng);
            // A sampled token has a finite log-prob unless every logit was
            // NaN or infinite.
            if !choice.logprob.is_finite() {
                return Err(ModelError::NonFiniteLogits { model: None });
            }
            row.tokens.push(choice.token);
            row.logprobs.push(choice.logprob);
            let finish = if ends.stop_ids.contains(&choice.token) {
                Some(FinishReason::Stop)
            } else if !params.stop_strings.is_empty()
                && contains_stop_string(tokenizer, &row.tokens, params)?
            {
                Some(FinishReason::StopString)
            } else if step + 1 == params.max_new_tokens {
                Some(FinishReason::Length)
            } else {
                None
            };
            match finish {
                Some(reason) => {
                    done.push(finish_row(tokenizer, row, reason, &ends.stop_ids, params)?)
                }
                None => keep.push(r),
            }
        }
        shard.keep(&keep);
        if shard.rows.is_empty() {
            break;
        }
        shard.decode_step(model)?;
    }
    Ok(done)
}

/// All prompts' images in prompt order (placeholders are found in the same order).
pub fn merge_images(prompts: &[Prompt]) -> Option<ImagePatches> {
    let mut merged: Option<ImagePatches> = None;
    for images in prompts.iter().filter_map(|p| p.images.as_ref()) {
        let m = merged.get_or_insert_with(|| ImagePatches {
            count: 0,
            values: Vec::new(),
            grids: Vec::new(),
        });
        m.count += images.count;
        m.values.extend_from_slice(&images.values);
        m.grids.extend_from_slice(&images.grids);
    }
    merged
}

/// The logits of the last position of every row, row-major `[batch, vocab]`.
pub(super) fn last_logits<B: Backend>(logits: Tensor<B, 3>) -> Result<Vec<f32>, ModelError> {
    let [batch, seq, vocab] = logits.dims();
    logits
        .narrow(1, seq - 1, 1)
        .reshape([batch, vocab])
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| ModelError::Request {
            reason: format!("reading logits: {e:?}"),
        })
}

fn contains_stop_string(
    tokenizer: &TextTokenizer,
    tokens: &[u32],
    params: &SamplingParams,
) -> Result<bool, ModelError> {
    let text = tokenizer.decode(tokens, true)?;
    Ok(params
        .stop_strings
        .iter()
        .any(|s| !s.is_empty() && text.contains(s.as_str())))
}

fn finish_row(
    tokenizer: &TextTokenizer,
    row: &mut Row,
    finish: FinishReason,
    stop_ids: &[u32],
    params: &SamplingParams,
) -> Result<Completion, ModelError> {
    let body: Vec<u32> = row
        .tokens
        .iter()
        .copied()
        .filter(|t| !stop_ids.contains(t))
        .collect();
    // The text ends with the first stop string, which the tokens hold
    // (and which a rubric may look for: `</answer>`); the rest of the
    // token that completed it is left out.
    let mut text = tokenizer.decode(&body, true)?;
    if let Some((_, end)) = params
        .stop_strings
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()).map(|at| (at, at + s.len())))
        .min()
    {
        text.truncate(end);
    }
    Ok(Completion {
        prompt: row.prompt,
        tokens: std::mem::take(&mut row.tokens),
        logprobs: std::mem::take(&mut row.logprobs),
        text,
        finish,
    })
}
