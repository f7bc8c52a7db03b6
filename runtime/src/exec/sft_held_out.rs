//! An SFT stage's held-out loss: the mean negative log-likelihood per
//! target token of its `eval_data` split's reference completions (the
//! stage's `field`, with the end-of-turn token), taught-forced as in
//! training, before the first step and after the last: the overfitting
//! check TRL's `SFTTrainer` reports as `eval_loss`. Rows without the field,
//! or whose target is cut to nothing, are left out and counted.

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use safer_ir::plan::{SftSpec, StageSpec};
use serde_json::{json, Value};

use super::data::Row;
use super::session::Session;
use super::skipped_rows::usable_prompts;
use super::ExecError;
use crate::generate::{completion_logprobs, Prompt};
use crate::grpo::to_vec;
use crate::model::Model;
use crate::text::TextTokenizer;

/// The target of `text` for a prompt of `prompt_tokens`: its tokens and
/// `eos`, cut to `max_tokens` and to what the model's `context` leaves
/// after the prompt (a cut target teaches no end-of-sequence); and its
/// length before the cut.
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
) -> Result<(Vec<u32>, usize), ExecError> {
    let mut target = tokenizer.encode(text)?;
    target.push(eos);
    let whole = target.len();
    let room = context.saturating_sub(prompt_tokens);
    target.truncate(max_tokens.map_or(room, |max| max.min(room)));
    Ok((target, whole))
}

/// The held-out rows an SFT stage scores, their prompts and targets.
pub struct HeldOut {
    prompts: Vec<Prompt>,
    targets: Vec<Vec<u32>>,
    /// Rows of the split left out: no text in the field, a special token
    /// in it, or a prompt that cannot be built or leaves no room.
    left_out: usize,
    batch: usize,
}

impl HeldOut {
    /// The stage's `eval_data` rows readied for scoring; `None` without a
    /// held-out split.
    ///
    /// # Errors
    /// With `on_bad_row = fail`, a row whose prompt cannot be built; the
    /// tokenizer failing.
    pub fn prepare<B: Backend>(
        session: &Session<'_, B>,
        stage: &StageSpec,
        s: &SftSpec,
        tokenizer: &TextTokenizer,
        model: &Model<impl Backend>,
    ) -> Result<Option<Self>, ExecError> {
        let Some(split) = &stage.eval_data else {
            return Ok(None);
        };
        let all = session.rows(split)?;
        let with_target: Vec<Row> = all
            .iter()
            .filter(|r| {
                r.text(&s.field)
                    .is_some_and(|t| tokenizer.special_token_in(&t).is_none())
            })
            .cloned()
            .collect();
        let lacking = all.len() - with_target.len();
        let config = &model.config;
        let (rows, prompts, unusable) = usable_prompts(
            &format!("stage {} (held-out loss)", stage.name),
            with_target,
            tokenizer,
            config,
            1,
            session.fails_on_bad_rows(&split.dataset),
        )?;
        let eos = config.eos_token_ids.first().copied().unwrap_or(0);
        let mut targets = Vec::with_capacity(rows.len());
        for (row, prompt) in rows.iter().zip(&prompts) {
            let text = row.text(&s.field).unwrap_or_default();
            let (target, _) = target_tokens(
                tokenizer,
                &text,
                eos,
                prompt.tokens.len(),
                config.context(),
                s.max_tokens,
            )?;
            targets.push(target);
        }
        Ok(Some(HeldOut {
            prompts,
            targets,
            left_out: lacking + unusable,
            batch: s.batch.max(1),
        }))
    }

    /// The mean negative log-likelihood per target token under `policy`
    /// (no gradient), or `None` when no row was left to score.
    ///
    /// # Errors
    /// Model errors.
    pub fn loss<B: AutodiffBackend>(
        &self,
        policy: &Model<B>,
        pad: u32,
    ) -> Result<Option<f64>, ExecError> {
        let model = policy.valid();
        let (mut sum, mut tokens) = (0.0f64, 0usize);
        for (prompts, targets) in self
            .prompts
            .chunks(self.batch)
            .zip(self.targets.chunks(self.batch))
        {
            let pairs: Vec<(usize, &[u32])> = targets
                .iter()
                .enumerate()
                .map(|(i, t)| (i, t.as_slice()))
                .collect();
            let scores = completion_logprobs(&model, prompts, &pairs, 1.0, pad)?;
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
