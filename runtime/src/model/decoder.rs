//! The decoder-only transformer shared by `qwen2` and the text half of
//! `tiny_vlm`: token embeddings, pre-norm blocks (RMSNorm → attention →
//! residual, RMSNorm → SwiGLU → residual), a final RMSNorm and the LM head
//! (tied to the embeddings or separate). Weight names follow Hugging Face's
//! `Qwen2ForCausalLM`: `model.embed_tokens`, `model.layers.{i}.…`,
//! `model.norm`, `lm_head`.

use burn::module::Module;
use burn::nn::{Embedding, Linear, RmsNorm};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::attention::{Attention, AttentionDims};
use super::cpu_forward;
use super::error::ModelError;
use super::few_rows;
use super::kv_cache::KvCache;
use super::layers::{
    export_linear, export_rms_norm, init_embedding, init_linear, init_rms_norm, load_embedding,
    load_linear, load_rms_norm, project, Mlp,
};
use super::rope::{Rope, RopeTables};
use super::weights::{WeightReader, WeightWriter};

/// The sizes of a decoder (the Qwen2 `config.json` fields of the same names).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    /// Vocabulary size (logit width).
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// MLP hidden width.
    pub intermediate_size: usize,
    /// Number of blocks.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads.
    pub num_key_value_heads: usize,
    /// Rotary base.
    pub rope_theta: f64,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Whether the LM head reuses the embeddings.
    pub tie_word_embeddings: bool,
    /// The longest context.
    pub max_position_embeddings: usize,
    /// Multimodal rotary sections (`qwen2_5_vl`): how many of the
    /// `head_dim / 2` frequencies the temporal, height and width positions
    /// turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mrope_section: Option<[usize; 3]>,
}

impl TextConfig {
    /// The width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    fn attention_dims(&self) -> AttentionDims {
        AttentionDims {
            d_model: self.hidden_size,
            heads: self.num_attention_heads,
            kv_heads: self.num_key_value_heads,
            head_dim: self.head_dim(),
            qkv_bias: true,
        }
    }

    /// Checks the sizes fit together; `what` names the file for the message.
    pub fn validate(&self) -> Result<(), String> {
        let c = self;
        let positive = [
            ("vocab_size", c.vocab_size),
            ("hidden_size", c.hidden_size),
            ("intermediate_size", c.intermediate_size),
            ("num_hidden_layers", c.num_hidden_layers),
            ("num_attention_heads", c.num_attention_heads),
            ("num_key_value_heads", c.num_key_value_heads),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("`{name}` must be positive"));
        }
        if !c.hidden_size.is_multiple_of(c.num_attention_heads) || !c.head_dim().is_multiple_of(2) {
            return Err(format!(
                "`hidden_size` ({}) must split into `num_attention_heads` ({}) heads of even width",
                c.hidden_size, c.num_attention_heads
            ));
        }
        if let Some(sections) = c.mrope_section {
            if sections.iter().sum::<usize>() != c.head_dim() / 2 {
                return Err(format!(
                    "`mrope_section` {sections:?} must sum to half the head width ({})",
                    c.head_dim() / 2
                ));
            }
        }
        if !c.num_attention_heads.is_multiple_of(c.num_key_value_heads) {
            return Err(format!(
                "`num_attention_heads` ({}) must be a multiple of `num_key_value_heads` ({})",
                c.num_attention_heads, c.num_key_value_heads
            ));
        }
        Ok(())
    }
}

/// Where the tokens of one forward call sit: positions and padding, on the host.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Rows.
    pub batch: usize,
    /// New tokens per row in this call.
    pub seq: usize,
    /// Position ids, row-major `[batch, seq]`.
    pub positions: Vec<i64>,
    /// Padding of every key (cached and new), row-major `[batch, cached + seq]`; `true` = padding.
    pub key_padding: Vec<bool>,
    /// Whether a query may only see keys at or before its own position.
    pub causal: bool,
    /// Multimodal rotary positions `[t, h, w]` of every new token,
    /// row-major `[batch, seq]` (`qwen2_5_vl`, set by the model from
    /// `positions` and the images); `None` rotates by `positions`.
    pub mrope: Option<Vec<[i64; 3]>>,
}

impl Layout {
    /// Unpadded rows of equal length `seq`, positions `0..seq`.
    pub fn dense(batch: usize, seq: usize, causal: bool) -> Self {
        Self {
            batch,
            seq,
            positions: (0..batch).flat_map(|_| 0..seq as i64).collect(),
            key_padding: vec![false; batch * seq],
            causal,
            mrope: None,
        }
    }

    /// The additive mask `[batch, heads, seq, total]` (0 where visible,
    /// `f32::MIN` where not), or `None` when every key is visible to every
    /// query (a decode step without padding, a bidirectional block). Built at
    /// full width so the addition needs no broadcasting.
    pub fn mask<B: Backend>(&self, heads: usize, device: &B::Device) -> Option<Tensor<B, 4>> {
        let total = self.key_padding.len() / self.batch.max(1);
        let past = total.saturating_sub(self.seq);
        let causal_hides = self.causal && self.seq > 1;
        if !causal_hides && !self.key_padding.iter().any(|&p| p) {
            return None;
        }
        let mut values = Vec::with_capacity(self.batch * heads * self.seq * total);
        for row in 0..self.batch {
            let padding = &self.key_padding[row * total..(row + 1) * total];
            let start = values.len();
            for query in 0..self.seq {
                for (key, &pad) in padding.iter().enumerate() {
                    let hidden = pad || (self.causal && key > past + query);
                    values.push(if hidden { f32::MIN } else { 0.0 });
                }
            }
            for _ in 1..heads {
                values.extend_from_within(start..start + self.seq * total);
            }
        }
        Some(Tensor::from_data(
            TensorData::new(values, [self.batch, heads, self.seq, total]),
            device,
        ))
    }
}

/// One pre-norm transformer block.
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    /// Self-attention.
    pub self_attn: Attention<B>,
    /// The SwiGLU feed-forward block.
    pub mlp: Mlp<B>,
    /// Norm before attention.
    pub input_layernorm: RmsNorm<B>,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm<B>,
}

impl<B: Backend> DecoderLayer<B> {
    /// Random weights.
    pub fn init(c: &TextConfig, device: &B::Device) -> Self {
        Self {
            self_attn: Attention::init(c.attention_dims(), device),
            mlp: Mlp::init(c.hidden_size, c.intermediate_size, device),
            input_layernorm: init_rms_norm(c.hidden_size, c.rms_norm_eps, device),
            post_attention_layernorm: init_rms_norm(c.hidden_size, c.rms_norm_eps, device),
        }
    }

    /// Loads the block at `prefix` (e.g. `model.layers.3`).
    pub fn load(
        weights: &WeightReader,
        prefix: &str,
        c: &TextConfig,
        device: &B::Device,
    ) -> Result<Self, ModelError> {
        let p = |name: &str| format!("{prefix}.{name}");
        Ok(Self {
            self_attn: Attention::load(weights, &p("self_attn"), c.attention_dims(), device)?,
            mlp: Mlp::load(
                weights,
                &p("mlp"),
                c.hidden_size,
                c.intermediate_size,
                device,
            )?,
            input_layernorm: load_rms_norm(
                weights,
                &p("input_layernorm"),
                c.hidden_size,
                c.rms_norm_eps,
                device,
            )?,
            post_attention_layernorm: load_rms_norm(
                weights,
                &p("post_attention_layernorm"),
                c.hidden_size,
                c.rms_norm_eps,
                device,
            )?,
        })
    }

    /// Exports under the names [`DecoderLayer::load`] reads.
    pub fn export(&self, out: &mut WeightWriter, prefix: &str) {
        self.self_attn.export(out, &format!("{prefix}.self_attn"));
        self.mlp.export(out, &format!("{prefix}.mlp"));
        export_rms_norm(
            out,
            &format!("{prefix}.input_layernorm"),
            &self.input_layernorm,
        );
        export_rms_norm(
            out,
            &format!("{prefix}.post_attention_layernorm"),
            &self.post_attention_layernorm,
        );
    }

    /// `x`: `[batch, seq, d]` → `[batch, seq, d]`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &RopeTables<B>,
        mask: Option<&Tensor<B, 4>>,
        cache: Option<(&mut KvCache<B>, usize)>,
    ) -> Tensor<B, 3> {
        let attended =
            self.self_attn
                .forward(self.input_layernorm.forward(x.clone()), rope, mask, cache);
        let x = x + attended;
        let fed = self
            .mlp
            .forward(self.post_attention_layernorm.forward(x.clone()));
        x + fed
    }
}

/// The decoder with its embeddings and LM head.
#[derive(Module, Debug)]
pub struct TextDecoder<B: Backend> {
    /// Token embeddings `[vocab, d]`.
    pub embed_tokens: Embedding<B>,
    /// The transformer blocks.
    pub layers: Vec<DecoderLayer<B>>,
    /// The final norm.
    pub norm: RmsNorm<B>,
    /// `None` when the head is tied to `embed_tokens`.
    pub lm_head: Option<Linear<B>>,
    #[module(skip)]
    /// The configuration the model was built from.
    pub config: TextConfig,
    #[module(skip)]
    pub(super) rope: Rope,
}

impl<B: Backend> TextDecoder<B> {
    /// Every projection in the layout that decoding reads fastest
    /// ([`super::layers::decoding_layout`]); the values are unchanged.
    pub fn with_decoding_layout(self) -> Self {
        self.relaid(&super::layers::decoding_layout)
    }

    /// Every projection in the layout that scoring many positions at once
    /// reads fastest ([`super::layers::scoring_layout`]); the values are
    /// unchanged.
    pub fn with_scoring_layout(self) -> Self {
        self.relaid(&super::layers::scoring_layout)
    }

    fn relaid(self, relayout: &impl Fn(Linear<B>) -> Linear<B>) -> Self {
        Self {
            layers: self
                .layers
                .into_iter()
                .map(|layer| DecoderLayer {
                    self_attn: layer.self_attn.relaid(relayout),
                    mlp: layer.mlp.relaid(relayout),
                    ..layer
                })
                .collect(),
            lm_head: self.lm_head.map(relayout),
            ..self
        }
    }

    /// Random weights (embeddings with standard deviation `init_std`).
    pub fn init(config: TextConfig, init_std: f64, device: &B::Device) -> Self {
        let c = &config;
        Self {
            embed_tokens: init_embedding(c.vocab_size, c.hidden_size, init_std, device),
            layers: (0..c.num_hidden_layers)
                .map(|_| DecoderLayer::init(c, device))
                .collect(),
            norm: init_rms_norm(c.hidden_size, c.rms_norm_eps, device),
            lm_head: (!c.tie_word_embeddings)
                .then(|| init_linear(c.hidden_size, c.vocab_size, false, device)),
            rope: Rope::new(c.head_dim(), c.rope_theta).with_sections(c.mrope_section),
            config,
        }
    }

    /// Loads `model.*` and `lm_head` (unless tied).
    pub fn load(
        weights: &WeightReader,
        config: TextConfig,
        device: &B::Device,
    ) -> Result<Self, ModelError> {
        let c = &config;
        let layers = (0..c.num_hidden_layers)
            .map(|i| DecoderLayer::load(weights, &format!("model.layers.{i}"), c, device))
            .collect::<Result<Vec<_>, _>>()?;
        let lm_head = if c.tie_word_embeddings {
            weights.check_tied_head(c.vocab_size, c.hidden_size)?;
            None
        } else {
            Some(load_linear(
                weights,
                "lm_head",
                c.hidden_size,
                c.vocab_size,
                false,
                device,
            )?)
        };
        Ok(Self {
            embed_tokens: load_embedding(
                weights,
                "model.embed_tokens.weight",
                c.vocab_size,
                c.hidden_size,
                device,
            )?,
            layers,
            norm: load_rms_norm(weights, "model.norm", c.hidden_size, c.rms_norm_eps, device)?,
            lm_head,
            rope: Rope::new(c.head_dim(), c.rope_theta).with_sections(c.mrope_section),
            config,
        })
    }

    /// Exports under the names [`TextDecoder::load`] reads.
    pub fn export(&self, out: &mut WeightWriter) {
        out.add("model.embed_tokens.weight", self.embed_tokens.weight.val());
        for (i, layer) in self.layers.iter().enumerate() {
            layer.export(out, &format!("model.layers.{i}"));
        }
        export_rms_norm(out, "model.norm", &self.norm);
        if let Some(head) = &self.lm_head {
            export_linear(out, "lm_head", head);
        }
    }

    /// Token ids `[batch, seq]` → embeddings `[batch, seq, d]`.
    pub fn embed(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.embed_tokens.forward(tokens)
    }

    /// Runs the blocks and the final norm: `[batch, seq, d]` → `[batch, seq, d]`.
    /// On the CPU backend without autodiff this is the fused forward of
    /// [`super::cpu_forward`].
    pub fn hidden(
        &self,
        embeds: Tensor<B, 3>,
        layout: &Layout,
        mut cache: Option<&mut KvCache<B>>,
    ) -> Tensor<B, 3> {
        if let Some(hidden) = cpu_forward::hidden(self, &embeds, layout, cache.as_deref_mut()) {
            return hidden;
        }
        self.hidden_by_tensors(embeds, layout, cache)
    }

    /// [`TextDecoder::hidden`] as burn tensor operations on any backend: the
    /// reference the fused CPU forward is tested against.
    pub fn hidden_by_tensors(
        &self,
        embeds: Tensor<B, 3>,
        layout: &Layout,
        mut cache: Option<&mut KvCache<B>>,
    ) -> Tensor<B, 3> {
        let device = embeds.device();
        let c = &self.config;
        let rope = self.rope.tables(
            layout,
            c.num_attention_heads,
            c.num_key_value_heads,
            &device,
        );
        let mask = layout.mask(self.config.num_attention_heads, &device);
        let mut x = embeds;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(
                x,
                &rope,
                mask.as_ref(),
                cache.as_deref_mut().map(|c| (c, i)),
            );
        }
        self.norm.forward(x)
    }

    /// Hidden states `[batch, seq, d]` → logits `[batch, seq, vocab]`.
    pub fn logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.lm_head {
            Some(head) => project(head, hidden),
            None => {
                let [batch, seq, d] = hidden.dims();
                let table = self.embed_tokens.weight.val(); // [vocab, d]
                let vocab = table.dims()[0];
                few_rows::matmul(hidden.reshape([batch * seq, d]), table.transpose())
                    .reshape([batch, seq, vocab])
            }
        }
    }
}
