//! Turning a user's question (and images) into prompt tokens: the chat
//! template when the model has one, image placeholders expanded to one token
//! per patch (`tiny_vlm`) or per merged token of each image's own grid
//! (`qwen2_5_vl`), as Qwen2-VL's processor expands `<|image_pad|>`.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::generation::Prompt;
use crate::images::{load_patches, qwen};
use crate::model::{ModelConfig, ModelError};
use crate::text::TextTokenizer;

/// The image placeholder token the templates write.
pub const IMAGE_PAD: &str = "<|image_pad|>";
/// The token before each image of a Qwen2.5-VL prompt.
pub const VISION_START: &str = "<|vision_start|>";
/// The token after each image of a Qwen2.5-VL prompt.
pub const VISION_END: &str = "<|vision_end|>";

/// Checks the tokenizer against `config.json` (in `dir`): every token id
/// it can produce is within the model's vocabulary (a text that reaches a
/// token beyond it would stop a run part-way), and `image_token_id` is the
/// tokenizer's `<|image_pad|>` (a mismatch would leave the template's
/// placeholders unfilled, or fill another token with image features), and
/// a Qwen2.5-VL model's `vision_start_token_id` and `vision_end_token_id`
/// are the tokenizer's `<|vision_start|>` and `<|vision_end|>`.
///
/// # Errors
/// [`ModelError::Config`] naming both ids.
pub fn check_tokenizer_against_config(
    tokenizer: &TextTokenizer,
    config: &ModelConfig,
    dir: &Path,
) -> Result<(), ModelError> {
    let invalid = |reason: String| ModelError::Config {
        path: dir.join("config.json"),
        reason,
    };
    let vocab = config.text.vocab_size;
    if let Some(highest) = tokenizer.highest_id() {
        if highest as usize >= vocab {
            return Err(invalid(format!(
                "`vocab_size` is {vocab}, but the tokenizer (`tokenizer.json`) has token id {highest}: a text that reaches it has no embedding; use the tokenizer the model was trained with, or a model whose `vocab_size` is above {highest}"
            )));
        }
    }
    // End-of-sequence ids: `config.json`'s, then those the tokenizer adds
    // (`generation_config.json`, `tokenizer_config.json`'s `eos_token`).
    let outside = |ids: &[u32]| ids.iter().copied().find(|id| *id as usize >= vocab);
    if let Some(eos) = outside(&config.eos_token_ids) {
        return Err(invalid(format!(
            "`eos_token_id` {eos} is outside the vocabulary of {vocab} tokens"
        )));
    }
    if let Some(eos) = outside(&tokenizer.eos_ids) {
        return Err(ModelError::Config {
            path: dir.join("generation_config.json"),
            reason: format!(
                "the end-of-sequence id {eos} (`eos_token_id` here, or `tokenizer_config.json`'s `eos_token`) is outside the vocabulary of {vocab} tokens"
            ),
        });
    }
    let Some(id) = config.image_token_id else {
        return Ok(());
    };
    if id as usize >= config.text.vocab_size {
        return Err(invalid(format!(
            "`image_token_id` {id} is outside the vocabulary of {} tokens",
            config.text.vocab_size
        )));
    }
    match tokenizer.token_id(IMAGE_PAD) {
        Some(pad) if pad == id => {}
        Some(pad) => {
            return Err(invalid(format!(
                "`image_token_id` is {id}, but the tokenizer's `{IMAGE_PAD}` is {pad}; set `image_token_id` to {pad}"
            )))
        }
        None => {
            return Err(invalid(format!(
                "the model takes images (`image_token_id` {id}), but its tokenizer has no `{IMAGE_PAD}` token"
            )))
        }
    }
    // Qwen2.5-VL's prompts put each image between these two tokens, and
    // transformers' `get_rope_index` (vLLM's too) finds images by the token
    // after `vision_start_token_id`: an id the tokenizer gives another
    // token would have them place the trained model's positions otherwise
    // than saferc did.
    let Some(vision) = &config.qwen_vision else {
        return Ok(());
    };
    for (text, key, id) in [
        (
            VISION_START,
            "vision_start_token_id",
            vision.tokens.vision_start,
        ),
        (VISION_END, "vision_end_token_id", vision.tokens.vision_end),
    ] {
        match tokenizer.token_id(text) {
            Some(found) if found == id => {}
            Some(found) => {
                return Err(invalid(format!(
                    "`{key}` is {id}, but the tokenizer's `{text}` is {found}: transformers and vLLM find an image after `vision_start_token_id`; set `{key}` to {found}"
                )))
            }
            None => {
                return Err(invalid(format!(
                    "the model takes images, but its tokenizer has no `{text}` token: Qwen2.5-VL's prompts put each image between `{VISION_START}` and `{VISION_END}`"
                )))
            }
        }
    }
    Ok(())
}

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
    let with_images = !images.is_empty();
    if with_images && config.is_text_only() {
        return Err(ModelError::Request {
            reason: "this model takes text only; drop `--image`".into(),
        });
    }
    let mut messages = Vec::new();
    if let Some(system) = system {
        messages.push(json!({"role": "system", "content": system}));
    }
    let content = if with_images {
        let mut parts: Vec<Value> = images.iter().map(|_| json!({"type": "image"})).collect();
        parts.push(json!({"type": "text", "text": text}));
        Value::Array(parts)
    } else {
        Value::String(text.to_string())
    };
    messages.push(json!({"role": "user", "content": content}));
    let rendered = if tokenizer.has_chat_template() {
        tokenizer.apply_chat_template(&Value::Array(messages), None, true)?
    } else if with_images {
        format!(
            "{}{text}",
            format!("{VISION_START}{IMAGE_PAD}{VISION_END}").repeat(images.len())
        )
    } else {
        text.to_string()
    };
    let mut tokens = tokenizer.encode(&rendered)?;
    if !with_images {
        return Ok(Prompt {
            tokens,
            images: None,
        });
    }
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
    let patches = match (&config.vision, &config.qwen_vision) {
        (Some(vision), _) => load_patches(images, vision)?,
        (None, Some(vision)) => qwen::load_patches(images, vision)?,
        (None, None) => {
            return Ok(Prompt {
                tokens,
                images: None,
            })
        }
    };
    // Tokens per image: the tower's patches (`tiny_vlm`) or the merged
    // tokens of the image's grid (`qwen2_5_vl`).
    let mut per_image = (0..patches.count).map(|i| match (&config.vision, &config.qwen_vision) {
        (Some(vision), _) => vision.num_patches(),
        (None, Some(vision)) => patches.grids.get(i).map_or(0, |&g| vision.tokens(g)),
        (None, None) => 0,
    });
    tokens = tokens
        .into_iter()
        .flat_map(|t| {
            let n = if t == image_token {
                per_image.next().unwrap_or(0)
            } else {
                1
            };
            std::iter::repeat_n(t, n)
        })
        .collect();
    Ok(Prompt {
        tokens,
        images: Some(patches),
    })
}
