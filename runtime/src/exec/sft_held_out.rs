//! An SFT stage's held-out loss: the mean negative log-likelihood per
//! target token of its `eval_data` split's reference completions (the
//! stage's `field`, with the end-of-turn token), teacher-forced as in
//! training, before the first step and after the last: the overfitting
//! check, comparable to the `eval_loss` of TRL's `SFTTrainer` (which
//! averages per-batch means). Rows without the field, or whose prompt
//! cannot be built or leaves no room, are left out under the dataset's
//! `on_bad_row`, and counted. Also the rows an SFT stage can learn from
//! ([`Targets`]) and the target of one ([`target_tokens`]), shared with
//! training.

use std::sync::atomic::AtomicBool;

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use safer_ir::plan::{SftSpec, SplitRef, StageSpec};
use serde_json::{json, Value};

use super::data::Row;
use super::rollout::prompt;
use super::session::Session;
use super::skipped_rows::usable_prompts;
use super::{stop_if_interrupted, ExecError};
use crate::generate::completion_logprobs;
use crate::grpo::to_vec;
use crate::model::{Model, ModelConfig};
use crate::text::TextTokenizer;

/// The target of a row for a prompt: its tokens and the end-of-sequence.
pub struct Target {
    /// The tokens learnt, cut to `max_tokens` and to the context's room.
    pub tokens: Vec<u32>,
    /// Its length before the cut.
    pub whole: usize,
    /// Whether the context's room cut it (not `max_tokens` alone): a cut
    /// target teaches no end-of-sequence.
    pub cut_by_context: bool,
}

/// The target of `text` for a prompt of `prompt_tokens`: its tokens and
/// `eos`, cut to `max_tokens` and to what the model's `context` leaves
/// after the prompt.
///
/// # Errors
/// The tokenizer failing on `text`.
pub fn target_tokens(
    tokenizer: &TextTokenizer,
    text: &str,
    eos: u32,
    prompt_tokens: usize,
    context: usize,
    max_tokens: Option<usize>,
) -> Result<Target, ExecError> {
    let mut tokens = tokenizer.encode(text)?;
    tokens.push(eos);
    let whole = tokens.len();
    let room = context.saturating_sub(prompt_tokens);
    tokens.truncate(max_tokens.map_or(room, |max| max.min(room)));
    Ok(Target {
        tokens,
        whole,
        cut_by_context: whole > room && max_tokens.is_none_or(|max| max > room),
    })
}

/// Rows sorted by what an SFT stage can learn from them.
pub struct Targets {
    /// Rows with text in the field.
    pub usable: Vec<Row>,
    /// Rows without text in the field.
    pub lacking: Vec<Row>,
    /// Rows whose text spells one of the model's special tokens (which
    /// would be learnt as that control token), with the token.
    pub special: Vec<(Row, String)>,
}

impl Targets {
    /// `rows` sorted by their `field`'s text.
    pub fn of(rows: &[Row], field: &str, tokenizer: &TextTokenizer) -> Self {
        let mut sorted = Targets {
            usable: Vec::new(),
            lacking: Vec::new(),
            special: Vec::new(),
        };
        for row in rows {
            match row.text(field) {
                None => sorted.lacking.push(row.clone()),
                Some(text) => match tokenizer.special_token_in(&text) {
                    Some(token) => sorted.special.push((row.clone(), token.to_string())),
                    None => sorted.usable.push(row.clone()),
                },
            }
        }
        sorted
    }
}

/// The held-out rows an SFT stage scores and their targets.
pub struct HeldOut {
    rows: Vec<Row>,
    targets: Vec<Vec<u32>>,
    /// Rows of the split left out: no text in the field, a special token
    /// in it, or a prompt that cannot be built or leaves no room.
    left_out: usize,
    batch: usize,
    /// A hash of what is scored (rows, prompts' lengths, targets), kept
    /// with the loss before training in the stage's checkpoints.
    identity: String,
}

impl HeldOut {
    /// The stage's `eval_data` rows readied for scoring; `None` without a
    /// held-out split. Rows left out are named in a warning.
    ///
    /// # Errors
    /// A row left out, under `on_bad_row = fail`; the tokenizer failing.
    pub fn prepare<B: Backend>(
        session: &Session<'_, B>,
        stage: &StageSpec,
        s: &SftSpec,
        tokenizer: &TextTokenizer,
        config: &ModelConfig,
    ) -> Result<Option<Self>, ExecError> {
        let Some(split) = &stage.eval_data else {
            return Ok(None);
        };
        let fail = session.fails_on_bad_rows(&split.dataset);
        let sorted = Targets::of(session.rows(split)?, &s.field, tokenizer);
        // Each kind of row left out: how many, the first, and why.
        let kinds = [
            sorted.lacking.first().map(|first| {
                let why = format!("no text in the field `{}` that `sft` learns from", s.field);
                (sorted.lacking.len(), first, format!("with {why}"), why)
            }),
            sorted.special.first().map(|(first, token)| {
                let why = format!(
                    "the field `{}` holds `{token}`, one of the model's special tokens",
                    s.field
                );
                (sorted.special.len(), first, format!("where {why}"), why)
            }),
        ];
        let mut reasons: Vec<String> = Vec::new();
        for (count, first, said, why) in kinds.into_iter().flatten() {
            if fail {
                return Err(left_out_error(stage, split, &first.origin, &why));
            }
            reasons.push(format!("{count} {said} (the first: {})", first.origin));
        }
        let left = sorted.lacking.len() + sorted.special.len();
        if !reasons.is_empty() {
            crate::stderr_line!(
                "warning: stage {}: {left} row(s) of `{split}` left out of its held-out loss: {}",
                stage.name,
                reasons.join("; ")
            );
        }
        let (rows, prompts, unusable) = usable_prompts(
            &format!("stage {} (held-out loss)", stage.name),
            sorted.usable,
            tokenizer,
            config,
            1,
            fail,
        )?;
        let eos = config.eos_token_ids.first().copied().unwrap_or(0);
        let mut targets = Vec::with_capacity(rows.len());
        let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
        for (row, prompt) in rows.iter().zip(&prompts) {
            let text = row.text(&s.field).unwrap_or_default();
            let target = target_tokens(
                tokenizer,
                &text,
                eos,
                prompt.tokens.len(),
                config.context(),
                s.max_tokens,
            )?;
            // The images by path, size and time of change: a changed
            // image changes what is scored.
            let images: Vec<String> = row
                .images
                .iter()
                .map(|path| {
                    let meta = std::fs::metadata(path).ok();
                    let changed = meta
                        .as_ref()
                        .and_then(|m| m.modified().ok())
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_nanos());
                    format!(
                        "{}:{}:{changed}",
                        path.display(),
                        meta.map_or(0, |m| m.len())
                    )
                })
                .collect();
            let images = images.join("\n");
            for part in [
                row.origin.as_bytes(),
                row.prompt.as_bytes(),
                images.as_bytes(),
            ] {
                sha2::Digest::update(&mut hasher, (part.len() as u64).to_le_bytes());
                sha2::Digest::update(&mut hasher, part);
            }
            for token in prompt
                .tokens
                .iter()
                .chain([&u32::MAX])
                .chain(&target.tokens)
            {
                sha2::Digest::update(&mut hasher, token.to_le_bytes());
            }
            targets.push(target.tokens);
        }
        Ok(Some(HeldOut {
            rows,
            targets,
            left_out: left + unusable,
            batch: s.batch.max(1),
            identity: super::checkpoint::hex(&sha2::Digest::finalize(hasher)),
        }))
    }

    /// What is scored, hashed: a loss kept from before training is this
    /// split's only where the identities agree (a forced resume may have
    /// changed the split, the field or `max_tokens`).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Whether no row is left to score.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The mean negative log-likelihood per target token under `policy`
    /// (no gradient), or `None` when no row was left to score. Prompts are
    /// built a batch at a time (their images are not all held at once).
    ///
    /// # Errors
    /// Model errors; Ctrl+C between batches ([`ExecError::Stopped`]).
    pub fn loss<B: AutodiffBackend>(
        &self,
        policy: &Model<B>,
        tokenizer: &TextTokenizer,
        interrupt: &AtomicBool,
    ) -> Result<Option<f64>, ExecError> {
        let model = policy.valid();
        let (mut sum, mut tokens) = (0.0f64, 0usize);
        for (rows, targets) in self
            .rows
            .chunks(self.batch)
            .zip(self.targets.chunks(self.batch))
        {
            stop_if_interrupted(interrupt, || "scoring the held-out loss".into())?;
            let prompts = rows
                .iter()
                .map(|row| prompt(row, tokenizer, &model.config, None))
                .collect::<Result<Vec<_>, _>>()?;
            let pairs: Vec<(usize, &[u32])> = targets
                .iter()
                .enumerate()
                .map(|(i, t)| (i, t.as_slice()))
                .collect();
            let scores = completion_logprobs(&model, &prompts, &pairs, 1.0, tokenizer.pad_id)?;
            let width = scores.logprobs.dims()[1];
            let logprobs = to_vec(&scores.logprobs);
            for (i, target) in targets.iter().enumerate() {
                let row = &logprobs[i * width..i * width + target.len()];
                sum -= row.iter().map(|&l| f64::from(l)).sum::<f64>();
                tokens += target.len();
            }
        }
        Ok((tokens > 0).then(|| sum / tokens as f64))
    }

    /// The summary's `eval_loss`: the losses `before` and `after` and the
    /// rows scored and left out.
    pub fn summary(&self, before: Option<f64>, after: Option<f64>) -> Value {
        json!({
            "before": before,
            "after": after,
            "rows": self.targets.len(),
            "left_out": self.left_out,
        })
    }
}

/// The error of a row of `split`, stage `stage`'s held-out split, left
/// out (`why`) under `on_bad_row = fail`.
fn left_out_error(stage: &StageSpec, split: &SplitRef, origin: &str, why: &str) -> ExecError {
    ExecError::Data {
        dataset: split.dataset.clone(),
        message: format!(
            "bad row at {origin} (`{split}`, the held-out split of stage `{}`): {why} (the dataset says `on_bad_row = fail`; `skip` leaves such rows out of the held-out loss, counted)",
            stage.name
        ),
    }
}
