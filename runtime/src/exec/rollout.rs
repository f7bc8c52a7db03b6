//! The `Batch` and `Generate` ops: drawing prompts from a split (a seeded
//! cursor that reshuffles each epoch and can be saved and restored) and
//! sampling groups of completions with the policy.

use burn::tensor::backend::Backend;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use safer_ir::plan::{RolloutSpec, SplitRef};
use serde::{Deserialize, Serialize};

use super::data::Row;
use super::ExecError;
use crate::generate::{generate, merge_images, user_prompt, Completion, Prompt, SamplingParams};
use crate::model::{ImagePatches, Model, ModelConfig, ModelError};
use crate::text::TextTokenizer;

/// Where a stage is in its data: the epoch and the position in its order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Passes completed.
    pub epoch: u64,
    /// The next index into this epoch's order.
    pub position: usize,
}

impl Cursor {
    /// The next `n` row indices of `len` rows; each epoch is a fresh
    /// permutation seeded by `seed` and the epoch number.
    pub fn next(&mut self, n: usize, len: usize, seed: u64) -> Vec<usize> {
        let mut out = Vec::with_capacity(n);
        if len == 0 {
            return out;
        }
        let mut order = permutation(len, seed, self.epoch);
        while out.len() < n {
            if self.position >= len {
                self.epoch += 1;
                self.position = 0;
                order = permutation(len, seed, self.epoch);
            }
            out.push(order[self.position]);
            self.position += 1;
        }
        out
    }

    /// Passes over `len` rows taken so far, with the fraction of the
    /// current one (as transformers' `Trainer` logs `epoch`): 1.0 once
    /// every row was taken once, 1.5 halfway through the second pass.
    pub fn epochs_done(&self, len: usize) -> f64 {
        if len == 0 {
            return 0.0;
        }
        self.epoch as f64 + self.position as f64 / len as f64
    }
}

/// The warning for a stage whose batch is larger than its training data
/// (`rows` rows of `data`): the cursor then wraps within one step, so
/// every step takes each row more than once (in GRPO each copy a group of
/// its own). Nearly always a typo or a split that curation and filters
/// shrank more than expected; `None` when the batch fits.
pub fn oversized_batch_warning(
    stage: &str,
    data: &SplitRef,
    batch: usize,
    rows: usize,
) -> Option<String> {
    (batch > rows && rows > 0).then(|| {
        format!(
            "warning: stage {stage}: a batch of {batch} prompts is larger than its training data (`{data}`: {rows} rows after filters and curation), so every step takes each row about {} times; healthy: a batch of at most {rows} (lower `batch` or add rows)",
            batch.div_ceil(rows)
        )
    })
}

fn permutation(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9).wrapping_add(epoch));
    order.shuffle(&mut rng);
    order
}

/// Sampling parameters of a rollout spec.
pub fn sampling(spec: &RolloutSpec) -> SamplingParams {
    SamplingParams {
        greedy: spec.temperature <= 0.0,
        temperature: if spec.temperature <= 0.0 {
            1.0
        } else {
            spec.temperature as f32
        },
        top_p: spec.top_p as f32,
        top_k: spec.top_k,
        max_new_tokens: spec.max_tokens,
        min_new_tokens: spec.min_tokens,
        stop_tokens: Vec::new(),
        stop_strings: spec.stop.clone(),
    }
}

/// A model with its tokenizer and configuration.
pub struct Policy<'a, B: Backend> {
    /// The model.
    pub model: &'a Model<B>,
    /// The folder it was loaded from, for messages.
    pub dir: &'a std::path::Path,
    /// Its tokenizer.
    pub tokenizer: &'a TextTokenizer,
    /// Its configuration.
    pub config: &'a ModelConfig,
}

/// The prompt of a row (chat template, image placeholders, patches);
/// `extra` is appended to the question (reflection).
///
/// # Errors
/// Template or image errors, naming the row.
pub fn prompt(
    row: &Row,
    tokenizer: &TextTokenizer,
    config: &ModelConfig,
    extra: Option<&str>,
) -> Result<Prompt, ExecError> {
    if !row.images.is_empty() && config.is_text_only() {
        // Every row with images would fail alike: the run stops.
        return Err(ExecError::Usage(format!(
            "row {} has {} image(s), and the model takes text only (a `qwen2` model): use a vision-language model (`tiny_vlm` or `qwen2_5_vl`) here, or a dataset whose rows have no images",
            row.origin,
            row.images.len()
        )));
    }
    let context = config.context();
    if tokenizer.surely_longer_than(&row.prompt, context) {
        return Err(ExecError::Row {
            origin: row.origin.clone(),
            message: format!(
                "its prompt is {} bytes, longer than the model's context of {context} tokens can hold",
                row.prompt.len()
            ),
        });
    }
    let text = match extra {
        Some(e) => format!("{}\n\n{e}", row.prompt),
        None => row.prompt.clone(),
    };
    user_prompt(tokenizer, config, &text, &row.images, None).map_err(|e| match e {
        // The row's own text or images: a bad row (skipped under
        // `on_bad_row = skip`).
        ModelError::PromptText { .. } | ModelError::Image { .. } => ExecError::Row {
            origin: row.origin.clone(),
            message: e.to_string(),
        },
        // A request the model cannot serve (images for a text-only model):
        // every such row would be refused alike, so the run stops, as a
        // request that cannot be carried out (exit 2, as `generate`'s).
        ModelError::Request { .. } => ExecError::Usage(format!("row {}: {e}", row.origin)),
        // The model's template or tokenizer failing: every row would fail
        // alike, so the run stops, failed (exit 1, as `generate`'s).
        other => ExecError::Prompt {
            origin: row.origin.clone(),
            error: other,
        },
    })
}

/// Prompts of a stage's rows, built once (chat template, tokens, decoded
/// image patches) and reused every time the cursor comes back to a row.
pub struct PromptCache {
    prompts: Vec<Option<Prompt>>,
}

impl PromptCache {
    /// An empty cache for `rows` rows.
    pub fn new(rows: usize) -> Self {
        PromptCache {
            prompts: vec![None; rows],
        }
    }

    /// A cache holding the prompts of every row, in row order.
    pub fn filled(prompts: Vec<Prompt>) -> Self {
        PromptCache {
            prompts: prompts.into_iter().map(Some).collect(),
        }
    }

    /// The prompts of rows `indices` of `rows`, those not built yet built
    /// in parallel (templates, tokenisation and image patches).
    ///
    /// # Errors
    /// Template or image errors, naming the row.
    pub fn get_many(
        &mut self,
        indices: &[usize],
        rows: &[Row],
        tokenizer: &TextTokenizer,
        config: &ModelConfig,
    ) -> Result<Vec<Prompt>, ExecError> {
        let missing: Vec<usize> = indices
            .iter()
            .copied()
            .filter(|&i| matches!(self.prompts.get(i), Some(None)))
            .collect();
        let built = missing
            .par_iter()
            .map(|&i| prompt(&rows[i], tokenizer, config, None))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, p) in missing.into_iter().zip(built) {
            self.prompts[i] = Some(p);
        }
        indices
            .iter()
            .map(|&i| self.get(i, &rows[i], tokenizer, config))
            .collect()
    }

    /// The prompt of row `index` (`row`), built on first use.
    ///
    /// # Errors
    /// Template or image errors, naming the row.
    pub fn get(
        &mut self,
        index: usize,
        row: &Row,
        tokenizer: &TextTokenizer,
        config: &ModelConfig,
    ) -> Result<Prompt, ExecError> {
        if let Some(Some(p)) = self.prompts.get(index) {
            return Ok(p.clone());
        }
        let p = prompt(row, tokenizer, config, None)?;
        if let Some(slot) = self.prompts.get_mut(index) {
            *slot = Some(p.clone());
        }
        Ok(p)
    }
}

/// Samples `group` completions of each prompt; completions of one prompt
/// are contiguous.
///
/// # Errors
/// Model errors.
pub fn sample<B: Backend>(
    policy: &Policy<'_, B>,
    prompts: &[Prompt],
    group: usize,
    params: &SamplingParams,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Completion>, ExecError> {
    let repeated: Vec<Prompt> = prompts
        .iter()
        .flat_map(|p| std::iter::repeat_n(p.clone(), group))
        .collect();
    generate(policy.model, policy.tokenizer, &repeated, params, rng).map_err(|e| {
        ExecError::Model(e.of_model(|| format!("the model in `{}`", policy.dir.display())))
    })
}

/// Prompt + completion token sequences of samples, the completion mask
/// `[N, T - 1]` and the images in sequence order.
pub fn sequences(
    prompts: &[Prompt],
    samples: &[(usize, &[u32])],
) -> (Vec<Vec<u32>>, Vec<f32>, usize, Option<ImagePatches>) {
    let seqs: Vec<Vec<u32>> = samples
        .iter()
        .map(|(p, toks)| {
            prompts[*p]
                .tokens
                .iter()
                .chain(toks.iter())
                .copied()
                .collect()
        })
        .collect();
    let longest = seqs.iter().map(Vec::len).max().unwrap_or(2).max(2);
    let mut mask = Vec::with_capacity(seqs.len() * (longest - 1));
    for ((p, toks), seq) in samples.iter().zip(&seqs) {
        let start = prompts[*p].tokens.len();
        for t in 0..longest - 1 {
            // Position t predicts token t + 1.
            let target = t + 1;
            mask.push(
                if target >= start && target < seq.len() && !toks.is_empty() {
                    1.0
                } else {
                    0.0
                },
            );
        }
    }
    let ordered: Vec<Prompt> = samples.iter().map(|(p, _)| prompts[*p].clone()).collect();
    (seqs, mask, longest - 1, merge_images(&ordered))
}

#[cfg(test)]
#[allow(clippy::panic)] // tests stop at the first broken expectation
mod tests {
    use super::{oversized_batch_warning, Cursor};
    use safer_ir::plan::SplitRef;

    #[test]
    fn a_batch_larger_than_the_data_is_warned_about() {
        let split = |split: Option<&str>| SplitRef {
            dataset: "d".into(),
            split: split.map(Into::into),
        };
        let warning = oversized_batch_warning("t", &split(Some("train")), 500, 4);
        assert_eq!(
            warning.as_deref(),
            Some("warning: stage t: a batch of 500 prompts is larger than its training data (`d.train`: 4 rows after filters and curation), so every step takes each row about 125 times; healthy: a batch of at most 4 (lower `batch` or add rows)")
        );
        assert!(oversized_batch_warning("t", &split(None), 5, 4)
            .is_some_and(|w| w.contains("(`d`: 4 rows")));
        assert_eq!(oversized_batch_warning("t", &split(None), 4, 4), None);
        assert_eq!(oversized_batch_warning("t", &split(None), 3, 4), None);
        // An empty split is an error of its own, not this warning.
        assert_eq!(oversized_batch_warning("t", &split(None), 3, 0), None);
    }

    #[test]
    fn cursor_covers_each_epoch_and_resumes() {
        let mut c = Cursor::default();
        let first = c.next(5, 5, 3);
        let mut sorted = first.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2, 3, 4]);
        let saved = c.clone();
        let a = c.next(7, 5, 3);
        let mut d = saved;
        assert_eq!(d.next(7, 5, 3), a);
        assert_eq!(c.epoch, 2);
        // 12 rows of 5 taken: 2.4 passes.
        assert!((c.epochs_done(5) - 2.4).abs() < 1e-12);
        let mut c = Cursor::default();
        c.next(4, 6, 3);
        assert!((c.epochs_done(6) - 4.0 / 6.0).abs() < 1e-12);
        c.next(4, 6, 3);
        assert!((c.epochs_done(6) - 8.0 / 6.0).abs() < 1e-12);
    }
}
