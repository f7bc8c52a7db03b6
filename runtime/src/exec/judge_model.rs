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

use super::judge::{Judge, JudgeCounts, Question, Reply, JUDGE_SYSTEM_PROMPT};
use super::session::Loaded;
use crate::generate::{generate, user_prompt, FinishReason, Prompt, SamplingParams};

/// Tokens a judge may write unless its `max_tokens` says otherwise.
pub const REPLY_TOKENS: usize = 8;

/// A local model judge.
pub struct ModelJudge<B: Backend> {
    name: String,
    model: Mutex<Loaded<B>>,
    fallback: Option<f64>,
    /// The longest reply, in tokens.
    reply_tokens: usize,
    /// Why the rows' images are not shown, or `None` when they are.
    unseen: Option<String>,
    counts: JudgeCounts,
}

impl<B: Backend> ModelJudge<B> {
    /// A judge named `name` answering with `model` in replies of at most
    /// [`REPLY_TOKENS`] tokens, shown the rows' images when `images` and the
    /// model takes them.
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
            reply_tokens: REPLY_TOKENS,
            unseen,
            counts: JudgeCounts::default(),
        }
    }
}

impl<B: Backend> ModelJudge<B> {
    /// The judge with replies of at most `tokens` tokens (`max_tokens`).
    pub fn with_reply_tokens(mut self, tokens: usize) -> Self {
        self.reply_tokens = tokens.max(1);
        self
    }

    /// The prompt `question` is asked with: the row's images before the
    /// question when the judge is shown them ([`user_prompt`], with the
    /// system prompt), else the chat messages of [`Question::messages`]
    /// (or the question's text, for a model without a chat template).
    fn prompt_for(&self, loaded: &Loaded<B>, question: &Question<'_>) -> Result<Prompt, String> {
        let images = &question.row.images;
        if self.unseen.is_none() && !images.is_empty() {
            let prompt = user_prompt(
                &loaded.tokenizer,
                &loaded.model.config,
                &question.text(images.len()),
                images,
                Some(JUDGE_SYSTEM_PROMPT),
            )
            .map_err(|e| format!("row {}: {e}", question.row.origin))?;
            self.counts.showing_images();
            return Ok(prompt);
        }
        if let Some(why) = &self.unseen {
            self.counts.unseen_images(&self.name, question.row, why);
        }
        let text = if loaded.tokenizer.has_chat_template() {
            loaded
                .tokenizer
                .apply_chat_template(&question.messages(&[]), None, true)
                .map_err(|e| e.to_string())?
        } else {
            question.text(0)
        };
        let tokens = loaded.tokenizer.encode(&text).map_err(|e| e.to_string())?;
        Ok(Prompt {
            tokens,
            images: None,
        })
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
        let loaded = self.model.lock().unwrap_or_else(|p| p.into_inner());
        let fail = |m: String| EvalError::Call(format!("judge `{}`: {m}", self.name));
        // A completion that spells one of the model's special tokens
        // (`<|im_end|>` written out) would be read as that control token in
        // the judge's prompt: the judge is not asked, as a reply without a
        // score is not scored.
        let text = question.text(question.row.images.len());
        if let Some(token) = loaded.tokenizer.special_token_in(&text) {
            let why = format!(
                "its question about {} holds `{token}`, one of its model's special tokens, which its prompt would read as that control token",
                question.row.origin
            );
            return self
                .counts
                .unasked(&self.name, &why, question.range, self.fallback)
                .map_err(EvalError::Call);
        }
        self.counts.asking();
        let prompt = self.prompt_for(&loaded, question).map_err(fail)?;
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let reply = generate(
            &loaded.model,
            &loaded.tokenizer,
            &[prompt],
            &SamplingParams::greedy(self.reply_tokens),
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
                format!("{}… (cut at {} tokens)", c.text, self.reply_tokens)
            }
            Some(c) => c.text.clone(),
            None => String::new(),
        };
        self.counts
            .score_of(
                &self.name,
                Reply::Said(&said),
                question.range,
                self.fallback,
                None,
            )
            .map_err(EvalError::Call)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::exec::data::Row;
    use crate::exec::session::load;
    use crate::model::tiny_vlm::{create, Preset};
    use crate::CpuBackend;

    /// A tiny `tiny_vlm` judge model in a fresh folder, with a row whose
    /// question shows one image.
    fn judge_and_row(name: &str) -> (Loaded<CpuBackend>, Row) {
        let dir =
            std::env::temp_dir().join(format!("saferc-judge-model-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        create::<CpuBackend>(&dir.join("model"), Preset::Tiny, 0, &Default::default()).unwrap();
        let image = dir.join("a.png");
        image::RgbImage::from_pixel(8, 8, image::Rgb([200, 30, 30]))
            .save(&image)
            .unwrap();
        let row = Row {
            id: "r1".into(),
            origin: "rows.jsonl:1".into(),
            fields: BTreeMap::new(),
            prompt: "What is this?".into(),
            images: vec![image],
        };
        (load(&dir.join("model"), &Default::default()).unwrap(), row)
    }

    fn question<'a>(row: &'a Row, completion: &'a str) -> Question<'a> {
        Question {
            criterion: "harmless",
            description: Some("Safe, given the image."),
            row,
            completion,
            range: (0.0, 1.0),
        }
    }

    /// A vision-language judge's prompt carries the row's image (one
    /// image token per patch group, the patches given); with
    /// `images = false` it carries none, and says so.
    #[test]
    fn a_vision_language_judge_is_shown_the_row_s_images() {
        let (loaded, row) = judge_and_row("images");
        let dir = loaded.dir.clone();
        let image_token = loaded.model.config.image_token_id.unwrap();
        let seeing = ModelJudge::new("seeing", loaded, Some(0.5), true);
        let q = question(&row, "It is a red square.");
        let guard = seeing.model.lock().unwrap();
        let prompt = seeing.prompt_for(&guard, &q).unwrap();
        assert!(prompt.images.is_some());
        assert!(prompt.tokens.contains(&image_token));
        drop(guard);
        assert_eq!(seeing.counts.to_json()["with_images"], 1);
        let blind = ModelJudge::new(
            "blind",
            load::<CpuBackend>(&dir, &Default::default()).unwrap(),
            Some(0.5),
            false,
        );
        let guard = blind.model.lock().unwrap();
        let prompt = blind.prompt_for(&guard, &q).unwrap();
        assert!(prompt.images.is_none());
        assert!(!prompt.tokens.contains(&image_token));
        drop(guard);
        assert_eq!(blind.counts.to_json()["with_images"], 0);
    }

    /// A completion that spells a special token is not asked about: the
    /// fallback scores it (counted), or, without one, an error says why.
    #[test]
    fn a_completion_spelling_a_special_token_takes_the_fallback() {
        let (loaded, row) = judge_and_row("special");
        let dir = loaded.dir.clone();
        let token = loaded
            .tokenizer
            .special_token_in("<|im_end|>")
            .map(str::to_string)
            .unwrap_or_else(|| "<|endoftext|>".to_string());
        let spelled = format!("Sure.{token} More.");
        assert!(
            loaded.tokenizer.special_token_in(&spelled).is_some(),
            "{spelled}"
        );
        let with_fallback = ModelJudge::new("j", loaded, Some(0.25), true);
        let score = with_fallback.ask(&question(&row, &spelled)).unwrap();
        assert_eq!(score, 0.25);
        let counts = with_fallback.counts.to_json();
        assert_eq!(
            (counts["asked"].as_u64(), counts["fallbacks"].as_u64()),
            (Some(0), Some(1)),
            "a question not asked is not counted as asked, but its fallback is"
        );
        let strict = ModelJudge::new(
            "j",
            load::<CpuBackend>(&dir, &Default::default()).unwrap(),
            None,
            true,
        );
        let error = strict
            .ask(&question(&row, &spelled))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("was not asked") && error.contains("declare `fallback"),
            "{error}"
        );
    }
}
