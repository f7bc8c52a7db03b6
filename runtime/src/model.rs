//! Models on burn: `qwen2` (Qwen2 / Qwen2.5 text, loaded from Hugging Face
//! directories) and `tiny_vlm` (the built-in small vision-language model),
//! one [`Model`] type for both.
//!
//! A model directory holds `config.json`, `*.safetensors` and the tokenizer
//! files; [`Model::load`] reads it, [`Model::save`] writes the same layout
//! (atomically), so a trained checkpoint is itself a model directory.
//!
//! | piece | module |
//! | --- | --- |
//! | `config.json` parsing | [`config`] |
//! | safetensors reading and atomic writing | [`weights`] |
//! | linear / RMSNorm / embedding / SwiGLU | [`layers`] |
//! | the CPU's products through gemm (decoding's few rows, training's many) | [`few_rows`] |
//! | rotary positions (rotate-half form) | [`rope`] |
//! | grouped-query attention | [`attention`] |
//! | KV cache | [`kv_cache`] |
//! | decoder blocks, embeddings, LM head | [`decoder`] |
//! | the decoder's forward on the CPU, fused | [`cpu_forward`] |
//! | training's forward and backward on the CPU, fused | [`cpu_train`] |
//! | vision tower of `tiny_vlm` | [`vision`] |

pub mod attention;
pub mod config;
pub mod cpu_forward;
pub mod cpu_train;
pub mod decoder;
pub mod error;
pub mod few_rows;
pub mod kv_cache;
pub mod layers;
pub mod on_cpu;
pub mod rope;
pub mod tiny_vlm;
pub mod vision;
pub mod weights;

use std::path::Path;

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};

pub use config::{Architecture, ModelConfig};
pub use decoder::{Layout, TextConfig, TextDecoder};
pub use error::ModelError;
pub use kv_cache::KvCache;
pub use vision::{VisionConfig, VisionTower};

use weights::{write_atomically, WeightReader, WeightWriter};

/// A causal language model, with a vision tower for `tiny_vlm`.
#[derive(Module, Debug)]
pub struct Model<B: Backend> {
    /// The vision tower (`tiny_vlm` only).
    pub vision: Option<VisionTower<B>>,
    /// The decoder, embeddings and LM head.
    pub text: TextDecoder<B>,
    #[module(skip)]
    /// The configuration the model was built from.
    pub config: ModelConfig,
}

/// The host-side inputs of one forward call.
pub struct ModelInput {
    /// Token ids, row-major `[batch, seq]`.
    pub tokens: Vec<u32>,
    /// Positions and padding.
    pub layout: Layout,
    /// Image patches, `[images, patches, patch_dim]` flattened; their
    /// features replace the image placeholder tokens in order.
    pub images: Option<ImagePatches>,
}

/// Preprocessed images of one forward call.
#[derive(Clone, Debug, PartialEq)]
pub struct ImagePatches {
    /// How many images.
    pub count: usize,
    /// `[count, patches, patch_dim]`, row-major.
    pub values: Vec<f32>,
}

impl<B: burn::tensor::backend::AutodiffBackend> Model<B> {
    /// A copy of a model being trained, without autodiff and in the
    /// decoding layout: what the trainers generate with, and hand on when a
    /// stage ends.
    pub fn for_generation(&self) -> Model<B::InnerBackend> {
        burn::module::AutodiffModule::valid(self).with_decoding_layout()
    }
}

impl<B: Backend> Model<B> {
    /// Loads a model directory (`config.json` + safetensors weights).
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, ModelError> {
        let config = ModelConfig::read(dir)?;
        let weights = WeightReader::open(dir)?;
        let text = TextDecoder::load(&weights, config.text.clone(), device)?;
        let vision = match &config.vision {
            Some(vision) => Some(VisionTower::load(
                &weights,
                vision.clone(),
                config.text.hidden_size,
                device,
            )?),
            None => None,
        };
        Ok(Self {
            vision,
            text,
            config,
        })
    }

    /// The same model with the text decoder's projections stored as decoding
    /// reads them fastest (a decode step multiplies a few rows by every
    /// weight). Loading gives this layout already; a training step's update
    /// does not keep it, so the trainers generate with [`Model::for_generation`].
    pub fn with_decoding_layout(self) -> Self {
        Self {
            text: self.text.with_decoding_layout(),
            ..self
        }
    }

    /// A randomly initialised model of `config` (burn's default initialisers,
    /// embeddings with standard deviation 0.02).
    pub fn init(config: ModelConfig, device: &B::Device) -> Self {
        let text = TextDecoder::init(config.text.clone(), 0.02, device);
        let vision = config
            .vision
            .clone()
            .map(|v| VisionTower::init(v, config.text.hidden_size, device));
        Self {
            vision,
            text,
            config,
        }
    }

    /// Writes `config.json` and `model.safetensors` into `dir` (created if
    /// needed); each file is replaced atomically.
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        let mut out = WeightWriter::new();
        self.export(&mut out);
        write_model_dir(dir, &self.config, &out)
    }

    /// All weights under their Hugging Face names.
    pub fn export(&self, out: &mut WeightWriter) {
        self.text.export(out);
        if let Some(vision) = &self.vision {
            vision.export(out);
        }
    }

    /// The architecture.
    pub fn architecture(&self) -> Architecture {
        self.config.architecture
    }

    /// Number of decoder layers (the size of a [`KvCache`]).
    pub fn num_layers(&self) -> usize {
        self.text.layers.len()
    }

    /// The vocabulary size (logit width).
    pub fn vocab_size(&self) -> usize {
        self.text.config.vocab_size
    }

    /// The device the weights live on.
    pub fn device(&self) -> B::Device {
        self.text.embed_tokens.weight.device()
    }

    /// Logits `[batch, seq, vocab]` for the new tokens of `input`; with a
    /// cache, keys and values are appended and attention covers the cache.
    pub fn forward(
        &self,
        input: &ModelInput,
        cache: Option<&mut KvCache<B>>,
    ) -> Result<Tensor<B, 3>, ModelError> {
        let hidden = self.hidden(input, cache)?;
        Ok(self.text.logits(hidden))
    }

    /// Final hidden states `[batch, seq, d]` (before the LM head).
    pub fn hidden(
        &self,
        input: &ModelInput,
        cache: Option<&mut KvCache<B>>,
    ) -> Result<Tensor<B, 3>, ModelError> {
        let layout = &input.layout;
        let (batch, seq) = (layout.batch, layout.seq);
        if input.tokens.len() != batch * seq || layout.positions.len() != batch * seq {
            return Err(ModelError::Request {
                reason: format!(
                    "{} tokens for a batch of {batch} rows of {seq}",
                    input.tokens.len()
                ),
            });
        }
        let vocab = self.vocab_size();
        if let Some(bad) = input.tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(ModelError::Request {
                reason: format!("token id {bad} is outside the vocabulary ({vocab})"),
            });
        }
        let device = self.device();
        let ids: Vec<i64> = input.tokens.iter().map(|&t| i64::from(t)).collect();
        let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [batch, seq]), &device);
        let mut embeds = self.text.embed(tokens);
        if let Some(images) = &input.images {
            embeds = self.splice_images(embeds, &input.tokens, images)?;
        } else if self.placeholder_count(&input.tokens) > 0
            && cache.as_ref().is_none_or(|c| c.is_empty())
        {
            return Err(ModelError::Request {
                reason: "the prompt has image placeholders but no images were given".into(),
            });
        }
        Ok(self.text.hidden(embeds, layout, cache))
    }

    fn placeholder_count(&self, tokens: &[u32]) -> usize {
        match self.config.image_token_id {
            Some(id) => tokens.iter().filter(|&&t| t == id).count(),
            None => 0,
        }
    }

    /// Replaces the embeddings of image placeholder tokens, in order, by the
    /// projected patch features. `embeds`: `[batch, seq, d]`.
    fn splice_images(
        &self,
        embeds: Tensor<B, 3>,
        tokens: &[u32],
        images: &ImagePatches,
    ) -> Result<Tensor<B, 3>, ModelError> {
        let (Some(vision), Some(image_token)) = (&self.vision, self.config.image_token_id) else {
            return Err(ModelError::Request {
                reason: "this model has no vision tower; it takes text only".into(),
            });
        };
        let per_image = vision.config.num_patches();
        let patch_dim = vision.config.patch_dim();
        if images.values.len() != images.count * per_image * patch_dim {
            return Err(ModelError::Request {
                reason: format!(
                    "{} patch values for {} images of {per_image}×{patch_dim}",
                    images.values.len(),
                    images.count
                ),
            });
        }
        let placeholders = self.placeholder_count(tokens);
        if placeholders != images.count * per_image {
            return Err(ModelError::Request {
                reason: format!(
                    "the prompt has {placeholders} image placeholder tokens, but {} images need {}",
                    images.count,
                    images.count * per_image
                ),
            });
        }
        let [batch, seq, d] = embeds.dims();
        let device = embeds.device();
        let patches = Tensor::<B, 3>::from_data(
            TensorData::new(images.values.clone(), [images.count, per_image, patch_dim]),
            &device,
        );
        let features = vision
            .forward(patches)
            .reshape([images.count * per_image, d]);
        let mut next = 0i64;
        let mut rows = Vec::with_capacity(tokens.len());
        let mut is_image = Vec::with_capacity(tokens.len());
        for &t in tokens {
            let hit = t == image_token;
            rows.push(if hit { next } else { 0 });
            is_image.push(hit);
            next += i64::from(hit);
        }
        let rows = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [tokens.len()]), &device);
        let mask =
            Tensor::<B, 2, Bool>::from_data(TensorData::new(is_image, [tokens.len(), 1]), &device)
                .expand([tokens.len(), d]);
        let spliced = embeds
            .reshape([batch * seq, d])
            .mask_where(mask, features.select(0, rows));
        Ok(spliced.reshape([batch, seq, d]))
    }
}

/// Writes `config.json` and `model.safetensors` (from `weights`) into `dir`,
/// created if needed; each file is replaced atomically.
pub fn write_model_dir(
    dir: &Path,
    config: &ModelConfig,
    weights: &WeightWriter,
) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir).map_err(error::io_error(dir))?;
    weights.write(
        &dir.join("model.safetensors"),
        Some([("format".to_string(), "pt".to_string())].into()),
    )?;
    let json = serde_json::to_string_pretty(&config.to_json()).unwrap_or_default();
    write_atomically(&dir.join("config.json"), format!("{json}\n").as_bytes())
}
