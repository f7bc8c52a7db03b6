//! Per-token log-probabilities and entropies of given sequences, in one
//! batched forward that autodiff can differentiate (the training side of
//! GRPO: policy and reference log-probs of prompt + completion).
//!
//! [`sequence_logprobs`] scores whole sequences: they are right-padded to
//! the longest; position `t` of the output scores token `t + 1` of the
//! input. Shapes: `logprobs`, `entropy` and `mask` are `[batch, longest -
//! 1]`; `mask` is 1 where the target token is real (not padding).
//!
//! [`completion_logprobs`] scores completions of shared prompts, as a GRPO
//! group is: each distinct prompt runs once and its keys and values serve
//! every completion of it (a group of 4 completions of 32 tokens after a
//! 55-token prompt feeds 4·32 + 55 tokens instead of 4·87). Column `j` of its
//! output scores completion token `j`: `[samples, longest completion]`.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use super::generation::{merge_images, Prompt};
use crate::model::{ImagePatches, KvCache, Layout, Model, ModelError, ModelInput};

/// Log-probs, entropies and the padding mask of a batch of sequences.
pub struct TokenScores<B: Backend> {
    /// Per-token log-probabilities `[batch, longest - 1]`.
    pub logprobs: Tensor<B, 2>,
    /// Per-token entropies of the predicted distribution `[batch, longest - 1]`.
    pub entropy: Tensor<B, 2>,
    /// 1 where the target token is real, 0 at padding `[batch, longest - 1]`.
    pub mask: Tensor<B, 2>,
}

/// Scores `sequences` (each at least 2 tokens) under `model` with logits
/// divided by `temperature`.
pub fn sequence_logprobs<B: Backend>(
    model: &Model<B>,
    sequences: &[Vec<u32>],
    images: Option<&ImagePatches>,
    temperature: f32,
    pad_id: u32,
) -> Result<TokenScores<B>, ModelError> {
    if sequences.is_empty() || sequences.iter().any(|s| s.len() < 2) {
        return Err(ModelError::Request {
            reason: "every scored sequence needs at least two tokens".into(),
        });
    }
    check_temperature(temperature)?;
    let batch = sequences.len();
    let longest = sequences.iter().map(Vec::len).max().unwrap_or(0);
    let mut tokens = Vec::with_capacity(batch * longest);
    let mut key_padding = Vec::with_capacity(batch * longest);
    let mut targets = Vec::with_capacity(batch * (longest - 1));
    let mut mask = Vec::with_capacity(batch * (longest - 1));
    for seq in sequences {
        let pads = longest - seq.len();
        tokens.extend(seq.iter().copied().chain(std::iter::repeat_n(pad_id, pads)));
        key_padding
            .extend(std::iter::repeat_n(false, seq.len()).chain(std::iter::repeat_n(true, pads)));
        for t in 1..longest {
            targets.push(i64::from(seq.get(t).copied().unwrap_or(pad_id)));
            mask.push(if t < seq.len() { 1.0f32 } else { 0.0 });
        }
    }
    let layout = Layout {
        batch,
        seq: longest,
        positions: (0..batch).flat_map(|_| 0..longest as i64).collect(),
        key_padding,
        causal: true,
        mrope: None,
    };
    let input = ModelInput {
        tokens,
        layout,
        images: images.cloned(),
    };
    let logits = model.forward(&input, None)?; // [batch, longest, vocab]
    Ok(scores(
        logits.narrow(1, 0, longest - 1),
        targets,
        mask,
        temperature,
    ))
}

/// Scores the completions `samples` (`(prompt index, completion tokens)`,
/// each completion at least one token) of `prompts` under `model`, running
/// each prompt once. The result is `[samples, longest completion]`, column
/// `j` scoring completion token `j`; equal to the completion columns of
/// [`sequence_logprobs`] over prompt + completion, up to rounding.
pub fn completion_logprobs<B: Backend>(
    model: &Model<B>,
    prompts: &[Prompt],
    samples: &[(usize, &[u32])],
    temperature: f32,
    pad_id: u32,
) -> Result<TokenScores<B>, ModelError> {
    let bad_sample = samples
        .iter()
        .any(|(p, c)| c.is_empty() || prompts.get(*p).is_none_or(|p| p.tokens.is_empty()));
    if samples.is_empty() || bad_sample {
        return Err(ModelError::Request {
            reason: "every scored completion needs a prompt and at least one token".into(),
        });
    }
    check_temperature(temperature)?;
    let device = model.device();
    // The prompts, left-padded to one length so that every last position
    // holds a real token (pads get position 1, as in generation).
    let prompt_len = prompts.iter().map(|p| p.tokens.len()).max().unwrap_or(0);
    let mut tokens = Vec::with_capacity(prompts.len() * prompt_len);
    let mut positions = Vec::with_capacity(prompts.len() * prompt_len);
    let mut prompt_padding = Vec::with_capacity(prompts.len() * prompt_len);
    for prompt in prompts {
        let pads = prompt_len - prompt.tokens.len();
        tokens.extend(std::iter::repeat_n(pad_id, pads).chain(prompt.tokens.iter().copied()));
        positions.extend(std::iter::repeat_n(1, pads).chain(0..prompt.tokens.len() as i64));
        prompt_padding.extend((0..prompt_len).map(|k| k < pads));
    }
    let mut cache = KvCache::new(model.num_layers());
    let hidden = model.hidden(
        &ModelInput {
            tokens,
            layout: Layout {
                batch: prompts.len(),
                seq: prompt_len,
                positions,
                key_padding: prompt_padding.clone(),
                causal: true,
                mrope: None,
            },
            images: merge_images(prompts),
        },
        Some(&mut cache),
    )?; // [prompts, prompt_len, d]
    let first = model.text.logits(hidden.narrow(1, prompt_len - 1, 1)); // [prompts, 1, vocab]
    let of_sample: Vec<usize> = samples.iter().map(|(p, _)| *p).collect();
    let index = Tensor::<B, 1, Int>::from_data(
        TensorData::new(
            of_sample.iter().map(|&p| p as i64).collect::<Vec<_>>(),
            [samples.len()],
        ),
        &device,
    );
    let first = first.select(0, index); // [samples, 1, vocab]

    // Every completion but its last token, right-padded, after its prompt's
    // cached keys: position j predicts completion token j + 1.
    let longest = samples.iter().map(|(_, c)| c.len()).max().unwrap_or(1);
    let mut targets = Vec::with_capacity(samples.len() * longest);
    let mut mask = Vec::with_capacity(samples.len() * longest);
    for (_, completion) in samples {
        for j in 0..longest {
            targets.push(i64::from(completion.get(j).copied().unwrap_or(pad_id)));
            mask.push(if j < completion.len() { 1.0f32 } else { 0.0 });
        }
    }
    let logits = if longest == 1 {
        first
    } else {
        let fed = longest - 1;
        let mut tokens = Vec::with_capacity(samples.len() * fed);
        let mut positions = Vec::with_capacity(samples.len() * fed);
        let mut key_padding = Vec::with_capacity(samples.len() * (prompt_len + fed));
        for (p, completion) in samples {
            let start = prompts[*p].tokens.len() as i64;
            tokens.extend((0..fed).map(|j| completion.get(j).copied().unwrap_or(pad_id)));
            positions.extend((0..fed as i64).map(|j| start + j));
            key_padding.extend_from_slice(&prompt_padding[p * prompt_len..(p + 1) * prompt_len]);
            key_padding.extend((0..fed).map(|j| j >= completion.len()));
        }
        cache.select_rows(&of_sample);
        let rest = model.forward(
            &ModelInput {
                tokens,
                layout: Layout {
                    batch: samples.len(),
                    seq: fed,
                    positions,
                    key_padding,
                    causal: true,
                    mrope: None,
                },
                images: None,
            },
            Some(&mut cache),
        )?; // [samples, fed, vocab]
        Tensor::cat(vec![first, rest], 1)
    };
    Ok(scores(logits, targets, mask, temperature))
}

fn check_temperature(temperature: f32) -> Result<(), ModelError> {
    if temperature.is_nan() || temperature <= 0.0 {
        return Err(ModelError::Request {
            reason: format!("temperature must be positive, got {temperature}"),
        });
    }
    Ok(())
}

/// Log-probs of `targets` (row-major `[rows, width]`) under `logits`
/// (`[rows, width, vocab]`, divided by `temperature` first), the entropies
/// of those distributions, and `mask` as a tensor.
fn scores<B: Backend>(
    logits: Tensor<B, 3>,
    targets: Vec<i64>,
    mask: Vec<f32>,
    temperature: f32,
) -> TokenScores<B> {
    let [rows, width, _] = logits.dims();
    let device = logits.device();
    let log_p = log_softmax(logits.div_scalar(temperature), 2); // [rows, width, vocab]
    let targets = Tensor::<B, 2, Int>::from_data(TensorData::new(targets, [rows, width]), &device);
    let logprobs = log_p
        .clone()
        .gather(2, targets.unsqueeze_dim::<3>(2))
        .squeeze_dim::<2>(2);
    let entropy = (log_p.clone().exp() * log_p)
        .sum_dim(2)
        .squeeze_dim::<2>(2)
        .neg();
    let mask = Tensor::from_data(TensorData::new(mask, [rows, width]), &device);
    TokenScores {
        logprobs,
        entropy,
        mask,
    }
}
