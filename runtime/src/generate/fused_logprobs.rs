//! [`super::completion_logprobs`] for training on the CPU backend, through
//! the fused training passes of [`crate::model::cpu_train`]: the same
//! log-probs and entropies, `[samples, longest completion]`, and the
//! gradients of the policy's weights for gradients of them, without
//! running burn's autodiff through the model (the loss on top of the scores
//! stays in autodiff: [`FusedScores::leaves`], [`FusedScores::backward`]).
//!
//! Each prompt is one segment and each completion (but its last token) a
//! segment whose context is its prompt, so every prompt runs once, as in
//! `completion_logprobs`. Columns past a completion's end hold 0 and take
//! no gradient. Without images, two or more prompts are packed as two
//! halves of consecutive prompts (`halves`) that the passes run side by
//! side ([`crate::model::cpu_train::Recorded::forward_parts`]), for
//! decoders of up to 64M parameters (`HALVES_UP_TO_PARAMS`).
//!
//! Images (`tiny_vlm`): the vision tower runs in burn, under autodiff, and
//! its features are given to the fused forward in place of the prompts'
//! image placeholders, in order, as `Model::hidden` splices them; the fused
//! backward returns their gradient, and one more autodiff pass, through
//! `Σ features ∘ gradient`, carries it into the vision tower's weights
//! (none with the tower frozen: `freeze_vision`).

use std::ops::Range;

use burn::backend::Autodiff;
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::generation::{merge_images, Prompt};
use crate::grpo::to_vec;
use crate::model::cpu_train::{GivenInputs, Packed, Recorded, Scored, Segment};
use crate::model::on_cpu::downcast_ref;
use crate::model::Model;
use crate::CpuAutodiff;

/// The largest decoder (in parameters) whose passes run in two halves:
/// each half's backward holds a full set of weight gradients until they are
/// summed, so halves cost one more copy of the weights' size at the peak,
/// here at most 256 MB. The halves fill the threads' waits at the end of
/// each operation, which matter most where operations are small.
const HALVES_UP_TO_PARAMS: usize = 64 << 20;

/// Log-probs and entropies of completions, and what their gradients need.
pub struct FusedScores {
    /// Log-prob of completion token `j` of sample `i` at `i · width + j`;
    /// 0 past the completion's end. `[samples, width]`.
    pub logprobs: Vec<f32>,
    /// The entropies of the same predictions `[samples, width]`.
    pub entropy: Vec<f32>,
    /// The longest completion.
    pub width: usize,
    /// Where each scored token's values go in `logprobs`.
    columns: Vec<usize>,
    recorded: Recorded,
    /// The model scored (a shared handle on its parameters), whose
    /// parameter ids the gradients are registered under.
    model: Model<CpuAutodiff>,
    /// The image features given in place of placeholders `[rows, d]`,
    /// tracked back to the vision tower's weights; `None` without images
    /// or with the tower frozen.
    features: Option<Tensor<CpuAutodiff, 2>>,
}

/// The scores of `samples` (`(prompt index, completion)`) of `prompts`
/// under `model`, with logits divided by `temperature`; `None` where the
/// fused passes do not apply (another backend than the CPU's, an empty
/// prompt or completion, a prompt index out of range, images that do not
/// match the prompts' placeholders or a model without a vision tower), and
/// the caller takes [`super::completion_logprobs`], which reports what is
/// wrong.
pub fn fused_completion_scores<B: Backend>(
    model: &Model<Autodiff<B>>,
    prompts: &[Prompt],
    samples: &[(usize, &[u32])],
    temperature: f32,
) -> Option<FusedScores> {
    let model: &Model<CpuAutodiff> = downcast_ref(model)?;
    let fits = !samples.is_empty()
        && prompts.iter().all(|p| !p.tokens.is_empty())
        && samples
            .iter()
            .all(|(p, c)| !c.is_empty() && *p < prompts.len());
    if !fits {
        return None;
    }
    let width = samples.iter().map(|(_, c)| c.len()).max().unwrap_or(0);
    let images = merge_images(prompts);
    let ranges = if images.is_none() && model.text.num_params() <= HALVES_UP_TO_PARAMS {
        halves(prompts, samples)
    } else {
        let all = 0..prompts.len();
        vec![all]
    };
    let (mut parts, columns): (Vec<(Packed, GivenInputs)>, Vec<Vec<usize>>) = ranges
        .into_iter()
        .map(|range| {
            let (packed, columns) = pack(prompts, range, samples, width);
            ((packed, GivenInputs::default()), columns)
        })
        .unzip();
    let columns: Vec<usize> = columns.concat();
    // With images there is one part, and every prompt leads its packing.
    let features = match images {
        Some(images) => {
            let (packed, given) = parts.first_mut()?;
            let prompt_tokens = &packed.tokens[..prompts.iter().map(|p| p.tokens.len()).sum()];
            let (image_inputs, features) = image_features(model, prompt_tokens, &images)?;
            *given = image_inputs;
            // A frozen tower takes no gradient: nothing to carry back.
            (!model.vision_frozen()).then_some(features)
        }
        None => None,
    };
    let recorded = Recorded::forward_parts(&model.text, parts, temperature)?;
    let mut logprobs = vec![0f32; samples.len() * width];
    let mut entropy = vec![0f32; samples.len() * width];
    for ((&at, l), e) in columns
        .iter()
        .zip(recorded.logprobs())
        .zip(recorded.entropy())
    {
        logprobs[at] = l;
        entropy[at] = e;
    }
    Some(FusedScores {
        logprobs,
        entropy,
        width,
        columns,
        recorded,
        model: model.clone(),
        features,
    })
}

/// The prompts `range` and their samples packed for the fused passes: each
/// prompt one segment, then each of its samples' completions (but the last
/// token) a segment whose context is the prompt; and where each scored
/// token's values go in `[samples, width]`, in scoring order.
fn pack(
    prompts: &[Prompt],
    range: Range<usize>,
    samples: &[(usize, &[u32])],
    width: usize,
) -> (Packed, Vec<usize>) {
    let mut packed = Packed::default();
    let mut last_of_prompt = Vec::with_capacity(range.len());
    for prompt in &prompts[range.clone()] {
        let start = packed.tokens.len();
        packed.tokens.extend_from_slice(&prompt.tokens);
        packed.positions.extend(0..prompt.tokens.len() as i64);
        packed.segments.push(Segment {
            start,
            len: prompt.tokens.len(),
            context: None,
        });
        last_of_prompt.push(packed.tokens.len() - 1);
    }
    let mut columns = Vec::new();
    let of_range = samples
        .iter()
        .enumerate()
        .filter(|(_, (p, _))| range.contains(p));
    for (i, &(p, completion)) in of_range {
        let local = p - range.start;
        packed.scored.push(Scored {
            row: last_of_prompt[local],
            target: completion[0],
        });
        columns.push(i * width);
        let fed = &completion[..completion.len() - 1];
        if fed.is_empty() {
            continue;
        }
        let start = packed.tokens.len();
        let first_position = prompts[p].tokens.len() as i64;
        packed.tokens.extend_from_slice(fed);
        packed
            .positions
            .extend((0..fed.len() as i64).map(|j| first_position + j));
        packed.segments.push(Segment {
            start,
            len: fed.len(),
            context: Some(local),
        });
        for (j, &target) in completion.iter().enumerate().skip(1) {
            packed.scored.push(Scored {
                row: start + j - 1,
                target,
            });
            columns.push(i * width + j);
        }
    }
    (packed, columns)
}

/// The prompts split in two consecutive ranges of about equal packed
/// tokens (each prompt with its samples' completions), for the fused passes
/// to run as two parts side by side; one range when there is one prompt.
/// The split depends on the input alone, not on the number of threads.
fn halves(prompts: &[Prompt], samples: &[(usize, &[u32])]) -> Vec<Range<usize>> {
    let mut tokens: Vec<usize> = prompts.iter().map(|p| p.tokens.len()).collect();
    for &(p, completion) in samples {
        tokens[p] += completion.len() - 1;
    }
    let total: usize = tokens.iter().sum();
    let before: Vec<usize> = tokens
        .iter()
        .scan(0, |sum, &t| {
            let before = *sum;
            *sum += t;
            Some(before)
        })
        .collect();
    let split = (1..prompts.len()).min_by_key(|&k| before[k].abs_diff(total - before[k]));
    let all = 0..prompts.len();
    match split {
        Some(k) => vec![0..k, k..all.end],
        None => vec![all],
    }
}

/// The vision tower's features of `images` (`[placeholders, d]`, tracked)
/// and the same values given to the placeholder rows of `prompt_tokens`
/// (the packed prompts, first in the packing), in order; `None` if the
/// model has no vision tower or the counts do not match.
fn image_features(
    model: &Model<CpuAutodiff>,
    prompt_tokens: &[u32],
    images: &crate::model::ImagePatches,
) -> Option<(GivenInputs, Tensor<CpuAutodiff, 2>)> {
    let (vision, placeholder) = (model.vision.as_ref()?, model.config.image_token_id?);
    let (per_image, patch_dim) = (vision.config.num_patches(), vision.config.patch_dim());
    let rows: Vec<usize> = (0..prompt_tokens.len())
        .filter(|&i| prompt_tokens[i] == placeholder)
        .collect();
    let fits = rows.len() == images.count * per_image
        && images.values.len() == images.count * per_image * patch_dim;
    if !fits || rows.is_empty() {
        return None;
    }
    let d = model.text.config.hidden_size;
    let patches = Tensor::<CpuAutodiff, 3>::from_data(
        TensorData::new(images.values.clone(), [images.count, per_image, patch_dim]),
        &Default::default(),
    );
    let features = vision.forward(patches).reshape([rows.len(), d]);
    let values = features
        .clone()
        .inner()
        .into_data()
        .into_vec::<f32>()
        .ok()?;
    Some((GivenInputs { rows, values }, features))
}

/// [`FusedScores`] as autodiff leaves, for a loss to be built on.
pub struct ScoreLeaves<B: Backend> {
    /// The log-probs `[samples, width]`, tracked.
    pub logprobs: Tensor<Autodiff<B>, 2>,
    /// The entropies `[samples, width]`, tracked when asked for.
    pub entropy: Tensor<Autodiff<B>, 2>,
    entropy_tracked: bool,
}

impl FusedScores {
    /// The log-probs (tracked) and entropies (tracked when
    /// `entropy_gradient`) as tensors on `device`, leaves of the graph a loss
    /// is built on; [`FusedScores::backward`] turns that loss into the
    /// weights' gradients.
    pub fn leaves<B: Backend>(&self, device: &B::Device, entropy_gradient: bool) -> ScoreLeaves<B> {
        let tensor = |values: &[f32]| {
            Tensor::<Autodiff<B>, 2>::from_data(
                TensorData::new(
                    values.to_vec(),
                    [values.len() / self.width.max(1), self.width],
                ),
                device,
            )
        };
        let entropy = tensor(&self.entropy);
        ScoreLeaves {
            logprobs: tensor(&self.logprobs).require_grad(),
            entropy: if entropy_gradient {
                entropy.require_grad()
            } else {
                entropy
            },
            entropy_tracked: entropy_gradient,
        }
    }

    /// The gradients of the scored model's weights for `loss`, a scalar
    /// built on `leaves` (this score's): autodiff runs through the loss
    /// alone, the fused backward through the model. A loss that does not
    /// read the log-probs gives them no gradient: zero.
    pub fn backward<B: Backend>(
        &self,
        leaves: &ScoreLeaves<B>,
        loss: Tensor<Autodiff<B>, 1>,
    ) -> GradientsParams {
        let grads = loss.backward();
        let zeros = || vec![0.0; self.logprobs.len()];
        let of = |t: &Tensor<Autodiff<B>, 2>| t.grad(&grads).map_or_else(zeros, |g| to_vec(&g));
        let dlogprobs = of(&leaves.logprobs);
        let dentropy = leaves.entropy_tracked.then(|| of(&leaves.entropy));
        self.gradients(&dlogprobs, dentropy.as_deref())
    }

    /// The gradients of the scored model's weights for `dlogprobs` and,
    /// when given, `dentropy` (both `[samples, width]`), as burn's optimiser
    /// takes them for that model.
    ///
    /// # Panics
    /// If a gradient is not `[samples, width]`.
    pub fn gradients(&self, dlogprobs: &[f32], dentropy: Option<&[f32]>) -> GradientsParams {
        let pick = |g: &[f32]| -> Vec<f32> {
            assert_eq!(g.len(), self.logprobs.len(), "a [samples, width] gradient");
            self.columns.iter().map(|&at| g[at]).collect()
        };
        let dentropy = dentropy.map(pick);
        let mut gradients = self
            .recorded
            .gradients(&pick(dlogprobs), dentropy.as_deref());
        let mut params = match &self.features {
            Some(features) => {
                let given = std::mem::take(&mut gradients.given);
                let given = Tensor::<CpuAutodiff, 2>::from_data(
                    TensorData::new(given, features.dims()),
                    &Default::default(),
                );
                let carried = (features.clone() * given).sum();
                GradientsParams::from_grads(carried.backward(), &self.model)
            }
            None => GradientsParams::new(),
        };
        gradients.register_in(&self.model.text, &mut params);
        params
    }
}

#[cfg(test)]
mod tests {
    use super::{halves, Prompt};

    fn prompts(lengths: &[usize]) -> Vec<Prompt> {
        lengths
            .iter()
            .map(|&n| Prompt {
                tokens: vec![1; n],
                images: None,
            })
            .collect()
    }

    #[test]
    fn the_halves_balance_packed_tokens_and_keep_prompts_whole() {
        let completion = [7u32; 11];
        // Prompts of 10, 2, 6 and 2 tokens; prompt 1 has two completions
        // of 10 fed tokens: 10 | 22 | 6 | 2 packed tokens, and 10 against
        // 30 is closer than 32 against 8.
        let samples = [(1, &completion[..]), (1, &completion[..])];
        assert_eq!(halves(&prompts(&[10, 2, 6, 2]), &samples), vec![0..1, 1..4]);
        assert_eq!(
            halves(&prompts(&[10, 2, 6, 20]), &samples),
            vec![0..2, 2..4]
        );
        assert_eq!(halves(&prompts(&[4, 4, 4, 4]), &[]), vec![0..2, 2..4]);
        assert_eq!(halves(&prompts(&[30, 1, 1]), &[]), vec![0..1, 1..3]);
        assert_eq!(halves(&prompts(&[5]), &samples[..0]), vec![0..1]);
    }
}
