//! `config.json`: which architecture a model directory holds, and its sizes.
//!
//! `model_type = "qwen2"` reads the Qwen2/Qwen2.5 fields (transformers 4 and
//! 5 spellings: `rope_theta` or `rope_parameters.rope_theta`); `"tiny_vlm"`
//! reads `text_config`, `vision_config` and `image_token_id`;
//! `"qwen2_5_vl"` reads Qwen2.5-VL's (the text fields at the top level, as
//! transformers 4 writes them, or in `text_config`, as transformers 5
//! does; the M-RoPE sections from `rope_scaling` or `rope_parameters`), and
//! [`ModelConfig::read`] adds the image processor's settings from
//! `preprocessor_config.json` (or `processor_config.json`). Anything else is
//! an unknown-architecture error naming the file.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::decoder::TextConfig;
use super::error::{io_error, ModelError};
use super::qwen_vision::{QwenVisionConfig, VisionTokenIds};
use super::vision::VisionConfig;

/// The architectures saferc implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    /// Qwen2 / Qwen2.5 text models.
    Qwen2,
    /// The built-in small vision-language model.
    TinyVlm,
    /// Qwen2.5-VL: a Qwen2 decoder with multimodal rotary positions and a
    /// windowed vision transformer.
    #[serde(rename = "qwen2_5_vl")]
    Qwen25Vl,
}

/// Everything `config.json` says that the runtime uses.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// Which architecture.
    pub architecture: Architecture,
    /// The decoder, embeddings and LM head.
    pub text: TextConfig,
    /// The vision tower of `tiny_vlm`.
    pub vision: Option<VisionConfig>,
    /// The vision tower of `qwen2_5_vl`, with its image processing.
    pub qwen_vision: Option<QwenVisionConfig>,
    /// The placeholder token replaced by image features (`tiny_vlm`,
    /// `qwen2_5_vl`).
    pub image_token_id: Option<u32>,
    /// End-of-sequence ids named by the model's config.
    pub eos_token_ids: Vec<u32>,
    /// A run's limit on prompt and completion together below
    /// `text.max_position_embeddings` (a model's declared `context`); never
    /// written to `config.json`, so a trained model keeps the file's.
    pub context_limit: Option<usize>,
    /// The `config.json` value this configuration was read from (none for a
    /// model saferc made): [`ModelConfig::to_json`] writes it back as it
    /// was, so that a trained copy keeps every field saferc does not use
    /// (`bos_token_id`, `torch_dtype`, `sliding_window`, `rope_parameters`,
    /// ...) and the file's own layout (Qwen2.5-VL's decoder fields at the
    /// top level for transformers 4, in `text_config` for transformers 5),
    /// for transformers or vLLM to load the copy as they loaded the source.
    pub source: ConfigSource,
}

/// The `config.json` value a [`ModelConfig`] was read from. It does not make
/// two configurations differ: equal sizes and settings are the same model
/// whatever file spelled them.
#[derive(Clone, Debug, Default)]
pub struct ConfigSource(pub Option<Value>);

impl PartialEq for ConfigSource {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl ModelConfig {
    /// Whether the model reads text only (no vision tower: a `qwen2`).
    pub fn is_text_only(&self) -> bool {
        self.vision.is_none() && self.qwen_vision.is_none()
    }

    /// The longest prompt and completion together a run allows: the
    /// declared `context` when it is set, else `config.json`'s
    /// `max_position_embeddings`.
    pub fn context(&self) -> usize {
        let file = self.text.max_position_embeddings;
        self.context_limit.map_or(file, |c| c.min(file))
    }

    /// Reads `dir/config.json`.
    pub fn read(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join("config.json");
        if !dir.is_dir() {
            return Err(ModelError::NotAFolder {
                reason: if dir.exists() {
                    format!(
                        "`{}` is a file; a model is the folder that holds `config.json`, the weights and the tokenizer",
                        dir.display()
                    )
                } else {
                    format!(
                        "model folder `{}` does not exist; point `weights` at a Hugging Face model folder (its `config.json`, weights and tokenizer)",
                        dir.display()
                    )
                },
            });
        }
        if !path.is_file() {
            return Err(ModelError::MissingFile {
                dir: dir.to_path_buf(),
                file: "config.json",
                hint: "the Hugging Face model configuration",
            });
        }
        let text = std::fs::read_to_string(&path).map_err(io_error(&path))?;
        let value: Value = super::error::parse_json(&path, &text)?;
        let mut config = Self::from_json(&value).map_err(|reason| match reason {
            ConfigIssue::Unknown(found) => ModelError::UnknownArchitecture {
                path: path.clone(),
                found,
            },
            ConfigIssue::Invalid(reason) => ModelError::Config {
                path: path.clone(),
                reason,
            },
        })?;
        if let Some(vision) = &mut config.qwen_vision {
            super::image_processor::read(dir, vision)?;
        }
        Ok(config)
    }

    /// Parses a `config.json` value.
    pub fn from_json(value: &Value) -> Result<Self, ConfigIssue> {
        let model_type = value
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| ConfigIssue::Invalid("no `model_type` field".into()))?;
        let eos_token_ids = token_ids(value.get("eos_token_id")).map_err(ConfigIssue::Invalid)?;
        let mut config = match model_type {
            "qwen2" => Self {
                architecture: Architecture::Qwen2,
                text: text_config(value, &TextDefaults::QWEN2)?,
                vision: None,
                qwen_vision: None,
                image_token_id: None,
                eos_token_ids,
                context_limit: None,
                source: ConfigSource::default(),
            },
            "tiny_vlm" => {
                let text = value
                    .get("text_config")
                    .ok_or_else(|| ConfigIssue::Invalid("no `text_config` object".into()))?;
                if let Some(vision) = value.get("vision_config") {
                    silu_only(vision, "vision_config.hidden_act")?;
                }
                let vision: VisionConfig = value
                    .get("vision_config")
                    .cloned()
                    .ok_or_else(|| ConfigIssue::Invalid("no `vision_config` object".into()))
                    .and_then(|v| {
                        serde_json::from_value(v)
                            .map_err(|e| ConfigIssue::Invalid(format!("vision_config: {e}")))
                    })?;
                vision.validate().map_err(ConfigIssue::Invalid)?;
                let image_token_id = match value.get("image_token_id") {
                    None | Some(Value::Null) => {
                        return Err(ConfigIssue::Invalid("no `image_token_id`".into()))
                    }
                    Some(v) => v
                        .as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| {
                            ConfigIssue::Invalid(format!("`image_token_id` is {v}, not a token id"))
                        })?,
                };
                Self {
                    architecture: Architecture::TinyVlm,
                    text: text_config(text, &TextDefaults::TINY_VLM)?,
                    vision: Some(vision),
                    qwen_vision: None,
                    image_token_id: Some(image_token_id),
                    eos_token_ids,
                    context_limit: None,
                    source: ConfigSource::default(),
                }
            }
            "qwen2_5_vl" => qwen2_5_vl(value, eos_token_ids)?,
            other => return Err(ConfigIssue::Unknown(other.to_string())),
        };
        config.text.validate().map_err(ConfigIssue::Invalid)?;
        config.source = ConfigSource(Some(value.clone()));
        Ok(config)
    }

    /// The `config.json` value that [`ModelConfig::from_json`] reads back:
    /// the file it was read from, as it was, while the configuration is the
    /// one that file gives; else saferc's own layout, which for `qwen2`
    /// keeps the source's other top-level fields.
    pub fn to_json(&self) -> Value {
        let written = self.written_json();
        let Some(file) = &self.source.0 else {
            return written;
        };
        let unchanged = Self::from_json(file).is_ok_and(|read| read.written_json() == written);
        if unchanged {
            return file.clone();
        }
        match (self.architecture, written, file.as_object()) {
            (Architecture::Qwen2, Value::Object(mut map), Some(fields)) => {
                for (key, value) in fields {
                    map.entry(key.clone()).or_insert_with(|| value.clone());
                }
                Value::Object(map)
            }
            (_, written, _) => written,
        }
    }

    /// This configuration in saferc's own `config.json` layout.
    fn written_json(&self) -> Value {
        let text = serde_json::to_value(&self.text).unwrap_or(Value::Null);
        match self.architecture {
            Architecture::Qwen2 => {
                let mut v = text;
                if let Value::Object(map) = &mut v {
                    map.insert("model_type".into(), json!("qwen2"));
                    map.insert("architectures".into(), json!(["Qwen2ForCausalLM"]));
                    map.insert("eos_token_id".into(), json!(self.eos_token_ids));
                }
                v
            }
            Architecture::Qwen25Vl => {
                let mut text = text;
                if let Value::Object(map) = &mut text {
                    let sections = map.remove("mrope_section");
                    let theta = map.remove("rope_theta");
                    map.insert(
                        "rope_scaling".into(),
                        json!({"type": "mrope", "mrope_section": sections}),
                    );
                    map.insert("rope_theta".into(), theta.unwrap_or(Value::Null));
                    map.insert("model_type".into(), json!("qwen2_5_vl_text"));
                }
                json!({
                    "model_type": "qwen2_5_vl",
                    "architectures": ["Qwen2_5_VLForConditionalGeneration"],
                    "text_config": text,
                    "vision_config": self.qwen_vision,
                    "image_token_id": self.image_token_id,
                    "vision_start_token_id": self.qwen_vision.as_ref().map(|v| v.tokens.vision_start),
                    "vision_end_token_id": self.qwen_vision.as_ref().map(|v| v.tokens.vision_end),
                    "video_token_id": self.qwen_vision.as_ref().map(|v| v.tokens.video),
                    "eos_token_id": self.eos_token_ids,
                    "tie_word_embeddings": self.text.tie_word_embeddings,
                })
            }
            Architecture::TinyVlm => json!({
                "model_type": "tiny_vlm",
                "architectures": ["TinyVlmForConditionalGeneration"],
                "text_config": text,
                "vision_config": self.vision,
                "image_token_id": self.image_token_id,
                "eos_token_id": self.eos_token_ids,
            }),
        }
    }
}

/// A Qwen2.5-VL `config.json`: the decoder's fields at the top level or in
/// `text_config`, the M-RoPE sections, `vision_config` and the image token.
fn qwen2_5_vl(value: &Value, eos_token_ids: Vec<u32>) -> Result<ModelConfig, ConfigIssue> {
    let text_value = value.get("text_config").unwrap_or(value);
    let mut text = text_config(text_value, &TextDefaults::QWEN2_5_VL)?;
    let rope = text_value
        .get("rope_scaling")
        .filter(|v| !v.is_null())
        .or_else(|| text_value.get("rope_parameters"))
        .or_else(|| value.get("rope_scaling"));
    let sections: [usize; 3] = rope
        .and_then(|r| r.get("mrope_section"))
        .cloned()
        .ok_or_else(|| ConfigIssue::Invalid("no `mrope_section` in `rope_scaling`".into()))
        .and_then(|v| {
            serde_json::from_value(v).map_err(|e| {
                ConfigIssue::Invalid(format!("`mrope_section` is not three sizes: {e}"))
            })
        })?;
    text.mrope_section = Some(sections);
    if let Some(tied) = value.get("tie_word_embeddings").and_then(Value::as_bool) {
        text.tie_word_embeddings = tied;
    }
    let vision_value = value
        .get("vision_config")
        .ok_or_else(|| ConfigIssue::Invalid("no `vision_config` object".into()))?;
    let in_channels = vision_value
        .get("in_channels")
        .or_else(|| vision_value.get("in_chans"))
        .and_then(Value::as_u64)
        .unwrap_or(3);
    if in_channels != 3 {
        return Err(ConfigIssue::Invalid(format!(
            "`vision_config.in_channels` is {in_channels}; saferc reads RGB images (3)"
        )));
    }
    silu_only(vision_value, "vision_config.hidden_act")?;
    let mut vision: QwenVisionConfig = serde_json::from_value(vision_value.clone())
        .map_err(|e| ConfigIssue::Invalid(format!("vision_config: {e}")))?;
    match vision_value
        .get("rope_parameters")
        .and_then(|r| r.get("rope_theta"))
    {
        None | Some(Value::Null) => {}
        Some(theta) => {
            vision.rope_theta = theta.as_f64().ok_or_else(|| {
                ConfigIssue::Invalid(format!(
                    "`vision_config.rope_parameters.rope_theta` is {theta}, not a positive number"
                ))
            })?;
        }
    }
    vision.validate().map_err(ConfigIssue::Invalid)?;
    if vision.out_hidden_size != text.hidden_size {
        return Err(ConfigIssue::Invalid(format!(
            "`vision_config.out_hidden_size` ({}) must equal the decoder's `hidden_size` ({})",
            vision.out_hidden_size, text.hidden_size
        )));
    }
    // The vision token ids, transformers' defaults (Qwen's vocabulary)
    // where absent.
    let id = |name: &str, default: u32| -> Result<u32, ConfigIssue> {
        match value.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| ConfigIssue::Invalid(format!("`{name}` is {v}, not a token id"))),
        }
    };
    let image_token_id = id("image_token_id", 151_655)?;
    let defaults = VisionTokenIds::default();
    vision.tokens = VisionTokenIds {
        vision_start: id("vision_start_token_id", defaults.vision_start)?,
        vision_end: id("vision_end_token_id", defaults.vision_end)?,
        video: id("video_token_id", defaults.video)?,
    };
    let eos_token_ids = if eos_token_ids.is_empty() {
        token_ids(text_value.get("eos_token_id")).map_err(ConfigIssue::Invalid)?
    } else {
        eos_token_ids
    };
    Ok(ModelConfig {
        architecture: Architecture::Qwen25Vl,
        text,
        vision: None,
        qwen_vision: Some(vision),
        image_token_id: Some(image_token_id),
        eos_token_ids,
        context_limit: None,
        source: ConfigSource::default(),
    })
}

/// Why a `config.json` value was refused.
#[derive(Debug)]
pub enum ConfigIssue {
    /// `model_type` names an architecture saferc does not implement.
    Unknown(String),
    /// A field is missing or inconsistent.
    Invalid(String),
}

/// What a decoder field left out of `config.json` means: the defaults of
/// the architecture's configuration class in transformers.
struct TextDefaults {
    /// `tie_word_embeddings`.
    tied: bool,
    /// `rope_theta`.
    rope_theta: f64,
    /// `rms_norm_eps`.
    rms_norm_eps: f64,
    /// `num_key_value_heads` (`None`: as many as the attention heads).
    kv_heads: Option<usize>,
    /// Whether M-RoPE's `rope_scaling` type `mrope` is read.
    mrope: bool,
}

impl TextDefaults {
    /// `Qwen2Config`'s (an absent `num_key_value_heads` is taken as the
    /// head count: every shipped Qwen2 config names it).
    const QWEN2: Self = Self {
        tied: false,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-6,
        kv_heads: None,
        mrope: false,
    };
    /// saferc's own architecture, written with every field.
    const TINY_VLM: Self = Self {
        tied: true,
        ..Self::QWEN2
    };
    /// `Qwen2_5_VLTextConfig`'s.
    const QWEN2_5_VL: Self = Self {
        tied: false,
        rope_theta: 1_000_000.0,
        rms_norm_eps: 1e-5,
        kv_heads: Some(8),
        mrope: true,
    };
}

fn text_config(v: &Value, defaults: &TextDefaults) -> Result<TextConfig, ConfigIssue> {
    let mrope = defaults.mrope;
    let size = |name: &str| -> Result<usize, ConfigIssue> {
        match v.get(name) {
            Some(value) => positive(name, value),
            None => Err(ConfigIssue::Invalid(format!(
                "no `{name}` (a positive integer)"
            ))),
        }
    };
    // Optional fields: absent takes the default; present must be valid
    // (a typo'd value is an error, never silently the default).
    let optional_size = |name: &str, default: usize| -> Result<usize, ConfigIssue> {
        v.get(name)
            .map_or(Ok(default), |value| positive(name, value))
    };
    let optional_number =
        |value: Option<&Value>, name: &str, default: f64| -> Result<f64, ConfigIssue> {
            match value {
                None | Some(Value::Null) => Ok(default),
                Some(x) => x
                    .as_f64()
                    .filter(|n| n.is_finite() && *n > 0.0)
                    .ok_or_else(|| {
                        ConfigIssue::Invalid(format!("`{name}` is {x}, not a positive number"))
                    }),
            }
        };
    let heads = size("num_attention_heads")?;
    // `rope_theta` at the top (transformers 4), in `rope_parameters` (5),
    // or in a `rope_scaling` written with 5's keys: every one given must
    // agree, and the first is taken.
    let mut thetas = Vec::new();
    for (name, value) in [
        ("rope_theta", v.get("rope_theta")),
        (
            "rope_parameters.rope_theta",
            v.get("rope_parameters").and_then(|p| p.get("rope_theta")),
        ),
        (
            "rope_scaling.rope_theta",
            v.get("rope_scaling").and_then(|p| p.get("rope_theta")),
        ),
    ] {
        if let Some(value) = value.filter(|t| !t.is_null()) {
            thetas.push((
                name,
                optional_number(Some(value), name, defaults.rope_theta)?,
            ));
        }
    }
    let rope_theta = thetas.first().map_or(defaults.rope_theta, |(_, t)| *t);
    if let Some((name, other)) = thetas.iter().find(|(_, t)| *t != rope_theta) {
        let first = thetas.first().map_or("rope_theta", |(n, _)| n);
        return Err(ConfigIssue::Invalid(format!(
            "`{first}` ({rope_theta}) and `{name}` ({other}) disagree; keep one"
        )));
    }
    // transformers 4 writes `rope_scaling`, 5 `rope_parameters`; a file
    // may hold both (one of them null, or a `rope_scaling` added for long
    // contexts as Qwen's model cards say): every one given must be the
    // default rotary. `mrope` (Qwen2.5-VL's spelling before transformers
    // 4.5x) is the default rotary with sections, which `qwen2_5_vl` reads.
    for key in ["rope_parameters", "rope_scaling"] {
        let Some(p) = v.get(key).filter(|p| !p.is_null()) else {
            continue;
        };
        let rope_type = match p.get("rope_type").or_else(|| p.get("type")) {
            None | Some(Value::Null) => "default",
            Some(Value::String(t)) => t.as_str(),
            Some(other) => {
                return Err(ConfigIssue::Invalid(format!(
                    "`{key}.rope_type` is {other}, not a name such as \"default\""
                )))
            }
        };
        if rope_type != "default" && !(mrope && rope_type == "mrope") {
            return Err(ConfigIssue::Invalid(format!(
                "rope scaling `{rope_type}` (`{key}`) is not supported (only the default rotary embedding)"
            )));
        }
    }
    silu_only(v, "hidden_act")?;
    if v.get("use_sliding_window").and_then(Value::as_bool) == Some(true) {
        return Err(ConfigIssue::Invalid(
            "`use_sliding_window = true` is not supported; saferc attends over the whole context"
                .into(),
        ));
    }
    // transformers reads `head_dim` where a file gives it; saferc's heads
    // are `hidden_size / num_attention_heads` wide, so another width is
    // refused by name rather than met as a weight of the wrong shape.
    if let Some(head_dim) = v.get("head_dim").filter(|d| !d.is_null()) {
        let hidden = size("hidden_size")?;
        let width = positive("head_dim", head_dim)?;
        if hidden % heads != 0 || width != hidden / heads {
            return Err(ConfigIssue::Invalid(format!(
                "`head_dim = {width}` is not `hidden_size / num_attention_heads` ({hidden} / {heads}); saferc supports heads of that width only"
            )));
        }
    }
    let tie_word_embeddings = match v.get("tie_word_embeddings") {
        None | Some(Value::Null) => defaults.tied,
        Some(Value::Bool(b)) => *b,
        Some(x) => {
            return Err(ConfigIssue::Invalid(format!(
                "`tie_word_embeddings` is {x}, not true or false"
            )))
        }
    };
    Ok(TextConfig {
        vocab_size: size("vocab_size")?,
        hidden_size: size("hidden_size")?,
        intermediate_size: size("intermediate_size")?,
        num_hidden_layers: size("num_hidden_layers")?,
        num_attention_heads: heads,
        num_key_value_heads: match v.get("num_key_value_heads") {
            // An explicit null is transformers' "as many as the heads".
            Some(Value::Null) => heads,
            _ => optional_size("num_key_value_heads", defaults.kv_heads.unwrap_or(heads))?,
        },
        rope_theta,
        rms_norm_eps: optional_number(
            v.get("rms_norm_eps"),
            "rms_norm_eps",
            defaults.rms_norm_eps,
        )?,
        tie_word_embeddings,
        max_position_embeddings: optional_size("max_position_embeddings", 32_768)?,
        mrope_section: None,
    })
}

/// The activation `key` of `v` (the last part of a dotted name), where
/// given: saferc's MLPs are SwiGLU, so `silu` or nothing; another name, or
/// a value that is no name, is refused rather than ignored.
fn silu_only(v: &Value, key: &str) -> Result<(), ConfigIssue> {
    let field = key.rsplit('.').next().unwrap_or(key);
    match v.get(field) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(act)) if act == "silu" => Ok(()),
        Some(Value::String(act)) => Err(ConfigIssue::Invalid(format!(
            "`{key} = {act}` is not supported (only `silu`)"
        ))),
        Some(other) => Err(ConfigIssue::Invalid(format!(
            "`{key}` is {other}, not an activation's name such as \"silu\""
        ))),
    }
}

/// A size field: a positive integer, or an error saying what it is.
fn positive(name: &str, value: &Value) -> Result<usize, ConfigIssue> {
    value
        .as_u64()
        .filter(|n| *n > 0)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| ConfigIssue::Invalid(format!("`{name}` is {value}, not a positive integer")))
}

/// An id or a list of ids (`eos_token_id` takes both forms).
///
/// # Errors
/// A value that is neither a token id nor a list of them (a string, a
/// negative number, ...), which would silently leave generation without
/// an end.
pub(crate) fn token_ids(v: Option<&Value>) -> Result<Vec<u32>, String> {
    let one = |v: &Value| {
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| format!("`eos_token_id` holds {v}, not a token id"))
    };
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(one).collect(),
        Some(other) => one(other).map(|id| vec![id]),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    /// `eos_token_id` as transformers takes it (an id, a list, null), and
    /// anything else refused rather than read as no end of sequence.
    #[test]
    fn end_of_sequence_ids_are_ids_or_refused() {
        use serde_json::json;
        assert_eq!(token_ids(Some(&json!(7))), Ok(vec![7]));
        assert_eq!(token_ids(Some(&json!([7, 9]))), Ok(vec![7, 9]));
        assert_eq!(token_ids(Some(&json!([]))), Ok(vec![]));
        assert_eq!(token_ids(Some(&json!(null))), Ok(vec![]));
        assert_eq!(token_ids(None), Ok(vec![]));
        for bad in [
            json!("x"),
            json!(-3),
            json!([1, "y"]),
            json!(1.5),
            json!(1u64 << 40),
        ] {
            let err = token_ids(Some(&bad)).unwrap_err();
            assert!(err.contains("not a token id"), "{bad}: {err}");
        }
    }

    /// A model saved by saferc (a checkpoint, a trained model) keeps its
    /// source's `config.json` as it was: the fields saferc does not use
    /// (`bos_token_id`, `pad_token_id`, `dtype`, `rope_parameters`, ...),
    /// which were dropped, so that a loader of the trained copy took its
    /// defaults, and the file's layout. A configuration changed since it was
    /// read is written in saferc's layout, and a `qwen2` one keeps the other
    /// top-level fields.
    #[test]
    fn a_saved_config_is_its_source_file_unless_changed() {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/models/qwen2-tied/config.json");
        let source: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let config = ModelConfig::from_json(&source).unwrap();
        assert_eq!(config.to_json(), source);
        assert_eq!(ModelConfig::from_json(&config.to_json()).unwrap(), config);

        let mut changed = config.clone();
        changed.text.num_hidden_layers += 1;
        let saved = changed.to_json();
        for key in [
            "bos_token_id",
            "pad_token_id",
            "dtype",
            "rope_parameters",
            "use_sliding_window",
            "transformers_version",
        ] {
            assert_eq!(saved.get(key), source.get(key), "{key}");
        }
        assert_eq!(
            saved["num_hidden_layers"],
            json!(changed.text.num_hidden_layers)
        );
        assert_eq!(saved["rope_theta"], json!(10_000.0));
        assert_eq!(ModelConfig::from_json(&saved).unwrap(), changed);

        // A flat transformers 4 Qwen2.5-VL file stays flat: transformers 4
        // reads no `text_config`.
        let flat = qwen2_5_vl_transformers_4();
        let config = ModelConfig::from_json(&flat).unwrap();
        assert_eq!(config.to_json(), flat);
        // A model saferc made has no source: its own layout.
        let mut made = config.clone();
        made.source = ConfigSource::default();
        assert!(made.to_json().get("text_config").is_some());
        assert_eq!(ModelConfig::from_json(&made.to_json()).unwrap(), config);
    }

    /// Rotary settings saferc cannot honour are refused wherever the file
    /// writes them: `rope_scaling` beside a `rope_parameters` (a null one,
    /// or the default one transformers 5 writes) was read as the default
    /// rotary; two `rope_theta`s that disagree (at the top, in
    /// `rope_parameters` or in `rope_scaling`); the vision tower's base.
    #[test]
    fn rotary_settings_are_read_from_either_key_or_refused() {
        use serde_json::json;
        let qwen2 = || {
            json!({
                "model_type": "qwen2", "vocab_size": 64, "hidden_size": 16,
                "intermediate_size": 32, "num_hidden_layers": 1,
                "num_attention_heads": 2, "num_key_value_heads": 1,
            })
        };
        let read = |edit: &dyn Fn(&mut Value)| {
            let mut value = qwen2();
            edit(&mut value);
            ModelConfig::from_json(&value)
        };
        let refused = |edit: &dyn Fn(&mut Value), says: &str| match read(edit) {
            Err(ConfigIssue::Invalid(reason)) => assert!(reason.contains(says), "{reason}"),
            other => panic!("expected `{says}`, got {other:?}"),
        };
        // Heads of another width than `hidden_size / heads` (16 / 2 = 8).
        refused(&|v| v["head_dim"] = json!(16), "`head_dim = 16` is not");
        assert!(read(&|v| v["head_dim"] = json!(8)).is_ok());
        assert!(read(&|v| v["head_dim"] = json!(null)).is_ok());
        let yarn = json!({"type": "yarn", "factor": 4.0});
        refused(
            &|v| {
                v["rope_parameters"] = json!(null);
                v["rope_scaling"] = yarn.clone();
            },
            "rope scaling `yarn` (`rope_scaling`)",
        );
        refused(
            &|v| {
                v["rope_parameters"] = json!({"rope_type": "default", "rope_theta": 1e6});
                v["rope_scaling"] = json!({"rope_type": "linear", "factor": 2.0});
            },
            "rope scaling `linear` (`rope_scaling`)",
        );
        refused(
            &|v| {
                v["rope_theta"] = json!(1.0);
                v["rope_parameters"] = json!({"rope_type": "default", "rope_theta": 1e4});
            },
            "disagree",
        );
        refused(
            &|v| v["rope_parameters"] = json!({"rope_type": 3}),
            "`rope_parameters.rope_type` is 3",
        );
        let theta = |edit: &dyn Fn(&mut Value)| read(edit).map(|c| c.text.rope_theta).ok();
        assert_eq!(
            theta(&|v| {
                v["rope_theta"] = json!(5e5);
                v["rope_parameters"] = json!({"rope_type": "default", "rope_theta": 5e5});
                v["rope_scaling"] = json!(null);
            }),
            Some(5e5)
        );
        assert_eq!(
            theta(&|v| v["rope_parameters"] = json!({"rope_type": "default", "rope_theta": 7e5})),
            Some(7e5)
        );
        // In a `rope_scaling` written with transformers 5's keys.
        assert_eq!(
            theta(&|v| v["rope_scaling"] = json!({"rope_type": "default", "rope_theta": 500.0})),
            Some(500.0)
        );
        refused(
            &|v| {
                v["rope_theta"] = json!(1e4);
                v["rope_scaling"] = json!({"rope_type": "default", "rope_theta": 500.0});
            },
            "`rope_theta` (10000) and `rope_scaling.rope_theta` (500) disagree",
        );
        // The vision tower's base: a number above 0.
        for (bad, says) in [(json!(0), "is 0,"), (json!("x"), "is \"x\"")] {
            let mut value = qwen2_5_vl_transformers_4();
            value["vision_config"]["rope_parameters"] = json!({ "rope_theta": bad });
            match ModelConfig::from_json(&value) {
                Err(ConfigIssue::Invalid(reason)) => {
                    assert!(
                        reason.contains("rope_theta` ") && reason.contains(says),
                        "{reason}"
                    )
                }
                other => panic!("{other:?}"),
            }
        }
    }

    /// Settings no architecture honours are refused in each of them, not
    /// ignored: a sliding window, an activation other than `silu` (or one
    /// that is no name), in the decoder and in `tiny_vlm`'s vision tower.
    #[test]
    fn unsupported_settings_are_refused_in_every_architecture() {
        use serde_json::json;
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/models/tiny-safety/config.json");
        let tiny: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let qwen2 = json!({
            "model_type": "qwen2", "vocab_size": 64, "hidden_size": 16,
            "intermediate_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 1,
        });
        assert!(ModelConfig::from_json(&tiny).is_ok());
        let refused = |base: &Value, edit: &dyn Fn(&mut Value), says: &str| {
            let mut value = base.clone();
            edit(&mut value);
            match ModelConfig::from_json(&value) {
                Err(ConfigIssue::Invalid(reason)) => assert!(reason.contains(says), "{reason}"),
                other => panic!("expected `{says}`, got {other:?}"),
            }
        };
        refused(
            &tiny,
            &|v| v["text_config"]["use_sliding_window"] = json!(true),
            "use_sliding_window",
        );
        refused(
            &tiny,
            &|v| v["text_config"]["hidden_act"] = json!("gelu"),
            "`hidden_act = gelu`",
        );
        refused(
            &tiny,
            &|v| v["vision_config"]["hidden_act"] = json!("gelu"),
            "`vision_config.hidden_act = gelu`",
        );
        refused(
            &qwen2,
            &|v| v["hidden_act"] = json!(5),
            "`hidden_act` is 5, not an activation",
        );
        refused(
            &qwen2,
            &|v| v["use_sliding_window"] = json!(true),
            "use_sliding_window",
        );
        let mut silu = tiny.clone();
        silu["vision_config"]["hidden_act"] = json!("silu");
        silu["text_config"]["use_sliding_window"] = json!(false);
        assert!(ModelConfig::from_json(&silu).is_ok());
    }

    /// The layout of Qwen/Qwen2.5-VL-3B-Instruct's `config.json` (written by
    /// transformers 4: the decoder's fields at the top level, M-RoPE in
    /// `rope_scaling`), its sizes shrunk.
    fn qwen2_5_vl_transformers_4() -> Value {
        json!({
            "architectures": ["Qwen2_5_VLForConditionalGeneration"],
            "model_type": "qwen2_5_vl",
            "bos_token_id": 151643, "eos_token_id": 151645,
            "vision_start_token_id": 151652, "vision_end_token_id": 151653,
            "image_token_id": 151655, "video_token_id": 151656,
            "hidden_act": "silu", "hidden_size": 128, "intermediate_size": 256,
            "max_position_embeddings": 128000, "num_attention_heads": 2,
            "num_hidden_layers": 2, "num_key_value_heads": 1, "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": true,
            "use_sliding_window": false, "vocab_size": 151936,
            "vision_config": {
                "depth": 4, "hidden_act": "silu", "hidden_size": 80, "intermediate_size": 96,
                "num_heads": 2, "in_chans": 3, "out_hidden_size": 128, "patch_size": 14,
                "spatial_merge_size": 2, "spatial_patch_size": 14, "window_size": 112,
                "fullatt_block_indexes": [1, 3], "tokens_per_second": 2,
                "temporal_patch_size": 2
            },
            "rope_scaling": {"type": "mrope", "mrope_section": [16, 8, 8]}
        })
    }

    #[test]
    fn a_transformers_4_qwen2_5_vl_config_reads_and_round_trips() {
        let config = ModelConfig::from_json(&qwen2_5_vl_transformers_4()).unwrap();
        assert_eq!(config.architecture, Architecture::Qwen25Vl);
        assert_eq!(config.text.mrope_section, Some([16, 8, 8]));
        assert_eq!(config.text.rope_theta, 1_000_000.0);
        assert_eq!(config.text.hidden_size, 128);
        assert!(config.text.tie_word_embeddings);
        assert_eq!(config.image_token_id, Some(151_655));
        assert_eq!(config.eos_token_ids, vec![151_645]);
        let vision = config.qwen_vision.clone().unwrap();
        assert_eq!((vision.depth, vision.window_size), (4, 112));
        assert_eq!(vision.fullatt_block_indexes, vec![1, 3]);
        // What `Model::save` writes reads back the same.
        assert_eq!(ModelConfig::from_json(&config.to_json()).unwrap(), config);
    }

    #[test]
    fn absent_qwen2_5_vl_fields_take_transformers_defaults() {
        let mut value = qwen2_5_vl_transformers_4();
        let map = value.as_object_mut().unwrap();
        for key in [
            "rope_theta",
            "rms_norm_eps",
            "num_key_value_heads",
            "image_token_id",
            "vision_start_token_id",
            "vision_end_token_id",
            "video_token_id",
        ] {
            map.remove(key);
        }
        map.insert("num_attention_heads".into(), json!(8));
        map.insert(
            "rope_scaling".into(),
            json!({"type": "mrope", "mrope_section": [4, 2, 2]}),
        );
        map["vision_config"]
            .as_object_mut()
            .unwrap()
            .remove("fullatt_block_indexes");
        let config = ModelConfig::from_json(&value).unwrap();
        assert_eq!(config.text.rope_theta, 1_000_000.0);
        assert_eq!(config.text.rms_norm_eps, 1e-5);
        assert_eq!(config.text.num_key_value_heads, 8);
        assert_eq!(config.image_token_id, Some(151_655));
        let vision = config.qwen_vision.clone().unwrap();
        assert_eq!(vision.tokens, VisionTokenIds::default());
        assert_eq!(vision.fullatt_block_indexes, vec![7, 15, 23, 31]);
        // An explicit null is as many key-value heads as heads.
        value["num_key_value_heads"] = Value::Null;
        let config = ModelConfig::from_json(&value).unwrap();
        assert_eq!(config.text.num_key_value_heads, 8);
    }

    #[test]
    fn a_saved_qwen2_5_vl_config_keeps_its_vision_token_ids() {
        let mut value = qwen2_5_vl_transformers_4();
        value["vision_start_token_id"] = json!(3);
        value["vision_end_token_id"] = json!(4);
        value["video_token_id"] = json!(6);
        let config = ModelConfig::from_json(&value).unwrap();
        let saved = config.to_json();
        assert_eq!(
            (
                &saved["vision_start_token_id"],
                &saved["vision_end_token_id"],
                &saved["video_token_id"]
            ),
            (&json!(3), &json!(4), &json!(6))
        );
        assert_eq!(ModelConfig::from_json(&saved).unwrap(), config);
    }

    #[test]
    fn qwen2_5_vl_settings_saferc_cannot_honour_are_refused() {
        let refused = |edit: &dyn Fn(&mut Value), says: &str| {
            let mut value = qwen2_5_vl_transformers_4();
            edit(&mut value);
            match ModelConfig::from_json(&value) {
                Err(ConfigIssue::Invalid(reason)) => assert!(reason.contains(says), "{reason}"),
                other => panic!("expected `{says}`, got {other:?}"),
            }
        };
        refused(
            &|v| v["use_sliding_window"] = json!(true),
            "use_sliding_window",
        );
        refused(
            &|v| v["rope_scaling"] = json!({"type": "yarn"}),
            "rope scaling `yarn`",
        );
        refused(
            &|v| v["rope_scaling"] = json!({"type": "mrope"}),
            "no `mrope_section`",
        );
        refused(
            &|v| v["vision_config"]["in_chans"] = json!(1),
            "in_channels` is 1",
        );
        refused(
            &|v| v["vision_config"]["hidden_act"] = json!("gelu"),
            "only `silu`",
        );
        refused(
            &|v| v["image_token_id"] = json!("<|image_pad|>"),
            "`image_token_id` is \"<|image_pad|>\", not a token id",
        );
        // A text-only Qwen2 with M-RoPE is not a model saferc knows.
        let mut text_only = qwen2_5_vl_transformers_4();
        text_only["model_type"] = json!("qwen2");
        assert!(matches!(
            ModelConfig::from_json(&text_only),
            Err(ConfigIssue::Invalid(reason)) if reason.contains("rope scaling `mrope`")
        ));
    }
}
