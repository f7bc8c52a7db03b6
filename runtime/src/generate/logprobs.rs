//! Per-token log-probabilities and entropies of given sequences, in one
//! batched forward that autodiff can differentiate (the training side of
//! GRPO: policy and reference log-probs of prompt + completion).
//!
//! Sequences are right-padded to the longest; position `t` of the output
//! scores token `t + 1` of the input. Shapes: `logprobs`, `entropy` and
//! `mask` are `[batch, longest - 1]`; `mask` is 1 where the target token is
//! real (not padding).

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::model::{ImagePatches, Layout, Model, ModelError, ModelInput};

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
    if temperature.is_nan() || temperature <= 0.0 {
        return Err(ModelError::Request {
            reason: format!("temperature must be positive, got {temperature}"),
        });
    }
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
    };
    let input = ModelInput {
        tokens,
        layout,
        images: images.cloned(),
    };
    let logits = model.forward(&input, None)?; // [batch, longest, vocab]
    let device = logits.device();
    let logits = logits.narrow(1, 0, longest - 1).div_scalar(temperature);
    let log_p = log_softmax(logits, 2); // [batch, longest - 1, vocab]
    let targets =
        Tensor::<B, 2, Int>::from_data(TensorData::new(targets, [batch, longest - 1]), &device);
    let logprobs = log_p
        .clone()
        .gather(2, targets.unsqueeze_dim::<3>(2))
        .squeeze_dim::<2>(2);
    let entropy = (log_p.clone().exp() * log_p)
        .sum_dim(2)
        .squeeze_dim::<2>(2)
        .neg();
    let mask = Tensor::from_data(TensorData::new(mask, [batch, longest - 1]), &device);
    Ok(TokenScores {
        logprobs,
        entropy,
        mask,
    })
}
