//! The vision tower of `tiny_vlm`: a ViT-style patch encoder.
//!
//! Patches (`[images, patches, 3 * patch * patch]`, made by
//! [`crate::images`]) go through a linear patch embedding plus a learned
//! position table, bidirectional transformer blocks (the decoder block
//! without the causal mask, rotary positions over the patch order), a final
//! RMSNorm and a linear projector into the text model's width. Weight names:
//! `vision.patch_embed`, `vision.position_embedding`, `vision.layers.{i}.…`,
//! `vision.norm`, `vision.projector`.

use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, RmsNorm};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use super::decoder::{DecoderLayer, Layout, TextConfig};
use super::error::ModelError;
use super::layers::{
    export_linear, export_rms_norm, init_linear, init_rms_norm, load_linear, load_rms_norm, project,
};
use super::rope::Rope;
use super::weights::{WeightReader, WeightWriter};

/// The sizes of the vision tower (`vision_config` in `config.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VisionConfig {
    /// Images are resized to `image_size × image_size` pixels.
    pub image_size: usize,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// MLP hidden width.
    pub intermediate_size: usize,
    /// Number of blocks.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Per-channel mean subtracted after scaling pixels to 0..1.
    pub image_mean: [f32; 3],
    /// Per-channel standard deviation divided by after subtracting the mean.
    pub image_std: [f32; 3],
}

impl VisionConfig {
    /// Patches per image.
    pub fn num_patches(&self) -> usize {
        let side = self.image_size / self.patch_size.max(1);
        side * side
    }

    /// Values per patch (3 channels).
    pub fn patch_dim(&self) -> usize {
        3 * self.patch_size * self.patch_size
    }

    /// The block sizes, in the decoder's terms (no vocabulary).
    pub(crate) fn block_config(&self) -> TextConfig {
        TextConfig {
            vocab_size: 1,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self.num_attention_heads,
            rope_theta: 10_000.0,
            rms_norm_eps: self.rms_norm_eps,
            tie_word_embeddings: true,
            max_position_embeddings: self.num_patches(),
            mrope_section: None,
        }
    }

    /// Checks the sizes fit together.
    pub fn validate(&self) -> Result<(), String> {
        if self.patch_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return Err(format!(
                "`vision_config.image_size` ({}) must be a multiple of `patch_size` ({})",
                self.image_size, self.patch_size
            ));
        }
        if self.image_std.iter().any(|s| *s <= 0.0) {
            return Err("`vision_config.image_std` must be positive".into());
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(format!(
                "`vision_config.rms_norm_eps` is {}, not a positive number",
                self.rms_norm_eps
            ));
        }
        self.block_config()
            .validate()
            .map_err(|e| format!("vision_config: {e}"))
    }
}

/// Patch encoder and projector.
#[derive(Module, Debug)]
pub struct VisionTower<B: Backend> {
    /// Patch embedding `3·patch² → hidden`.
    pub patch_embed: Linear<B>,
    /// Learned position table `[patches, hidden]`.
    pub position_embedding: Param<Tensor<B, 2>>,
    /// The transformer blocks.
    pub layers: Vec<DecoderLayer<B>>,
    /// The final norm.
    pub norm: RmsNorm<B>,
    /// Projection into the text width.
    pub projector: Linear<B>,
    #[module(skip)]
    /// The configuration the model was built from.
    pub config: VisionConfig,
    #[module(skip)]
    rope: Rope,
}

impl<B: Backend> VisionTower<B> {
    /// Random weights projecting into a text model of width `text_width`.
    pub fn init(config: VisionConfig, text_width: usize, device: &B::Device) -> Self {
        let block = config.block_config();
        let positions = Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        }
        .init([config.num_patches(), config.hidden_size], device);
        Self {
            patch_embed: init_linear(config.patch_dim(), config.hidden_size, true, device),
            position_embedding: positions,
            layers: (0..config.num_hidden_layers)
                .map(|_| DecoderLayer::init(&block, device))
                .collect(),
            norm: init_rms_norm(config.hidden_size, config.rms_norm_eps, device),
            projector: init_linear(config.hidden_size, text_width, true, device),
            rope: Rope::new(block.head_dim(), block.rope_theta),
            config,
        }
    }

    /// Loads `vision.*`.
    pub fn load(
        weights: &WeightReader,
        config: VisionConfig,
        text_width: usize,
        device: &B::Device,
    ) -> Result<Self, ModelError> {
        let block = config.block_config();
        let (p, h) = (config.num_patches(), config.hidden_size);
        Ok(Self {
            patch_embed: load_linear(
                weights,
                "vision.patch_embed",
                config.patch_dim(),
                h,
                true,
                device,
            )?,
            position_embedding: Param::from_tensor(weights.tensor(
                "vision.position_embedding",
                [p, h],
                device,
            )?),
            layers: (0..config.num_hidden_layers)
                .map(|i| DecoderLayer::load(weights, &format!("vision.layers.{i}"), &block, device))
                .collect::<Result<Vec<_>, _>>()?,
            norm: load_rms_norm(weights, "vision.norm", h, config.rms_norm_eps, device)?,
            projector: load_linear(weights, "vision.projector", h, text_width, true, device)?,
            rope: Rope::new(block.head_dim(), block.rope_theta),
            config,
        })
    }

    /// Exports under the names [`VisionTower::load`] reads.
    pub fn export(&self, out: &mut WeightWriter) {
        export_linear(out, "vision.patch_embed", &self.patch_embed);
        out.add("vision.position_embedding", self.position_embedding.val());
        for (i, layer) in self.layers.iter().enumerate() {
            layer.export(out, &format!("vision.layers.{i}"));
        }
        export_rms_norm(out, "vision.norm", &self.norm);
        export_linear(out, "vision.projector", &self.projector);
    }

    /// `patches`: `[images, patches, patch_dim]` → `[images, patches, text_width]`.
    pub fn forward(&self, patches: Tensor<B, 3>) -> Tensor<B, 3> {
        let [images, count, _] = patches.dims();
        let device = patches.device();
        let x = project(&self.patch_embed, patches)
            + self.position_embedding.val().unsqueeze_dim::<3>(0);
        let layout = Layout::dense(images, count, false);
        let heads = self.config.num_attention_heads;
        let rope = self.rope.tables(&layout, heads, heads, &device);
        let mask = layout.mask(self.config.num_attention_heads, &device);
        let x = self
            .layers
            .iter()
            .fold(x, |x, layer| layer.forward(x, &rope, mask.as_ref(), None));
        project(&self.projector, self.norm.forward(x))
    }
}
