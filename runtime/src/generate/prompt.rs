//! Turning a user's question (and images) into prompt tokens: the chat
//! template when the model has one, image placeholders expanded to one token
//! per patch (as Qwen2-VL's processor expands `<|image_pad|>`).

use std::path::PathBuf;

use serde_json::{json, Value};

use super::generation::Prompt;
use crate::images::load_patches;
use crate::model::{ModelConfig, ModelError};
use crate::text::TextTokenizer;

/// The image placeholder token the templates write.
pub const IMAGE_PAD: &str = "<|image_pad|>";

/// Builds the prompt of one user turn with `images` (in order, before the text).
pub fn user_prompt(
    tokenizer: &TextTokenizer,
    config: &ModelConfig,
    text: &str,
    images: &[PathBuf],
    system: Option<&str>,
) -> Result<Prompt, ModelError> {
    // A special token in the user's own text would be read as that control
    // token (the template's special tokens are parsed in what it renders):
    // the image placeholder taken for an image, `<|im_end|>` ending the turn.
    let found = tokenizer
        .special_token_in(text)
        .or_else(|| system.and_then(|s| tokenizer.special_token_in(s)));
    if let Some(token) = found {
        return Err(ModelError::PromptText {
            reason: if token == IMAGE_PAD {
                format!("the text holds `{IMAGE_PAD}`, the token that stands for an image; give images as images, not as that token")
            } else {
                format!("the text holds `{token}`, one of the model's special tokens, which would be read as that control token, not as text")
            },
        });
    }
    let vision = match (&config.vision, images.is_empty()) {
        (_, true) => None,
        (Some(vision), false) => Some(vision),
        (None, false) => {
            return Err(ModelError::Request {
                reason: "this model takes text only; drop `--image`".into(),
            })
        }
    };
    let mut messages = Vec::new();
    if let Some(system) = system {
        messages.push(json!({"role": "system", "content": system}));
    }
    let content = if vision.is_some() {
        let mut parts: Vec<Value> = images.iter().map(|_| json!({"type": "image"})).collect();
        parts.push(json!({"type": "text", "text": text}));
        Value::Array(parts)
    } else {
        Value::String(text.to_string())
    };
    messages.push(json!({"role": "user", "content": content}));
    let rendered = if tokenizer.has_chat_template() {
        tokenizer.apply_chat_template(&Value::Array(messages), None, true)?
    } else if vision.is_some() {
        format!(
            "{}{text}",
            format!("<|vision_start|>{IMAGE_PAD}<|vision_end|>").repeat(images.len())
        )
    } else {
        text.to_string()
    };
    let mut tokens = tokenizer.encode(&rendered)?;
    let Some(vision) = vision else {
        return Ok(Prompt {
            tokens,
            images: None,
        });
    };
    let image_token = config.image_token_id.unwrap_or_default();
    let pads = tokens.iter().filter(|&&t| t == image_token).count();
    if pads != images.len() {
        return Err(ModelError::Template {
            reason: format!(
                "the chat template wrote {pads} image placeholders for {} images",
                images.len()
            ),
        });
    }
    tokens = tokens
        .into_iter()
        .flat_map(|t| {
            let n = if t == image_token {
                vision.num_patches()
            } else {
                1
            };
            std::iter::repeat_n(t, n)
        })
        .collect();
    Ok(Prompt {
        tokens,
        images: Some(load_patches(images, vision)?),
    })
}
