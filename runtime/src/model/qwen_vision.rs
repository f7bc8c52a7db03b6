//! The vision tower of `qwen2_5_vl` (Qwen2.5-VL), as transformers'
//! `Qwen2_5_VisionTransformerPretrainedModel` computes it.
//!
//! An image arrives as `grid_t · grid_h · grid_w` patches of `3 ·
//! temporal_patch · patch²` values (made by [`crate::images::qwen`]), in
//! block-major order: each `merge × merge` square of neighbouring patches is
//! consecutive. The tower:
//!
//! 1. embeds each patch linearly (the checkpoint's `Conv3d` with stride
//!    equal to its kernel, as a product);
//! 2. reorders the patches window by window (`window_size` pixels square,
//!    in merged units), the order transformers' `get_vision_window_index`
//!    gives;
//! 3. runs pre-norm blocks (RMSNorm → attention → residual, RMSNorm →
//!    SwiGLU with biases → residual), attention with 2-D rotary positions
//!    (height and width of each patch) and bidirectional within a window,
//!    or within the whole image in the `fullatt_block_indexes` blocks;
//! 4. merges each `merge × merge` square into one token (RMSNorm, then
//!    `Linear → GELU → Linear` into the decoder's width) and restores the
//!    image order.
//!
//! Weight names are the checkpoints': `visual.patch_embed.proj`,
//! `visual.blocks.{i}.{norm1,norm2,attn.qkv,attn.proj,mlp.*}`,
//! `visual.merger.{ln_q,mlp.0,mlp.2}`.

use burn::module::{Module, Param};
use burn::nn::{Linear, RmsNorm};
use burn::tensor::activation::{gelu, silu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::error::ModelError;
use super::layers::{
    export_linear, export_rms_norm, init_linear, init_rms_norm, load_linear, load_rms_norm, project,
};
use super::rope::{apply_rotary, full_width, repeat_heads, Rope, RopeTable};
use super::weights::{WeightReader, WeightWriter};

/// The vision norms' epsilon (fixed in the reference implementation).
const NORM_EPS: f64 = 1e-6;

/// `vision_config` of a Qwen2.5-VL `config.json`, with the image
/// processor's settings (`preprocessor_config.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QwenVisionConfig {
    /// Number of blocks.
    pub depth: usize,
    /// Width of the blocks.
    pub hidden_size: usize,
    /// MLP hidden width.
    pub intermediate_size: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Width of a merged token (the decoder's `hidden_size`).
    pub out_hidden_size: usize,
    /// Patch side in pixels.
    #[serde(default = "default_patch")]
    pub patch_size: usize,
    /// Patches per side merged into one token.
    #[serde(default = "default_two")]
    pub spatial_merge_size: usize,
    /// Frames per patch (an image is repeated to fill them).
    #[serde(default = "default_two")]
    pub temporal_patch_size: usize,
    /// Side of an attention window in pixels.
    #[serde(default = "default_window")]
    pub window_size: usize,
    /// The blocks that attend over the whole image instead of a window
    /// (transformers' default `[7, 15, 23, 31]` when absent; indexes past
    /// the last block are ignored, as transformers ignores them).
    #[serde(default = "default_full_attention_blocks")]
    pub fullatt_block_indexes: Vec<usize>,
    /// The rotary base.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// How images are resized and normalised.
    #[serde(skip)]
    pub processing: ImageProcessing,
    /// The model's other vision token ids (top-level fields of
    /// `config.json`), kept so that a saved model reads back in
    /// transformers with the same ones.
    #[serde(skip)]
    pub tokens: VisionTokenIds,
    /// Set where a training stage trains the tower (one without
    /// `freeze_vision`): its backward pass needs every full-attention
    /// block's scores, so [`QwenVisionConfig::check_image_patches`] holds
    /// images to [`MAX_ATTENTION_BYTES`]. Unset (generation, scoring, a
    /// frozen tower), nothing keeps the scores and attention runs in query
    /// chunks: images of any size.
    #[serde(skip)]
    pub trained: bool,
}

/// `vision_start_token_id`, `vision_end_token_id` and `video_token_id` of
/// a Qwen2.5-VL `config.json`. saferc finds these tokens by their text in
/// the tokenizer; transformers' `get_rope_index` finds images by these ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VisionTokenIds {
    /// `<|vision_start|>`.
    pub vision_start: u32,
    /// `<|vision_end|>`.
    pub vision_end: u32,
    /// `<|video_pad|>`.
    pub video: u32,
}

impl Default for VisionTokenIds {
    /// transformers' defaults (Qwen's vocabulary).
    fn default() -> Self {
        Self {
            vision_start: 151_652,
            vision_end: 151_653,
            video: 151_656,
        }
    }
}

/// The image processor's settings (`Qwen2VLImageProcessor`).
#[derive(Clone, Debug, PartialEq)]
pub struct ImageProcessing {
    /// The fewest pixels a resized image has.
    pub min_pixels: usize,
    /// The most pixels a resized image has.
    pub max_pixels: usize,
    /// Per-channel mean subtracted after scaling pixels to 0..1.
    pub image_mean: [f32; 3],
    /// Per-channel standard deviation divided by after the mean.
    pub image_std: [f32; 3],
}

impl Default for ImageProcessing {
    /// transformers' defaults (OpenAI CLIP's mean and deviation).
    fn default() -> Self {
        Self {
            min_pixels: 56 * 56,
            max_pixels: 28 * 28 * 1280,
            image_mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
            image_std: [0.268_629_54, 0.261_302_6, 0.275_777_1],
        }
    }
}

fn default_patch() -> usize {
    14
}
fn default_two() -> usize {
    2
}
fn default_window() -> usize {
    112
}
fn default_theta() -> f64 {
    10_000.0
}
fn default_full_attention_blocks() -> Vec<usize> {
    vec![7, 15, 23, 31]
}

/// The largest attention score matrix (`heads × N × N` f32 values) a
/// full-attention block may build for one image in a stage that trains the
/// tower: 2 GiB, which holds the images of transformers' default
/// `max_pixels` (1,003,520 pixels, 5,120 patches) at Qwen2.5-VL's 16 heads.
/// Training the tower keeps one per block for the backward pass, so a
/// larger image is refused before the run spends anything on it (see
/// [`QwenVisionConfig::check_image_patches`]); generation, scoring and a
/// frozen tower (`freeze_vision`) chunk the queries and take any size.
pub const MAX_ATTENTION_BYTES: usize = 2 << 30;

/// Queries per attention product in a vision block: inference holds at
/// most `heads × QUERY_CHUNK × N` scores at once.
const QUERY_CHUNK: usize = 1024;

impl QwenVisionConfig {
    /// Values per patch: `3 · temporal_patch · patch²`.
    pub fn patch_dim(&self) -> usize {
        3 * self.temporal_patch_size * self.patch_size * self.patch_size
    }

    /// Patches merged into one token (`merge²`).
    pub fn merge_unit(&self) -> usize {
        self.spatial_merge_size * self.spatial_merge_size
    }

    /// The decoder tokens an image of grid `[t, h, w]` patches becomes.
    pub fn tokens(&self, grid: [usize; 3]) -> usize {
        grid[0] * grid[1] * grid[2] / self.merge_unit().max(1)
    }

    /// Checks the sizes fit together.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("depth", self.depth),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_heads", self.num_heads),
            ("out_hidden_size", self.out_hidden_size),
            ("patch_size", self.patch_size),
            ("spatial_merge_size", self.spatial_merge_size),
            ("temporal_patch_size", self.temporal_patch_size),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("`vision_config.{name}` must be positive"));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(format!(
                "`vision_config.rope_theta` is {}, not a positive number",
                self.rope_theta
            ));
        }
        let head_dim = self.hidden_size / self.num_heads;
        if !self.hidden_size.is_multiple_of(self.num_heads) || !head_dim.is_multiple_of(4) {
            return Err(format!(
                "`vision_config.hidden_size` ({}) must split into `num_heads` ({}) heads of a width divisible by 4",
                self.hidden_size, self.num_heads
            ));
        }
        // A window of `window_size / (merge · patch)` merged tokens a side,
        // rounded down as transformers rounds it.
        let merged_pixels = self.spatial_merge_size * self.patch_size;
        if self.window_size < merged_pixels {
            return Err(format!(
                "`vision_config.window_size` ({}) must be at least `spatial_merge_size · patch_size` ({merged_pixels})",
                self.window_size
            ));
        }
        let p = &self.processing;
        if p.min_pixels == 0 {
            return Err(
                "the image processor's `min_pixels` (`size.shortest_edge`) must be at least 1 (a thin image would resize to no pixels)"
                    .into(),
            );
        }
        if p.min_pixels > p.max_pixels {
            return Err(format!(
                "the image processor's pixel range {}..{} is empty",
                p.min_pixels, p.max_pixels
            ));
        }
        if p.image_std.iter().any(|s| *s <= 0.0) {
            return Err("the image processor's `image_std` must be positive".into());
        }
        Ok(())
    }

    fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads.max(1)
    }

    /// Whether any block attends over the whole image.
    pub fn has_full_attention(&self) -> bool {
        self.fullatt_block_indexes.iter().any(|&i| i < self.depth)
    }

    /// The most patches one image may have: its full-attention scores
    /// must fit [`MAX_ATTENTION_BYTES`] (no limit without full-attention
    /// blocks: windows bound the scores).
    pub fn max_image_patches(&self) -> Option<usize> {
        if !self.has_full_attention() {
            return None;
        }
        let values = MAX_ATTENTION_BYTES / 4 / self.num_heads.max(1);
        Some(values.isqrt())
    }

    /// Refuses an image of `patches` patches whose full-attention scores
    /// would not fit [`MAX_ATTENTION_BYTES`], saying which `max_pixels`
    /// would.
    pub fn check_image_patches(&self, patches: usize) -> Result<(), String> {
        let Some(limit) = self.max_image_patches().filter(|_| self.trained) else {
            return Ok(());
        };
        if patches <= limit {
            return Ok(());
        }
        let gib =
            |n: usize| self.num_heads as f64 * (n as f64).powi(2) * 4.0 / f64::from(1u32 << 30);
        Err(format!(
            "{patches} patches: the vision tower's full-attention blocks would need {:.1} GiB \
             of attention scores each, over saferc's limit of {:.1} GiB ({limit} patches); \
             lower the model's `max_pixels` (`size.longest_edge`; preprocessor_config.json or \
             processor_config.json) to at most {} (it is {}), or freeze the vision tower \
             (`freeze_vision = true` in the stage), which keeps no scores",
            gib(patches),
            gib(limit),
            limit * self.patch_size * self.patch_size,
            self.processing.max_pixels
        ))
    }
}

/// One vision block.
#[derive(Module, Debug)]
pub struct QwenVisionBlock<B: Backend> {
    /// Norm before attention.
    pub norm1: RmsNorm<B>,
    /// Norm before the MLP.
    pub norm2: RmsNorm<B>,
    /// Queries, keys and values in one projection `d → 3d`.
    pub qkv: Linear<B>,
    /// Attention output projection.
    pub proj: Linear<B>,
    /// SwiGLU gate `d → hidden`.
    pub gate_proj: Linear<B>,
    /// SwiGLU up `d → hidden`.
    pub up_proj: Linear<B>,
    /// SwiGLU down `hidden → d`.
    pub down_proj: Linear<B>,
}

/// The whole tower.
#[derive(Module, Debug)]
pub struct QwenVisionTower<B: Backend> {
    /// Patch embedding `patch_dim → d` (no bias).
    pub patch_embed: Linear<B>,
    /// The blocks.
    pub blocks: Vec<QwenVisionBlock<B>>,
    /// The merger's norm (`ln_q`).
    pub merger_norm: RmsNorm<B>,
    /// The merger's first layer `merge² · d → merge² · d`.
    pub merger_fc1: Linear<B>,
    /// The merger's second layer `merge² · d → out_hidden_size`.
    pub merger_fc2: Linear<B>,
    #[module(skip)]
    /// The configuration the tower was built from.
    pub config: QwenVisionConfig,
}

impl<B: Backend> QwenVisionBlock<B> {
    fn init(c: &QwenVisionConfig, device: &B::Device) -> Self {
        let (d, h) = (c.hidden_size, c.intermediate_size);
        Self {
            norm1: init_rms_norm(d, NORM_EPS, device),
            norm2: init_rms_norm(d, NORM_EPS, device),
            qkv: init_linear(d, 3 * d, true, device),
            proj: init_linear(d, d, true, device),
            gate_proj: init_linear(d, h, true, device),
            up_proj: init_linear(d, h, true, device),
            down_proj: init_linear(h, d, true, device),
        }
    }

    fn load(
        weights: &WeightReader,
        prefix: &str,
        c: &QwenVisionConfig,
        device: &B::Device,
    ) -> Result<Self, ModelError> {
        let (d, h) = (c.hidden_size, c.intermediate_size);
        let p = |name: &str| format!("{prefix}.{name}");
        let linear =
            |name: &str, d_in, d_out| load_linear(weights, &p(name), d_in, d_out, true, device);
        Ok(Self {
            norm1: load_rms_norm(weights, &p("norm1"), d, NORM_EPS, device)?,
            norm2: load_rms_norm(weights, &p("norm2"), d, NORM_EPS, device)?,
            qkv: linear("attn.qkv", d, 3 * d)?,
            proj: linear("attn.proj", d, d)?,
            gate_proj: linear("mlp.gate_proj", d, h)?,
            up_proj: linear("mlp.up_proj", d, h)?,
            down_proj: linear("mlp.down_proj", h, d)?,
        })
    }

    fn export(&self, out: &mut WeightWriter, prefix: &str) {
        export_rms_norm(out, &format!("{prefix}.norm1"), &self.norm1);
        export_rms_norm(out, &format!("{prefix}.norm2"), &self.norm2);
        for (name, linear) in [
            ("attn.qkv", &self.qkv),
            ("attn.proj", &self.proj),
            ("mlp.gate_proj", &self.gate_proj),
            ("mlp.up_proj", &self.up_proj),
            ("mlp.down_proj", &self.down_proj),
        ] {
            export_linear(out, &format!("{prefix}.{name}"), linear);
        }
    }

    /// `x`: `[1, N, d]` → `[1, N, d]`; attention within each of `segments`
    /// (consecutive patch ranges covering `0..N`).
    fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &RopeTable<B>,
        heads: usize,
        segments: &[(usize, usize)],
    ) -> Tensor<B, 3> {
        let [_, n, d] = x.dims();
        let head_dim = d / heads;
        let qkv =
            project(&self.qkv, self.norm1.forward(x.clone())).reshape([n, 3, heads, head_dim]);
        let part = |i: usize| qkv.clone().narrow(1, i, 1).reshape([1, n, heads, head_dim]);
        let q = apply_rotary(part(0), rope)
            .reshape([n, heads, head_dim])
            .swap_dims(0, 1);
        let k = apply_rotary(part(1), rope)
            .reshape([n, heads, head_dim])
            .swap_dims(0, 1);
        let v = part(2).reshape([n, heads, head_dim]).swap_dims(0, 1);
        let scale = (head_dim as f64).powf(-0.5);
        let context = segment_attention(q, k, v, segments, scale, QUERY_CHUNK)
            .swap_dims(0, 1)
            .reshape([1, n, d]);
        let x = x + project(&self.proj, context);
        let h = self.norm2.forward(x.clone());
        let fed = silu(project(&self.gate_proj, h.clone())) * project(&self.up_proj, h);
        x + project(&self.down_proj, fed)
    }
}

/// `q`, `k`, `v`: `[heads, N, head_dim]` → `[heads, N, head_dim]`:
/// `softmax(q·kᵀ · scale)·v` within each of `segments` (consecutive ranges
/// covering `0..N`), at most `chunk` queries per product, so that a
/// whole-image segment never holds all its `[heads, len, len]` scores at
/// once in inference.
fn segment_attention<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    segments: &[(usize, usize)],
    scale: f64,
    chunk: usize,
) -> Tensor<B, 3> {
    let chunk = chunk.max(1);
    let mut contexts: Vec<Tensor<B, 3>> = Vec::new();
    for &(start, end) in segments {
        let len = end - start;
        let keys = k.clone().narrow(1, start, len).swap_dims(1, 2);
        let values = v.clone().narrow(1, start, len);
        for from in (start..end).step_by(chunk) {
            let rows = chunk.min(end - from);
            let scores = q
                .clone()
                .narrow(1, from, rows)
                .matmul(keys.clone())
                .mul_scalar(scale);
            contexts.push(softmax(scores, 2).matmul(values.clone()));
        }
    }
    Tensor::cat(contexts, 1)
}

impl<B: Backend> QwenVisionTower<B> {
    /// Random weights.
    pub fn init(config: QwenVisionConfig, device: &B::Device) -> Self {
        let merged = config.hidden_size * config.merge_unit();
        Self {
            patch_embed: init_linear(config.patch_dim(), config.hidden_size, false, device),
            blocks: (0..config.depth)
                .map(|_| QwenVisionBlock::init(&config, device))
                .collect(),
            merger_norm: init_rms_norm(config.hidden_size, NORM_EPS, device),
            merger_fc1: init_linear(merged, merged, true, device),
            merger_fc2: init_linear(merged, config.out_hidden_size, true, device),
            config,
        }
    }

    /// Loads `visual.*`.
    pub fn load(
        weights: &WeightReader,
        config: QwenVisionConfig,
        device: &B::Device,
    ) -> Result<Self, ModelError> {
        let c = &config;
        let (d, merged) = (c.hidden_size, c.hidden_size * c.merge_unit());
        let kernel = [d, 3, c.temporal_patch_size, c.patch_size, c.patch_size];
        // The Conv3d kernel `[d, 3, t, p, p]` flattened is `[d, patch_dim]`,
        // in the order the processor flattens a patch (channel, frame, y, x).
        let stored = weights.values("visual.patch_embed.proj.weight", &kernel)?;
        let weight = Tensor::<B, 2>::from_data(TensorData::new(stored, [d, c.patch_dim()]), device)
            .transpose();
        let patch_embed = Linear {
            weight: Param::from_tensor(weight),
            bias: None,
        };
        let blocks = (0..c.depth)
            .map(|i| QwenVisionBlock::load(weights, &format!("visual.blocks.{i}"), c, device))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            patch_embed,
            blocks,
            merger_norm: load_rms_norm(weights, "visual.merger.ln_q", d, NORM_EPS, device)?,
            merger_fc1: load_linear(weights, "visual.merger.mlp.0", merged, merged, true, device)?,
            merger_fc2: load_linear(
                weights,
                "visual.merger.mlp.2",
                merged,
                c.out_hidden_size,
                true,
                device,
            )?,
            config,
        })
    }

    /// Exports under the names [`QwenVisionTower::load`] reads.
    pub fn export(&self, out: &mut WeightWriter) {
        let c = &self.config;
        let kernel = [
            c.hidden_size,
            3,
            c.temporal_patch_size,
            c.patch_size,
            c.patch_size,
        ];
        out.add(
            "visual.patch_embed.proj.weight",
            self.patch_embed.weight.val().transpose().reshape(kernel),
        );
        for (i, block) in self.blocks.iter().enumerate() {
            block.export(out, &format!("visual.blocks.{i}"));
        }
        export_rms_norm(out, "visual.merger.ln_q", &self.merger_norm);
        export_linear(out, "visual.merger.mlp.0", &self.merger_fc1);
        export_linear(out, "visual.merger.mlp.2", &self.merger_fc2);
    }

    /// `patches`: `[N, patch_dim]`, the images of `grids` (`[t, h, w]`
    /// patches each) one after another → `[N / merge², out_hidden_size]`,
    /// one row per decoder token, in the images' order.
    pub fn forward(&self, patches: Tensor<B, 2>, grids: &[[usize; 3]]) -> Tensor<B, 2> {
        let c = &self.config;
        let device = patches.device();
        let plan = WindowPlan::new(c, grids);
        let n = plan.patch_order.len();
        let unit = c.merge_unit();
        let order =
            Tensor::<B, 1, Int>::from_data(TensorData::new(plan.patch_order.clone(), [n]), &device);
        let x = project(&self.patch_embed, patches.unsqueeze_dim(0)).reshape([n, c.hidden_size]);
        let mut x = x.select(0, order).unsqueeze_dim::<3>(0);
        let rope = plan.rope_table::<B>(c, &device);
        for (i, block) in self.blocks.iter().enumerate() {
            let segments = if c.fullatt_block_indexes.contains(&i) {
                &plan.images
            } else {
                &plan.windows
            };
            x = block.forward(x, &rope, c.num_heads, segments);
        }
        let merged_width = c.hidden_size * unit;
        let merged = self
            .merger_norm
            .forward(x)
            .reshape([1, n / unit.max(1), merged_width]);
        let merged = project(&self.merger_fc2, gelu(project(&self.merger_fc1, merged)));
        let tokens = n / unit.max(1);
        let restore = Tensor::<B, 1, Int>::from_data(
            TensorData::new(plan.restore_order(), [tokens]),
            &device,
        );
        merged
            .reshape([tokens, c.out_hidden_size])
            .select(0, restore)
    }
}

/// Where each patch goes for windowed attention, computed on the host
/// from the images' grids (transformers' `get_vision_window_index` and
/// `get_vision_position_ids`).
struct WindowPlan {
    /// Merged tokens in window order: `window_tokens[i]` is the image-order
    /// index of the token at window-order position `i`.
    window_tokens: Vec<usize>,
    /// Patches in window order (each token's `merge²` patches in turn).
    patch_order: Vec<i64>,
    /// The `(height, width)` position of every patch, in window order.
    positions: Vec<[i64; 2]>,
    /// Window-order patch ranges of each window.
    windows: Vec<(usize, usize)>,
    /// Patch ranges of each image frame (the full-attention blocks).
    images: Vec<(usize, usize)>,
}

impl WindowPlan {
    fn new(c: &QwenVisionConfig, grids: &[[usize; 3]]) -> Self {
        let m = c.spatial_merge_size;
        let unit = c.merge_unit();
        let side = (c.window_size / m / c.patch_size).max(1);
        let mut plan = Self {
            window_tokens: Vec::new(),
            patch_order: Vec::new(),
            positions: Vec::new(),
            windows: Vec::new(),
            images: Vec::new(),
        };
        // The (h, w) position of every patch, in the processor's
        // block-major order (image after image).
        let mut image_positions = Vec::new();
        let mut base = 0;
        for &[t, h, w] in grids {
            let (lh, lw) = (h / m, w / m);
            for _ in 0..t {
                for bh in 0..lh {
                    for bw in 0..lw {
                        for mh in 0..m {
                            for mw in 0..m {
                                image_positions.push([(bh * m + mh) as i64, (bw * m + mw) as i64]);
                            }
                        }
                    }
                }
            }
            let (windows_h, windows_w) = (lh.div_ceil(side), lw.div_ceil(side));
            for frame in 0..t {
                let frame_start = plan.window_tokens.len() * unit;
                for wh in 0..windows_h {
                    for ww in 0..windows_w {
                        let start = plan.window_tokens.len() * unit;
                        for y in wh * side..((wh + 1) * side).min(lh) {
                            for x in ww * side..((ww + 1) * side).min(lw) {
                                plan.window_tokens.push(base + frame * lh * lw + y * lw + x);
                            }
                        }
                        let end = plan.window_tokens.len() * unit;
                        if end > start {
                            plan.windows.push((start, end));
                        }
                    }
                }
                plan.images
                    .push((frame_start, plan.window_tokens.len() * unit));
            }
            base += t * lh * lw;
        }
        for &token in &plan.window_tokens {
            for k in 0..unit {
                let patch = token * unit + k;
                plan.patch_order.push(patch as i64);
                plan.positions
                    .push(image_positions.get(patch).copied().unwrap_or_default());
            }
        }
        plan
    }

    /// The rotary table `[1, N, heads, head_dim]` of the patches in window
    /// order: the first half of a row turns `head_dim / 4` frequencies by
    /// the patch's height and as many by its width.
    fn rope_table<B: Backend>(&self, c: &QwenVisionConfig, device: &B::Device) -> RopeTable<B> {
        let head_dim = c.head_dim();
        let rope = Rope::new(head_dim / 2, c.rope_theta);
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for &[h, w] in &self.positions {
            rope.push_half(h, &mut cos, &mut sin);
            rope.push_half(w, &mut cos, &mut sin);
        }
        let n = self.positions.len();
        let shape = [1, n, c.num_heads, head_dim];
        RopeTable {
            cos: repeat_heads(&full_width(&cos, head_dim), c.num_heads, shape, device),
            sin: repeat_heads(&full_width(&sin, head_dim), c.num_heads, shape, device),
        }
    }

    /// For each token in image order, its window-order index (the inverse
    /// of `window_tokens`).
    fn restore_order(&self) -> Vec<i64> {
        let mut restore = vec![0i64; self.window_tokens.len()];
        for (i, &token) in self.window_tokens.iter().enumerate() {
            if let Some(slot) = restore.get_mut(token) {
                *slot = i as i64;
            }
        }
        restore
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(window_size: usize) -> QwenVisionConfig {
        QwenVisionConfig {
            depth: 1,
            hidden_size: 16,
            intermediate_size: 8,
            num_heads: 2,
            out_hidden_size: 8,
            patch_size: 14,
            spatial_merge_size: 2,
            temporal_patch_size: 2,
            window_size,
            fullatt_block_indexes: vec![],
            rope_theta: 10_000.0,
            processing: ImageProcessing::default(),
            tokens: VisionTokenIds::default(),
            trained: true,
        }
    }

    #[test]
    fn windows_follow_transformers_order() {
        // A 6×10-patch image is 3×5 merged tokens; windows of 2×2 tokens
        // (56 pixels) tile it as 2×3 windows, the last row and column cut.
        let plan = WindowPlan::new(&config(56), &[[1, 6, 10]]);
        assert_eq!(
            plan.window_tokens,
            vec![0, 1, 5, 6, 2, 3, 7, 8, 4, 9, 10, 11, 12, 13, 14]
        );
        let sizes: Vec<usize> = plan.windows.iter().map(|(s, e)| (e - s) / 4).collect();
        assert_eq!(sizes, vec![4, 4, 2, 2, 2, 1]);
        assert_eq!(plan.images, vec![(0, 60)]);
        // The first window's first token is the top-left 2×2 patches.
        assert_eq!(&plan.positions[..4], &[[0, 0], [0, 1], [1, 0], [1, 1]]);
        // Token 2 (third of the top row) starts at patch column 4.
        assert_eq!(plan.positions[16], [0, 4]);
        let restore = plan.restore_order();
        for (i, &token) in plan.window_tokens.iter().enumerate() {
            assert_eq!(restore[token], i as i64);
        }
    }

    #[test]
    fn attention_in_query_chunks_equals_one_product_per_segment() {
        use burn::tensor::Distribution;
        type B = burn::backend::Flex;
        let device = Default::default();
        let random = || Tensor::<B, 3>::random([2, 11, 4], Distribution::Normal(0.0, 1.0), &device);
        let (q, k, v) = (random(), random(), random());
        let segments = [(0, 7), (7, 11)];
        let whole = segment_attention(q.clone(), k.clone(), v.clone(), &segments, 0.5, 64);
        let chunked = segment_attention(q, k, v, &segments, 0.5, 3);
        whole.into_data().assert_approx_eq::<f32>(
            &chunked.into_data(),
            burn::tensor::Tolerance::absolute(1e-6),
        );
    }

    #[test]
    fn config_defaults_and_limits_follow_transformers() {
        let mut c: QwenVisionConfig = serde_json::from_value(serde_json::json!({
            "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
            "out_hidden_size": 2048, "window_size": 100
        }))
        .unwrap();
        // Loaded for a stage that trains the tower.
        c.trained = true;
        // transformers' default full-attention blocks; a window of 100
        // pixels is 100 / 28 = 3 merged tokens a side, rounded down.
        assert_eq!(c.fullatt_block_indexes, vec![7, 15, 23, 31]);
        assert!(c.validate().is_ok());
        // 2 GiB of 16 heads' f32 scores: 5,792 patches an image; the
        // default max_pixels (1,003,520 = 5,120 patches) fits.
        assert_eq!(c.max_image_patches(), Some(5792));
        assert!(c.check_image_patches(1_003_520 / 196).is_ok());
        let err = c.check_image_patches(10_764).unwrap_err();
        assert!(err.contains("6.9 GiB"), "{err}");
        assert!(
            err.contains("`max_pixels`") && err.contains("at most 1135232"),
            "{err}"
        );
        // Generation, scoring and a frozen tower keep no scores for a
        // backward pass.
        let generating = QwenVisionConfig {
            trained: false,
            ..c.clone()
        };
        assert!(generating.check_image_patches(10_764).is_ok());
        // Blocks past the last are ignored, as transformers ignores them;
        // with no full-attention block there is no limit.
        let windows_only = QwenVisionConfig {
            fullatt_block_indexes: vec![40],
            ..c
        };
        assert!(windows_only.validate().is_ok());
        assert_eq!(windows_only.max_image_patches(), None);
    }

    #[test]
    fn a_second_image_is_windowed_on_its_own() {
        let plan = WindowPlan::new(&config(56), &[[1, 4, 4], [1, 2, 6]]);
        assert_eq!(plan.window_tokens, vec![0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(plan.images, vec![(0, 16), (16, 28)]);
        assert_eq!(plan.windows, vec![(0, 16), (16, 24), (24, 28)]);
    }
}
