//! The `model` judge: a local model asked, for each completion and
//! criterion, for one number in the question's range (greedy, a few
//! tokens). The reply is parsed strictly ([`super::judge::parse_score`]);
//! a reply without a score, or one cut mid-word at the token limit, takes
//! the judge's declared `fallback` (counted: [`super::judge::JudgeCounts`]),
//! or is an error naming the reply when none is declared.
//!
//! A vision-language judge model is shown the row's images before the
//! question (as the policy was shown them), unless `images = false`.

use std::sync::Mutex;

use burn::tensor::backend::Backend;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use safer_ir::plan::EvalError;

use super::judge::{Judge, JudgeCounts, Question, JUDGE_SYSTEM_PROMPT};
use super::session::Loaded;
use crate::generate::{generate, user_prompt, FinishReason, Prompt, SamplingParams};

/// Tokens a judge may write.
const REPLY_TOKENS: usize = 8;

/// A local model judge.
pub struct ModelJudge<B: Backend> {
    name: String,
    model: Mutex<Loaded<B>>,
    fallback: Option<f64>,
    /// Why the rows' images are not shown, or `None` when they are.
    unseen: Option<String>,
    counts: JudgeCounts,
}

impl<B: Backend> ModelJudge<B> {
    /// A judge named `name` answering with `model`, shown the rows' images
    /// when `images` and the model takes them.
    pub fn new(name: &str, model: Loaded<B>, fallback: Option<f64>, images: bool) -> Self {
        let unseen = if model.model.config.is_text_only() {
            Some(format!(
                "its model in `{}` reads text only",
                model.dir.display()
            ))
        } else {
            (!images).then(|| "`images = false`".to_string())
        };
        ModelJudge {
            name: name.to_string(),
            model: Mutex::new(model),
            fallback,
            unseen,
            counts: JudgeCounts::default(),
        }
    }
}

impl<B: Backend> Judge for ModelJudge<B> {
    fn counts(&self) -> Option<&JudgeCounts> {
        Some(&self.counts)
    }

    // Its generation runs on the CPU's pool while it holds its model's lock.
    fn serial(&self) -> bool {
        true
    }

    fn ask(&self, question: &Question<'_>) -> Result<f64, EvalError> {
        self.counts.asking();
        let loaded = self.model.lock().unwrap_or_else(|p| p.into_inner());
        let fail = |m: String| EvalError::Call(format!("judge `{}`: {m}", self.name));
        let images = &question.row.images;
        let prompt = match &self.unseen {
            None if !images.is_empty() => {
                self.counts.showing_images();
                user_prompt(
                    &loaded.tokenizer,
                    &loaded.model.config,
                    &question.text(images.len()),
                    images,
                    Some(JUDGE_SYSTEM_PROMPT),
                )
                .map_err(|e| fail(format!("row {}: {e}", question.row.origin)))?
            }
            unseen => {
                if let Some(why) = unseen {
                    self.counts.unseen_images(&self.name, question.row, why);
                }
                let text = if loaded.tokenizer.has_chat_template() {
                    loaded
                        .tokenizer
                        .apply_chat_template(&question.messages(&[]), None, true)
                        .map_err(|e| fail(e.to_string()))?
                } else {
                    question.text(0)
                };
                let tokens = loaded
                    .tokenizer
                    .encode(&text)
                    .map_err(|e| fail(e.to_string()))?;
                Prompt {
                    tokens,
                    images: None,
                }
            }
        };
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let reply = generate(
            &loaded.model,
            &loaded.tokenizer,
            &[prompt],
            &SamplingParams::greedy(REPLY_TOKENS),
            &mut rng,
        )
        .map_err(|e| {
            fail(
                e.of_model(|| format!("its model in `{}`", loaded.dir.display()))
                    .to_string(),
            )
        })?;
        // A reply the token limit cut mid-word is no whole reply:
        // "0.1234567" could go on with more digits or words. One that
        // reached the limit writing blank lines after its number is whole.
        let said = match reply.first() {
            Some(c)
                if c.finish == FinishReason::Length && !c.text.ends_with(char::is_whitespace) =>
            {
                format!("{}… (cut at {REPLY_TOKENS} tokens)", c.text)
            }
            Some(c) => c.text.clone(),
            None => String::new(),
        };
        self.counts
            .score_of(&self.name, &said, question.range, self.fallback, None)
            .map_err(EvalError::Call)
    }
}
