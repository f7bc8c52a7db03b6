//! E0332: text the run gives a model that holds one of the model's special
//! tokens (`<|im_end|>`, `<|endoftext|>`), read from the `tokenizer.json`
//! of its folder: a rollout's `stop` string (a completion's text is decoded
//! without special tokens, so it never holds one, and the end-of-sequence
//! tokens end a completion already) and a reflection's prompt (the chat
//! template would read it as that control token, not as text). `saferc run`
//! refuses both, but only when it first samples, which can be after a whole
//! earlier stage has trained. A folder that is not there yet, or a tokenizer
//! that does not read, is not checked here (the run's loader says why).

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;

use super::hir::{DeclRef, Value};
use super::Analyzer;
use crate::diagnostic::{Code, Diagnostic};
use crate::syntax::ast::DeclKind;

/// The part of `tokenizer.json` read here (the rest is skipped unparsed).
#[derive(Deserialize)]
struct TokenizerFile {
    #[serde(default)]
    added_tokens: Vec<AddedToken>,
}

#[derive(Deserialize)]
struct AddedToken {
    content: String,
    #[serde(default)]
    special: bool,
}

/// The largest `tokenizer.json` read (the checks run on every edit).
const MOST_BYTES: u64 = 64 << 20;

/// The special tokens of the tokenizer file at `path`, longest first;
/// `None` when it cannot be read.
fn special_tokens_in(path: &Path) -> Option<Vec<String>> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MOST_BYTES {
        return None;
    }
    let file: TokenizerFile = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let mut tokens: Vec<String> = file
        .added_tokens
        .into_iter()
        .filter(|t| t.special && !t.content.is_empty())
        .map(|t| t.content)
        .collect();
    tokens.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    Some(tokens)
}

impl Analyzer<'_> {
    /// E0332 for what the stages, evaluations and curations give their
    /// models: the rollouts' stop strings and the reflections' prompts.
    pub(crate) fn check_special_tokens(&mut self) {
        let mut said: HashSet<(usize, usize, String)> = HashSet::new();
        for i in 0..self.decls.len() {
            let s = self.decls[i].settings.clone();
            let uses = match self.decls[i].kind {
                DeclKind::Train => vec![(
                    s.reference("policy"),
                    s.reference("rollout"),
                    s.reference("reflection"),
                )],
                DeclKind::Eval => vec![(s.reference("model"), s.reference("rollout"), None)],
                // A curation without a rollout of its own samples with
                // the rollout of the first stage trained on the dataset.
                DeclKind::Dataset => s
                    .block("curate")
                    .map(|c| {
                        let rollout = c.reference("rollout").or_else(|| self.stage_rollout_on(i));
                        (c.reference("policy"), rollout, None)
                    })
                    .into_iter()
                    .collect(),
                _ => Vec::new(),
            };
            for (model, rollout, reflection) in uses {
                let Some(model) = model else {
                    continue;
                };
                for given in [rollout, reflection].into_iter().flatten() {
                    self.special_tokens_given(model, given, &mut said);
                }
            }
        }
    }

    /// The rollout of the first `train` stage whose `data` is dataset `i`.
    fn stage_rollout_on(&self, i: usize) -> Option<DeclRef> {
        self.decls
            .iter()
            .find(|d| {
                matches!(d.kind, DeclKind::Train)
                    && matches!(d.settings.get("data"), Some(Value::Split { dataset, .. }) if dataset.0 == i)
            })
            .and_then(|d| d.settings.reference("rollout"))
    }

    /// E0332 for a special token of `model` in the stop strings of rollout
    /// `given` or the prompt of reflection `given`, each said once per
    /// model (`said`).
    fn special_tokens_given(
        &mut self,
        model: DeclRef,
        given: DeclRef,
        said: &mut HashSet<(usize, usize, String)>,
    ) {
        let is_rollout = matches!(self.decls[given.0].kind, DeclKind::Rollout);
        let texts: Vec<String> = match is_rollout {
            true => self.decls[given.0].settings.strings("stop"),
            false => self
                .reflection_prompt(given.0)
                .map(|(text, _)| vec![text])
                .unwrap_or_default(),
        };
        // The tokenizer (megabytes, on every edit in the editor) is read
        // only where there is text to look in.
        if texts.is_empty() {
            return;
        }
        let Some(tokens) = self.model_special_tokens(model.0) else {
            return;
        };
        let mname = self.decls[model.0].name.clone();
        let gname = self.decls[given.0].name.clone();
        for text in texts {
            let Some(token) = tokens.iter().find(|t| text.contains(t.as_str())) else {
                continue;
            };
            if !said.insert((model.0, given.0, text.clone())) {
                continue;
            }
            let d = match is_rollout {
                true => Diagnostic::error(
                    Code::E0332,
                    format!("the stop string {text:?} of rollout `{gname}` holds `{token}`, a special token of model `{mname}`"),
                )
                .with_primary(self.setting_span(given.0, &["stop"]), "never in a completion's text")
                .with_note("a completion's text is decoded without its special tokens, so it never holds this string; `saferc run` refuses it when it first samples")
                .with_help("remove it: a completion already ends at the model's end-of-sequence tokens (a chat model's end of turn among them); stop strings are for text such as `\"</answer>\"`"),
                false => Diagnostic::error(
                    Code::E0332,
                    format!("the prompt of reflection `{gname}` holds `{token}`, a special token of model `{mname}`"),
                )
                .with_primary(self.setting_span(given.0, &["prompt"]), "read as that control token")
                .with_note("the chat template would read it as the control token (an end of turn, say), not as text; `saferc run` refuses it when it first reflects")
                .with_help("reword the prompt without the token: the chat template writes the turns' control tokens itself"),
            };
            self.diags.push(d);
        }
    }

    /// The special tokens of model declaration `i`'s tokenizer (its
    /// `tokenizer` folder or file, else its `weights` folder's
    /// `tokenizer.json`), read once; `None` where there is none to read.
    fn model_special_tokens(&mut self, i: usize) -> Option<Vec<String>> {
        if let Some(read) = self.model_special_tokens.get(&i) {
            return read.clone();
        }
        let read = self.read_model_special_tokens(i);
        self.model_special_tokens.insert(i, read.clone());
        read
    }

    /// [`Self::model_special_tokens`], read from disk.
    fn read_model_special_tokens(&self, i: usize) -> Option<Vec<String>> {
        let module = &self.loaded.modules[self.info[i].module];
        if !matches!(module.origin, super::loader::Origin::File(_)) {
            return None;
        }
        let settings = &self.decls[i].settings;
        let folder = |key: &str| match settings.get(key) {
            Some(Value::Path { resolved, .. }) => Some(std::path::PathBuf::from(resolved)),
            _ => None,
        };
        let file = match folder("tokenizer") {
            Some(t) if t.is_file() => t,
            Some(t) => t.join("tokenizer.json"),
            None => folder("weights")?.join("tokenizer.json"),
        };
        special_tokens_in(&file)
    }
}
