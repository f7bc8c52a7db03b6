//! Models on burn: `qwen2` (Qwen2 / Qwen2.5 text) and `qwen2_5_vl`
//! (Qwen2.5-VL), loaded from Hugging Face directories, and `tiny_vlm` (the
//! built-in small vision-language model), one [`Model`] type for all three.
//!
//! A model directory holds `config.json`, `*.safetensors` and the tokenizer
//! files; [`Model::load`] reads it, [`Model::save`] writes the same layout
//! (atomically), so a trained checkpoint is itself a model directory.
//!
//! | piece | module |
//! | --- | --- |
//! | `config.json` parsing | [`config`] |
//! | safetensors reading and atomic writing | [`weights`] |
//! | the tensors a configuration implies, checked before a run | [`expected`] |
//! | linear / RMSNorm / embedding / SwiGLU | [`layers`] |
//! | the CPU's products through gemm (decoding's few rows, training's many) | [`few_rows`] |
//! | rotary positions (rotate-half form) | [`rope`] |
//! | grouped-query attention | [`attention`] |
//! | KV cache | [`kv_cache`] |
//! | decoder blocks, embeddings, LM head | [`decoder`] |
//! | the decoder's forward on the CPU, fused | [`cpu_forward`] |
//! | training's forward and backward on the CPU, fused | [`cpu_train`] |
//! | vision tower of `tiny_vlm` | [`vision`] |
//! | vision tower of `qwen2_5_vl` (windowed ViT, patch merger) | [`qwen_vision`] |
//! | `qwen2_5_vl`'s image processor settings | [`image_processor`] |
//! | `qwen2_5_vl`'s 3-D rotary positions | [`mrope`] |

pub mod attention;
pub mod config;
pub mod cpu_forward;
pub mod cpu_train;
pub mod decoder;
pub mod error;
pub mod expected;
pub mod few_rows;
pub mod image_processor;
pub mod kv_cache;
pub mod layers;
pub mod mrope;
pub mod on_cpu;
pub mod qwen_vision;
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
pub use qwen_vision::{QwenVisionConfig, QwenVisionTower};
pub use vision::{VisionConfig, VisionTower};

pub use weights::SaveDtype;
use weights::{write_atomically, WeightReader, WeightWriter};

/// A causal language model, with a vision tower for `tiny_vlm` and
/// `qwen2_5_vl`.
#[derive(Module, Debug)]
pub struct Model<B: Backend> {
    /// The vision tower of `tiny_vlm`.
    pub vision: Option<VisionTower<B>>,
    /// The vision tower of `qwen2_5_vl`.
    pub qwen_vision: Option<QwenVisionTower<B>>,
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
    /// The patches of every image one after another, `patch_dim` values
    /// each, row-major (`tiny_vlm`: `[count, patches, patch_dim]`).
    pub values: Vec<f32>,
    /// Each image's grid of patches `[t, h, w]` (`qwen2_5_vl`, whose
    /// images keep their own sizes); empty for `tiny_vlm`'s fixed size.
    pub grids: Vec<[usize; 3]>,
}

impl<B: burn::tensor::backend::AutodiffBackend> Model<B> {
    /// A copy of a model being trained, without autodiff and in the
    /// decoding layout: what the trainers generate with, and hand on when a
    /// stage ends.
    pub fn for_generation(&self) -> Model<B::InnerBackend> {
        burn::module::AutodiffModule::valid(self).with_decoding_layout()
    }

    /// The model readied for a training stage. With `freeze_vision` the
    /// vision tower (`tiny_vlm`'s encoder and projection; Qwen2.5-VL's
    /// `visual`, merger included, as verl's `freeze_vision_tower` takes it)
    /// takes no gradient: the optimiser leaves its weights as they are and
    /// keeps no state for them, and its attention keeps no scores for a
    /// backward pass, so Qwen images of any size fit. Without it the tower
    /// trains, and Qwen images are held to
    /// [`qwen_vision::MAX_ATTENTION_BYTES`] of scores per block.
    ///
    /// The tower's weights become contiguous copies ([`TrainingLayout`]),
    /// the layout a checkpoint restores, so that a resumed stage computes
    /// as an uninterrupted one. (The decoder's weights all take a gradient
    /// at every step, and the optimiser writes them back contiguous at the
    /// first; until then they keep the layout decoding reads fastest, which
    /// the reference model, taken from this one, keeps throughout.)
    pub fn for_training(mut self, freeze_vision: bool) -> Self {
        if let Some(vision) = &mut self.config.qwen_vision {
            vision.trained = !freeze_vision;
        }
        if let Some(tower) = &mut self.qwen_vision {
            tower.config.trained = !freeze_vision;
        }
        let mut tower = TrainingLayout {
            trained: !freeze_vision,
        };
        self.vision = self.vision.map(|v| v.map(&mut tower));
        self.qwen_vision = self.qwen_vision.map(|v| v.map(&mut tower));
        self
    }

    /// Whether the model has a vision tower and none of its weights takes
    /// a gradient ([`Model::for_training`] froze it).
    pub fn vision_frozen(&self) -> bool {
        let mut count = TrainableWeights::default();
        if let Some(vision) = &self.vision {
            vision.visit(&mut count);
        }
        if let Some(vision) = &self.qwen_vision {
            vision.visit(&mut count);
        }
        count.all > 0 && count.trainable == 0
    }
}

/// Each weight of a module as a contiguous copy (on the CPU backend) that
/// takes a gradient when `trained`. A stage that starts from the model's
/// files has its linear weights viewed transposed
/// ([`layers::load_linear`]), one resumed
/// from a checkpoint has them contiguous, and burn-flex's products round
/// differently on the two layouts. The optimiser writes a weight back
/// contiguous at its first update, but a weight not yet updated when a
/// checkpoint is written (a frozen tower's, or a tower that no batch with
/// images has reached) would be multiplied in one layout by the
/// uninterrupted run and in the other by the resumed one, which then ends
/// with other weights.
struct TrainingLayout {
    trained: bool,
}

impl<B: Backend> burn::module::ModuleMapper<B> for TrainingLayout {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<Tensor<B, D>>,
    ) -> burn::module::Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        // On a GPU the weights stay where they are: no round trip through
        // the host (bit-exact resumes are the CPU's promise).
        let tensor = if on_cpu::is_cpu::<B>() || on_cpu::is_cpu_autodiff::<B>() {
            let device = tensor.device();
            Tensor::<B, D>::from_data(tensor.into_data(), &device)
        } else {
            tensor
        };
        burn::module::Param::from_mapped_value(id, tensor.set_require_grad(self.trained), mapper)
    }
}

/// Counts a module's weights, and those that take a gradient.
#[derive(Default)]
struct TrainableWeights {
    all: usize,
    trainable: usize,
}

impl<B: Backend> burn::module::ModuleVisitor<B> for TrainableWeights {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
        self.all += 1;
        self.trainable += usize::from(param.val().is_require_grad());
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
        let qwen_vision = match &config.qwen_vision {
            Some(vision) => Some(QwenVisionTower::load(&weights, vision.clone(), device)?),
            None => None,
        };
        Ok(Self {
            vision,
            qwen_vision,
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

    /// The same model with the text decoder's projections stored as a
    /// scoring pass reads them fastest (hundreds of positions multiplied by
    /// every weight): a GRPO reference model, which scores and never
    /// decodes. A training step's update leaves this layout.
    pub fn with_scoring_layout(self) -> Self {
        Self {
            text: self.text.with_scoring_layout(),
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
        let qwen_vision = config
            .qwen_vision
            .clone()
            .map(|v| QwenVisionTower::init(v, device));
        Self {
            vision,
            qwen_vision,
            text,
            config,
        }
    }

    /// Writes `config.json` and `model.safetensors` (in f32) into `dir`
    /// (created if needed); each file is replaced atomically.
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        self.save_as(dir, SaveDtype::F32).map(|_| ())
    }

    /// [`Model::save`] with the weights in `dtype`; returns the tensors
    /// kept in f32 because a weight would overflow `dtype`.
    pub fn save_as(&self, dir: &Path, dtype: SaveDtype) -> Result<Vec<String>, ModelError> {
        let mut out = WeightWriter::new();
        self.export(&mut out);
        write_model_dir(dir, &self.config, &out, dtype)
    }

    /// All weights under their Hugging Face names.
    pub fn export(&self, out: &mut WeightWriter) {
        self.text.export(out);
        if let Some(vision) = &self.vision {
            vision.export(out);
        }
        if let Some(vision) = &self.qwen_vision {
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
        mut cache: Option<&mut KvCache<B>>,
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
        if let Some(mrope) = self.mrope_layout(input, cache.as_deref_mut())? {
            return Ok(self.text.hidden(embeds, &mrope, cache));
        }
        Ok(self.text.hidden(embeds, layout, cache))
    }

    /// For `qwen2_5_vl`, `input`'s layout with its tokens' 3-D rotary
    /// positions (and the cache's rows' offsets updated); `None` for the
    /// other architectures.
    fn mrope_layout(
        &self,
        input: &ModelInput,
        cache: Option<&mut KvCache<B>>,
    ) -> Result<Option<Layout>, ModelError> {
        let (Some(vision), Some(image_token)) = (&self.qwen_vision, self.config.image_token_id)
        else {
            return Ok(None);
        };
        let grids = input.images.as_ref().map_or(&[][..], |i| &i.grids[..]);
        let before = cache.as_ref().map(|c| c.rope_deltas().to_vec());
        let (positions, deltas) = mrope::positions(
            &input.tokens,
            &input.layout,
            image_token,
            grids,
            vision.config.spatial_merge_size,
            before.as_deref().unwrap_or(&[]),
        )
        .map_err(|reason| ModelError::Request { reason })?;
        if let Some(cache) = cache {
            cache.set_rope_deltas(deltas);
        }
        Ok(Some(Layout {
            mrope: Some(positions),
            ..input.layout.clone()
        }))
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
        if let (Some(vision), Some(image_token)) = (&self.qwen_vision, self.config.image_token_id) {
            let features = qwen_features(vision, tokens, image_token, images, &embeds.device())?;
            return Ok(splice(embeds, tokens, image_token, features));
        }
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
        let d = embeds.dims()[2];
        let patches = Tensor::<B, 3>::from_data(
            TensorData::new(images.values.clone(), [images.count, per_image, patch_dim]),
            &embeds.device(),
        );
        let features = vision
            .forward(patches)
            .reshape([images.count * per_image, d]);
        Ok(splice(embeds, tokens, image_token, features))
    }
}

/// The features of `qwen2_5_vl`'s images, `[placeholders, d]`, after
/// checking they fit the placeholders of `tokens`.
fn qwen_features<B: Backend>(
    vision: &QwenVisionTower<B>,
    tokens: &[u32],
    image_token: u32,
    images: &ImagePatches,
    device: &B::Device,
) -> Result<Tensor<B, 2>, ModelError> {
    let c = &vision.config;
    let patch_dim = c.patch_dim();
    let patches: usize = images.grids.iter().map(|g| g[0] * g[1] * g[2]).sum();
    let merge = c.spatial_merge_size;
    if images.grids.len() != images.count
        || images.values.len() != patches * patch_dim
        || images
            .grids
            .iter()
            .any(|g| g[0] == 0 || g[1] % merge != 0 || g[2] % merge != 0 || g[1] == 0 || g[2] == 0)
    {
        return Err(ModelError::Request {
            reason: format!(
                "{} patch values and grids {:?} for {} images of {patch_dim}-value patches merged {merge}×{merge}",
                images.values.len(),
                images.grids,
                images.count
            ),
        });
    }
    let needed: usize = images.grids.iter().map(|&g| c.tokens(g)).sum();
    let placeholders = tokens.iter().filter(|&&t| t == image_token).count();
    if placeholders != needed {
        return Err(ModelError::Request {
            reason: format!(
                "the prompt has {placeholders} image placeholder tokens, but its {} images need {needed}",
                images.count
            ),
        });
    }
    let patches = Tensor::<B, 2>::from_data(
        TensorData::new(images.values.clone(), [patches, patch_dim]),
        device,
    );
    Ok(vision.forward(patches, &images.grids))
}

/// `embeds` (`[batch, seq, d]`) with the rows of `features` (`[placeholders,
/// d]`) in place of the image placeholders of `tokens`, in order.
fn splice<B: Backend>(
    embeds: Tensor<B, 3>,
    tokens: &[u32],
    image_token: u32,
    features: Tensor<B, 2>,
) -> Tensor<B, 3> {
    let [batch, seq, d] = embeds.dims();
    let device = embeds.device();
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
    spliced.reshape([batch, seq, d])
}

/// Writes `config.json` and `model.safetensors` (from `weights`, in
/// `dtype`) into `dir`, created if needed; each file is replaced
/// atomically. Returns the tensors kept in f32 because a weight would
/// overflow `dtype`.
pub fn write_model_dir(
    dir: &Path,
    config: &ModelConfig,
    weights: &WeightWriter,
    dtype: SaveDtype,
) -> Result<Vec<String>, ModelError> {
    std::fs::create_dir_all(dir).map_err(error::io_error(dir))?;
    let kept_f32 = weights.write_as(
        &dir.join("model.safetensors"),
        Some([("format".to_string(), "pt".to_string())].into()),
        dtype,
    )?;
    if let Some(vision) = &config.qwen_vision {
        let json =
            serde_json::to_string_pretty(&image_processor::to_json(vision)).unwrap_or_default();
        write_atomically(
            &dir.join(image_processor::FILE),
            format!("{json}\n").as_bytes(),
        )?;
    }
    let json = serde_json::to_string_pretty(&config.to_json()).unwrap_or_default();
    write_atomically(&dir.join("config.json"), format!("{json}\n").as_bytes())?;
    Ok(kept_f32)
}
