//! Rows whose prompt cannot be used, set aside as bad rows: a prompt that
//! cannot be built (the question holds the image placeholder token, the
//! chat template fails on the row), or one that leaves no room in the
//! model's context for the new tokens, or an image a stage that trains the
//! vision tower refuses. Each phase (a stage, curation, an evaluation)
//! names them in one warning, gathered over its batches, and counts them in
//! its `skipped_rows` in `summary.json`; or stops at the first under the
//! dataset's `on_bad_row = fail`.

use rayon::prelude::*;

use super::data::Row;
use super::rollout::prompt;
use super::ExecError;
use crate::generate::Prompt;
use crate::model::ModelConfig;
use crate::text::TextTokenizer;

/// The prompts of `rows` that can be built and leave room for `new_tokens`
/// in the run's context ([`ModelConfig::context`]), with their rows, and
/// how many rows were skipped; those are named in one warning (`what`
/// names the phase), or, with `fail`, the first is an error.
///
/// # Errors
/// With `fail`, the first bad row; errors that are not a row's.
pub fn usable_prompts(
    what: &str,
    rows: Vec<Row>,
    tokenizer: &TextTokenizer,
    config: &ModelConfig,
    new_tokens: usize,
    fail: bool,
) -> Result<(Vec<Row>, Vec<Prompt>, usize), ExecError> {
    let mut skipped = SkippedRows::new(what);
    let (rows, prompts) = skipped.usable(rows, tokenizer, config, new_tokens, fail)?;
    skipped.warn();
    Ok((rows, prompts, skipped.count()))
}

/// Why a row was set aside.
#[derive(Clone, Copy, PartialEq)]
enum Why {
    /// Its prompt could not be built.
    Unbuilt,
    /// Its prompt leaves no room for the new tokens.
    TooLong,
}

/// The rows set aside in one phase, gathered over several batches (an
/// evaluation's chunks) so that one warning names them all.
pub struct SkippedRows<'a> {
    what: &'a str,
    /// The first skipped row's origin and reason.
    first: Option<(String, String)>,
    /// Every skipped row's origin and why.
    skipped: Vec<(String, Why)>,
}

impl<'a> SkippedRows<'a> {
    /// No rows skipped yet; `what` names the phase in the warning.
    pub fn new(what: &'a str) -> Self {
        SkippedRows {
            what,
            first: None,
            skipped: Vec::new(),
        }
    }

    /// Builds the prompts of `rows` (in parallel) and keeps those that
    /// leave room for `new_tokens` in the run's context; records the others,
    /// in the rows' order (with `fail`, the first bad row in the file stops
    /// the run, whichever its fault).
    ///
    /// # Errors
    /// With `fail`, the first bad row; errors that are not a row's.
    pub fn usable(
        &mut self,
        rows: Vec<Row>,
        tokenizer: &TextTokenizer,
        config: &ModelConfig,
        new_tokens: usize,
        fail: bool,
    ) -> Result<(Vec<Row>, Vec<Prompt>), ExecError> {
        let built: Vec<Result<Prompt, ExecError>> = rows
            .par_iter()
            .map(|r| prompt(r, tokenizer, config, None))
            .collect();
        let context = config.context();
        let mut kept = (
            Vec::with_capacity(rows.len()),
            Vec::with_capacity(rows.len()),
        );
        for (row, result) in rows.into_iter().zip(built) {
            match result {
                Ok(p) => {
                    if let Some((row, p)) = self.fitting(row, p, new_tokens, context, fail)? {
                        kept.0.push(row);
                        kept.1.push(p);
                    }
                }
                Err(ExecError::Row { origin, message }) => {
                    self.set_aside(origin, message, Why::Unbuilt, fail)?;
                }
                Err(other) => return Err(other),
            }
        }
        Ok(kept)
    }

    /// Keeps the rows (and prompts) that leave room for `new_tokens` in
    /// `context`, records the others: [`SkippedRows::usable`]'s measure,
    /// on prompts the tests make.
    ///
    /// # Errors
    /// With `fail`, the first row that does not fit.
    #[cfg(test)]
    fn fit(
        &mut self,
        rows: Vec<Row>,
        prompts: Vec<Prompt>,
        new_tokens: usize,
        context: usize,
        fail: bool,
    ) -> Result<(Vec<Row>, Vec<Prompt>), ExecError> {
        let mut kept = (
            Vec::with_capacity(rows.len()),
            Vec::with_capacity(rows.len()),
        );
        for (row, prompt) in rows.into_iter().zip(prompts) {
            if let Some((row, prompt)) = self.fitting(row, prompt, new_tokens, context, fail)? {
                kept.0.push(row);
                kept.1.push(prompt);
            }
        }
        Ok(kept)
    }

    /// `row` with its prompt when they leave room for `new_tokens` in
    /// `context`; else it is recorded (or, with `fail`, the error).
    fn fitting(
        &mut self,
        row: Row,
        prompt: Prompt,
        new_tokens: usize,
        context: usize,
        fail: bool,
    ) -> Result<Option<(Row, Prompt)>, ExecError> {
        if prompt.tokens.len().saturating_add(new_tokens) <= context {
            return Ok(Some((row, prompt)));
        }
        let reason = format!(
            "its prompt is {} tokens, which with {new_tokens} new tokens exceeds the model's context of {context}",
            prompt.tokens.len()
        );
        self.set_aside(row.origin, reason, Why::TooLong, fail)?;
        Ok(None)
    }

    /// Records a bad row, or with `fail` returns it as the error.
    fn set_aside(
        &mut self,
        origin: String,
        reason: String,
        why: Why,
        fail: bool,
    ) -> Result<(), ExecError> {
        if fail {
            return Err(ExecError::Row {
                origin,
                message: format!(
                    "{reason} (the dataset says `on_bad_row = fail`; `skip` skips such rows)"
                ),
            });
        }
        if self.first.is_none() {
            self.first = Some((origin.clone(), reason));
        }
        self.skipped.push((origin, why));
        Ok(())
    }

    /// How many rows were set aside (the phase's `skipped_rows` in
    /// `summary.json`).
    pub fn count(&self) -> usize {
        self.skipped.len()
    }

    /// Prints the warning: the first row with its reason, then (when there
    /// were several) their count and the first five.
    pub fn warn(&self) {
        for line in self.warning() {
            crate::stderr_line!("{line}");
        }
    }

    /// The lines [`SkippedRows::warn`] prints; none when no row was skipped.
    pub fn warning(&self) -> Vec<String> {
        let what = self.what;
        let mut lines = Vec::new();
        if let Some((origin, reason)) = &self.first {
            lines.push(format!(
                "warning: {what}: row {origin}: {reason}; it is skipped"
            ));
        }
        let n = self.skipped.len();
        if n > 1 {
            let too_long = self
                .skipped
                .iter()
                .filter(|(_, w)| *w == Why::TooLong)
                .count();
            let kind = if too_long == n {
                "rows too long for the model's context".to_string()
            } else if too_long == 0 {
                "rows whose prompt cannot be built".to_string()
            } else {
                format!(
                    "rows ({too_long} too long for the model's context, {} whose prompt cannot be built)",
                    n - too_long
                )
            };
            // Of both kinds, each row says which it is.
            let mixed = too_long != 0 && too_long != n;
            let shown: Vec<String> = self
                .skipped
                .iter()
                .take(5)
                .map(|(o, w)| match (mixed, w) {
                    (false, _) => o.clone(),
                    (true, Why::TooLong) => format!("{o} (too long)"),
                    (true, Why::Unbuilt) => format!("{o} (prompt cannot be built)"),
                })
                .collect();
            lines.push(format!(
                "warning: {what}: skipped {n} {kind}: {}{}",
                shown.join(", "),
                if n > shown.len() { ", ..." } else { "" }
            ));
        }
        lines
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::SkippedRows;
    use crate::exec::data::Row;
    use crate::generate::Prompt;

    fn row(origin: &str) -> Row {
        Row::at(origin)
    }

    fn prompt(n: usize) -> Prompt {
        Prompt {
            tokens: vec![1; n],
            images: None,
        }
    }

    #[test]
    fn rows_too_long_for_the_context_are_skipped_or_fail() {
        let rows = || vec![row("a:1"), row("a:2"), row("a:3")];
        let prompts = || vec![prompt(10), prompt(30), prompt(22)];
        let mut skipped = SkippedRows::new("t");
        let (kept, kept_prompts) = skipped.fit(rows(), prompts(), 8, 30, false).unwrap();
        let origins: Vec<&str> = kept.iter().map(|r| r.origin.as_str()).collect();
        assert_eq!(origins, ["a:1", "a:3"]);
        assert_eq!(kept_prompts[1].tokens.len(), 22);
        let err = SkippedRows::new("t")
            .fit(rows(), prompts(), 8, 30, true)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with("row a:2: its prompt is 30 tokens"), "{err}");
        assert!(err.contains("on_bad_row = fail"), "{err}");
        // Over several batches (an evaluation's chunks), one warning names
        // every skipped row.
        let mut skipped = SkippedRows::new("evaluation");
        for _ in 0..2 {
            let (kept, _) = skipped.fit(rows(), prompts(), 8, 30, false).unwrap();
            assert_eq!(kept.len(), 2);
        }
        assert_eq!(
            skipped.warning(),
            [
                "warning: evaluation: row a:2: its prompt is 30 tokens, which with 8 new tokens exceeds the model's context of 30; it is skipped",
                "warning: evaluation: skipped 2 rows too long for the model's context: a:2, a:2",
            ]
        );
        assert!(SkippedRows::new("t").warning().is_empty());
        // Of both kinds, each named row says which.
        let mut skipped = SkippedRows::new("t");
        skipped.fit(rows(), prompts(), 8, 30, false).unwrap();
        skipped
            .set_aside(
                "a:9".into(),
                "no template".into(),
                super::Why::Unbuilt,
                false,
            )
            .unwrap();
        assert_eq!(
            skipped.warning()[1],
            "warning: t: skipped 2 rows (1 too long for the model's context, 1 whose prompt cannot be built): a:2 (too long), a:9 (prompt cannot be built)"
        );
    }

    /// A stage that trains a Qwen2.5-VL vision tower refuses an image whose
    /// full-attention scores would pass the limit; with the tower frozen
    /// (`freeze_vision`) the stage takes the row, as the phases that only
    /// score it do (their model is loaded from disk, not readied for
    /// training).
    #[test]
    fn a_tower_in_training_refuses_an_image_a_frozen_tower_takes() {
        use crate::model::Model;
        type B = burn::backend::Autodiff<crate::CpuBackend>;
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/qwen2_5_vl");
        let tokenizer = crate::text::TextTokenizer::load(&dir).unwrap();
        let mut with_image = row("rows.jsonl:1");
        with_image.prompt = "What is shown?".into();
        // 84×56 pixels: 6×4 = 24 patches.
        with_image.images = vec![dir.join("images/wide.png")];
        let usable = |model: &Model<B>| {
            // A tower of 2^20 heads, whose scores hold at most 22 patches.
            let mut config = model.config.clone();
            config.qwen_vision.as_mut().unwrap().num_heads = 1 << 20;
            let (rows, _, skipped) =
                super::usable_prompts("t", vec![with_image.clone()], &tokenizer, &config, 1, false)
                    .unwrap();
            assert_eq!(rows.len() + skipped, 1);
            rows.len()
        };
        let loaded = Model::<B>::load(&dir, &Default::default()).unwrap();
        assert_eq!(usable(&loaded), 1);
        assert_eq!(usable(&loaded.clone().for_training(false)), 0);
        assert_eq!(usable(&loaded.for_training(true)), 1);
    }

    /// Under `on_bad_row = fail` the first bad row in the file stops the
    /// run, whether its prompt is too long (found once tokenized) or cannot
    /// be built at all (a special token in it): the prompts were all built
    /// before any was measured, so a later unbuildable row came first.
    #[test]
    fn the_first_bad_row_in_the_file_is_the_one_named() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/qwen2-tied");
        let tokenizer = crate::text::TextTokenizer::load(&dir).unwrap();
        let config = crate::model::ModelConfig::read(&dir).unwrap();
        let mut long = row("rows.jsonl:4");
        long.prompt = "word ".repeat(config.context());
        assert!(!tokenizer.surely_longer_than(&long.prompt, config.context()));
        let mut special = row("rows.jsonl:8");
        special.prompt = "Hello <|im_end|> there".into();
        let err = SkippedRows::new("t")
            .usable(vec![long, special], &tokenizer, &config, 1, true)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("rows.jsonl:4") && err.contains("exceeds the model's context"),
            "{err}"
        );
    }

    /// A prompt whose length alone shows it cannot fit the context is set
    /// aside before it is tokenized (which would take memory in proportion
    /// to it); one just within that bound is tokenized and then measured.
    #[test]
    fn a_prompt_far_too_long_is_set_aside_before_it_is_tokenized() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/qwen2-tied");
        let tokenizer = crate::text::TextTokenizer::load(&dir).unwrap();
        let config = crate::model::ModelConfig::read(&dir).unwrap();
        let context = config.context();
        let mut huge = row("rows.jsonl:1");
        huge.prompt = "x".repeat(context * 1000);
        assert!(tokenizer.surely_longer_than(&huge.prompt, context));
        let mut short = row("rows.jsonl:2");
        short.prompt = "What is shown?".into();
        assert!(!tokenizer.surely_longer_than(&short.prompt, context));
        let mut skipped = SkippedRows::new("t");
        let (rows, _) = skipped
            .usable(vec![huge, short], &tokenizer, &config, 1, false)
            .unwrap();
        assert_eq!(rows.len(), 1);
        let warning = skipped.warning().join("\n");
        assert!(
            warning.contains("rows.jsonl:1") && warning.contains("bytes, longer than"),
            "{warning}"
        );
    }
}
