//! The tokenizer of a model directory: `tokenizer.json` through the Hugging
//! Face `tokenizers` crate, special tokens and the chat template from
//! `chat_template.jinja` / `chat_template.json` / `tokenizer_config.json`, end-of-sequence ids from
//! `generation_config.json` and `config.json`.

use std::path::Path;

use serde_json::Value;

use super::chat_template::{ChatRequest, ChatTemplate};
use crate::model::config::token_ids;
use crate::model::error::io_error;
use crate::model::ModelError;

/// A loaded tokenizer with what generation needs to know about it.
#[derive(Debug)]
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    /// The chat template and the file it came from.
    template: Option<(ChatTemplate, std::path::PathBuf)>,
    /// Ids that end a completion (`<|im_end|>`, `<|endoftext|>`, ...).
    pub eos_ids: Vec<u32>,
    /// The id used to pad batches.
    pub pad_id: u32,
    /// Special-token strings passed to the chat template (`bos_token`, `eos_token`, ...).
    special: Vec<(&'static str, String)>,
    /// The text of every special added token (`<|im_end|>`,
    /// `<|image_pad|>`, ...), longest first.
    control: Vec<String>,
    /// The most text bytes one token can stand for, bounded above by the
    /// longest token string in UTF-8 (a byte-level token's characters stand
    /// for one byte each, in one to two bytes), times 4 for a normaliser
    /// that shrinks text (NFKC writes a full-width letter's 3 bytes as 1).
    most_bytes_per_token: usize,
}

impl TextTokenizer {
    /// Loads the tokenizer files of `dir`.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(ModelError::MissingFile {
                dir: dir.to_path_buf(),
                file: "tokenizer.json",
                hint: "the Hugging Face fast tokenizer, as saved by `tokenizer.save_pretrained`",
            });
        }
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| ModelError::Tokenizer {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let config = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
        let token_text = |key: &str| -> Option<String> {
            match config.get(key)? {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
                _ => None,
            }
        };
        let mut special = Vec::new();
        for key in ["bos_token", "eos_token", "pad_token", "unk_token"] {
            if let Some(text) = token_text(key) {
                special.push((key, text));
            }
        }
        // `chat_template.jinja` wins; without one, the processor's
        // `chat_template.json` (as Qwen2-VL and Qwen2.5-VL checkpoints ship
        // it), then `tokenizer_config.json`'s `chat_template`: the order
        // transformers reads them in. A template that is there but unusable
        // is an error, never a silent fall back to raw prompts.
        let jinja = dir.join("chat_template.jinja");
        let processor = dir.join("chat_template.json");
        let template_source = match std::fs::read_to_string(&jinja) {
            Ok(text) => Some((text, jinja)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A `chat_template.json` without a `chat_template` (or a
                // null one) holds none: `tokenizer_config.json`'s is read
                // instead, as transformers does.
                let (from, file) = match read_json(&processor)? {
                    Some(value) if value.get("chat_template").is_some_and(|t| !t.is_null()) => {
                        (value, processor)
                    }
                    _ => (config.clone(), dir.join("tokenizer_config.json")),
                };
                chat_template_from_config(&from)
                    .map_err(|reason| ModelError::Tokenizer {
                        path: file.clone(),
                        reason,
                    })?
                    .map(|t| (t, file))
            }
            Err(e) => return Err(io_error(&jinja)(e)),
        };
        let template = template_source
            .map(|(s, path)| match ChatTemplate::new(&s) {
                Ok(template) => Ok((template, path)),
                Err(e) => Err(ModelError::Tokenizer {
                    path,
                    reason: e.to_string(),
                }),
            })
            .transpose()?;

        // The ids that end a completion: `generation_config.json`'s
        // `eos_token_id` where that file gives one, as transformers'
        // `generate` takes them; else `config.json`'s (transformers takes
        // it only where there is no `generation_config.json`, and with a
        // file that lacks the key would not stop at all); the tokenizer's
        // `eos_token` only where neither gives any.
        let mut eos_ids = Vec::new();
        for file in ["generation_config.json", "config.json"] {
            if let Some(v) = read_json(&dir.join(file))? {
                let ids =
                    token_ids(v.get("eos_token_id")).map_err(|reason| ModelError::Config {
                        path: dir.join(file),
                        reason,
                    })?;
                if eos_ids.is_empty() {
                    eos_ids = ids;
                }
            }
        }
        if eos_ids.is_empty() {
            if let Some(id) = token_text("eos_token").and_then(|t| inner.token_to_id(&t)) {
                eos_ids.push(id);
            }
        }
        eos_ids.sort_unstable();
        eos_ids.dedup();
        let pad_id = token_text("pad_token")
            .and_then(|t| inner.token_to_id(&t))
            .or_else(|| eos_ids.first().copied())
            .unwrap_or(0);
        let mut control: Vec<String> = inner
            .get_added_tokens_decoder()
            .into_values()
            .filter(|t| t.special && !t.content.is_empty())
            .map(|t| t.content)
            .collect();
        control.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        let longest = inner.get_vocab(true).keys().map(String::len).max();
        Ok(Self {
            inner,
            template,
            eos_ids,
            pad_id,
            special,
            control,
            most_bytes_per_token: longest.unwrap_or(1).max(1).saturating_mul(4),
        })
    }

    /// Whether `text` is certain to take more than `tokens` tokens, known
    /// from its length alone: such a text is refused before it is
    /// tokenized, which would take memory in proportion to it (about 200
    /// bytes per character).
    pub fn surely_longer_than(&self, text: &str, tokens: usize) -> bool {
        text.len() / self.most_bytes_per_token > tokens
    }

    /// The first special token written out in `text` (`<|im_end|>`): in a
    /// user's text it would be read as that control token (end the turn,
    /// stand for an image), as the chat template's own are.
    pub fn special_token_in(&self, text: &str) -> Option<&str> {
        self.control
            .iter()
            .find(|t| text.contains(t.as_str()))
            .map(String::as_str)
    }

    /// Token ids of `text`, without added special tokens (as the chat template already wrote them).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| ModelError::Tokenizer {
                path: "tokenizer.json".into(),
                reason: e.to_string(),
            })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids`; special tokens are dropped when `skip_special` is set.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, ModelError> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| ModelError::Tokenizer {
                path: "tokenizer.json".into(),
                reason: e.to_string(),
            })
    }

    /// The id of a token string (special tokens included).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The highest token id, added tokens included (`None`: no tokens).
    pub fn highest_id(&self) -> Option<u32> {
        self.inner.get_vocab(true).into_values().max()
    }

    /// The vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Whether a chat template was found.
    pub fn has_chat_template(&self) -> bool {
        self.template.is_some()
    }

    /// Renders a conversation with the model's chat template; the special
    /// tokens are available to the template as transformers provides them.
    pub fn apply_chat_template(
        &self,
        messages: &Value,
        tools: Option<&Value>,
        add_generation_prompt: bool,
    ) -> Result<String, ModelError> {
        let (template, path) = self.template.as_ref().ok_or_else(|| ModelError::Template {
            reason: "the model directory has no chat template (chat_template.jinja, chat_template.json or `chat_template` in tokenizer_config.json)".into(),
        })?;
        let extra: Vec<(&str, Value)> = self
            .special
            .iter()
            .map(|(k, v)| (*k, Value::String(v.clone())))
            .collect();
        // Errors name the template's file, as its syntax errors do.
        let in_file = |e: ModelError| ModelError::Tokenizer {
            path: path.clone(),
            reason: e.to_string(),
        };
        let rendered = template
            .render(&ChatRequest {
                messages,
                tools,
                add_generation_prompt,
                extra: &extra,
            })
            .map_err(in_file)?;
        if rendered.is_empty() {
            return Err(in_file(ModelError::Template {
                reason:
                    "it renders the conversation as empty text, so the model would be asked nothing"
                        .into(),
            }));
        }
        Ok(rendered)
    }
}

fn read_json(path: &Path) -> Result<Option<Value>, ModelError> {
    match std::fs::read_to_string(path) {
        Ok(text) => crate::model::error::parse_json(path, &text).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path)(e)),
    }
}

/// `tokenizer_config.json`'s `chat_template` (a string, or a list of named
/// templates of which the one named `default` is taken, as transformers
/// takes it: a list without one is refused, as transformers refuses it);
/// `None` without one.
fn chat_template_from_config(config: &Value) -> Result<Option<String>, String> {
    let Some(value) = config.get("chat_template") else {
        return Ok(None);
    };
    match value {
        Value::String(s) => Ok(Some(s.clone())),
        Value::Array(items) => {
            let name = |t: &Value| t.get("name").and_then(Value::as_str).map(str::to_string);
            let Some(default) = items.iter().find(|t| name(t).as_deref() == Some("default")) else {
                let names: Vec<String> = items
                    .iter()
                    .filter_map(name)
                    .map(|n| format!("`{n}`"))
                    .collect();
                return Err(format!(
                    "`chat_template` is a list of templates ({}) without one named `default`, the one transformers and saferc render; name the one to use `default`",
                    if names.is_empty() { "unnamed".to_string() } else { names.join(", ") }
                ));
            };
            default
                .get("template")
                .and_then(Value::as_str)
                .map(|t| Some(t.to_string()))
                .ok_or_else(|| "`chat_template`'s `default` entry has no `template` string".into())
        }
        Value::Null => Ok(None),
        other => Err(format!(
            "`chat_template` must be a string or a list of named templates, found {other}"
        )),
    }
}
