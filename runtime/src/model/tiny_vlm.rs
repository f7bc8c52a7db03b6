//! `tiny_vlm`: presets of the built-in vision-language model and creating a
//! fresh one on disk, in the Hugging Face layout (`config.json`,
//! `model.safetensors`, `generation_config.json`, tokenizer files with the
//! Qwen2-VL chat template), so it loads like any other model directory.
//!
//! The tokenizer files are embedded from `runtime/assets/tiny_vlm/`, made by
//! `runtime/fixtures/models/make_fixtures.py` (a 512-token byte-level BPE with
//! Qwen's special tokens).

use std::path::Path;

use burn::tensor::backend::Backend;
use serde_json::json;

use super::config::{Architecture, ModelConfig};
use super::decoder::TextConfig;
use super::error::{io_error, ModelError};
use super::vision::VisionConfig;
use super::weights::{write_atomically, SaveDtype, WeightWriter};
use super::{write_model_dir, Model};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const TOKENIZER_JSON: &str = include_str!("../../assets/tiny_vlm/tokenizer.json");
const TOKENIZER_CONFIG: &str = include_str!("../../assets/tiny_vlm/tokenizer_config.json");
const CHAT_TEMPLATE: &str = include_str!("../../assets/tiny_vlm/chat_template.jinja");

/// The vocabulary of the embedded tokenizer.
pub const VOCAB_SIZE: usize = 512;
/// `<|image_pad|>` in the embedded tokenizer.
pub const IMAGE_TOKEN_ID: u32 = 5;
/// `<|im_end|>` in the embedded tokenizer.
pub const EOS_TOKEN_ID: u32 = 2;

/// Sizes of `tiny_vlm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// About 0.1M parameters: for tests.
    Tiny,
    /// About 1M parameters: trains on a 2-core CPU in minutes (the quickstart).
    Small,
}

impl std::str::FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tiny" => Ok(Self::Tiny),
            "small" => Ok(Self::Small),
            other => Err(format!(
                "unknown tiny_vlm size `{other}`; expected tiny or small"
            )),
        }
    }
}

impl Preset {
    /// The configuration of this preset.
    pub fn config(self) -> ModelConfig {
        let (text, vision) = match self {
            Self::Tiny => (
                text(64, 128, 2, 4, 2),
                VisionConfig {
                    hidden_size: 32,
                    intermediate_size: 64,
                    num_hidden_layers: 1,
                    num_attention_heads: 2,
                    ..vision()
                },
            ),
            Self::Small => (
                text(128, 384, 4, 4, 2),
                VisionConfig {
                    hidden_size: 96,
                    intermediate_size: 192,
                    num_hidden_layers: 2,
                    num_attention_heads: 4,
                    ..vision()
                },
            ),
        };
        ModelConfig {
            architecture: Architecture::TinyVlm,
            text,
            vision: Some(vision),
            qwen_vision: None,
            image_token_id: Some(IMAGE_TOKEN_ID),
            eos_token_ids: vec![EOS_TOKEN_ID],
            context_limit: None,
            source: Default::default(),
        }
    }
}

fn text(
    hidden: usize,
    intermediate: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
) -> TextConfig {
    TextConfig {
        vocab_size: VOCAB_SIZE,
        hidden_size: hidden,
        intermediate_size: intermediate,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-6,
        tie_word_embeddings: true,
        max_position_embeddings: 1024,
        mrope_section: None,
    }
}

fn vision() -> VisionConfig {
    VisionConfig {
        image_size: 32,
        patch_size: 8,
        hidden_size: 32,
        intermediate_size: 64,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        rms_norm_eps: 1e-6,
        image_mean: [0.5, 0.5, 0.5],
        image_std: [0.5, 0.5, 0.5],
    }
}

/// The files [`create`] writes into a model folder.
pub const CREATED_FILES: &[&str] = &[
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "generation_config.json",
];

/// Creates a randomly initialised `tiny_vlm` in `dir`. The weights come
/// from a ChaCha RNG seeded with `seed`, tensor by tensor in name order, so
/// the same seed gives the same model on every backend and thread:
/// linear weights uniform in ±1/√fan_in (PyTorch's default bound), biases 0,
/// norm gains 1, embeddings and the position table normal with std 0.02.
pub fn create<B: Backend>(
    dir: &Path,
    preset: Preset,
    seed: u64,
    device: &B::Device,
) -> Result<Model<B>, ModelError> {
    let config = preset.config();
    let mut layout = WeightWriter::new();
    Model::<B>::init(config.clone(), device).export(&mut layout);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut weights = WeightWriter::new();
    for (name, shape) in layout.shapes() {
        let count: usize = shape.iter().product();
        let values: Vec<f32> =
            if name.ends_with("norm.weight") || name.ends_with("layernorm.weight") {
                vec![1.0; count]
            } else if name.ends_with(".bias") {
                vec![0.0; count]
            } else if name.contains("embed_tokens") || name.contains("position_embedding") {
                (0..count)
                    .map(|_| 0.02 * standard_normal(&mut rng))
                    .collect()
            } else {
                let bound = 1.0 / (shape.get(1).copied().unwrap_or(1) as f32).sqrt();
                (0..count)
                    .map(|_| rng.random_range(-bound..bound))
                    .collect()
            };
        weights.add_values(name, shape, &values);
    }
    write_model_dir(dir, &config, &weights, SaveDtype::F32)?;
    write_tokenizer(dir)?;
    Model::load(dir, device)
}

/// One draw of N(0, 1) (Box–Muller).
fn standard_normal(rng: &mut impl Rng) -> f32 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// Writes the embedded tokenizer files and `generation_config.json` into `dir`.
pub fn write_tokenizer(dir: &Path) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    write_atomically(&dir.join("tokenizer.json"), TOKENIZER_JSON.as_bytes())?;
    write_atomically(
        &dir.join("tokenizer_config.json"),
        TOKENIZER_CONFIG.as_bytes(),
    )?;
    write_atomically(&dir.join("chat_template.jinja"), CHAT_TEMPLATE.as_bytes())?;
    let generation = json!({"eos_token_id": [EOS_TOKEN_ID], "pad_token_id": 0});
    write_atomically(
        &dir.join("generation_config.json"),
        format!("{generation:#}\n").as_bytes(),
    )
}
