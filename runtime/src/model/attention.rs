//! Grouped-query self-attention with rotary positions and an optional KV cache.
//!
//! Shapes: input `[batch, seq, d_model]`; queries `[batch, heads, seq, head_dim]`;
//! keys and values `[batch, kv_heads, total, head_dim]` (total = cached + seq),
//! never repeated: queries are regrouped per key/value head; the additive mask is
//! `[batch, heads, seq, total]` (0 where a key is visible, `f32::MIN` where not).

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::error::ModelError;
use super::kv_cache::KvCache;
use super::layers::{export_linear, init_linear, load_linear, project};
use super::rope::{apply_rotary, RopeTables};
use super::weights::{WeightReader, WeightWriter};

/// The widths of one attention block.
#[derive(Clone, Copy, Debug)]
pub struct AttentionDims {
    /// Model width.
    pub d_model: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (divides `heads`).
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Whether q, k and v carry biases (Qwen2: yes).
    pub qkv_bias: bool,
}

/// Multi-head attention with `heads / kv_heads` query heads per key/value head.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Query projection `d_model → heads·head_dim`.
    pub q_proj: Linear<B>,
    /// Key projection `d_model → kv_heads·head_dim`.
    pub k_proj: Linear<B>,
    /// Value projection `d_model → kv_heads·head_dim`.
    pub v_proj: Linear<B>,
    /// Output projection `heads·head_dim → d_model`.
    pub o_proj: Linear<B>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl<B: Backend> Attention<B> {
    /// Random weights.
    pub fn init(dims: AttentionDims, device: &B::Device) -> Self {
        let AttentionDims {
            d_model,
            heads,
            kv_heads,
            head_dim,
            qkv_bias,
        } = dims;
        Self {
            q_proj: init_linear(d_model, heads * head_dim, qkv_bias, device),
            k_proj: init_linear(d_model, kv_heads * head_dim, qkv_bias, device),
            v_proj: init_linear(d_model, kv_heads * head_dim, qkv_bias, device),
            o_proj: init_linear(heads * head_dim, d_model, false, device),
            heads,
            kv_heads,
            head_dim,
        }
    }

    /// Loads `{prefix}.q_proj`, `.k_proj`, `.v_proj`, `.o_proj`.
    pub fn load(
        weights: &WeightReader,
        prefix: &str,
        dims: AttentionDims,
        device: &B::Device,
    ) -> Result<Self, ModelError> {
        let AttentionDims {
            d_model,
            heads,
            kv_heads,
            head_dim,
            qkv_bias,
        } = dims;
        let p = |name: &str| format!("{prefix}.{name}");
        Ok(Self {
            q_proj: load_linear(
                weights,
                &p("q_proj"),
                d_model,
                heads * head_dim,
                qkv_bias,
                device,
            )?,
            k_proj: load_linear(
                weights,
                &p("k_proj"),
                d_model,
                kv_heads * head_dim,
                qkv_bias,
                device,
            )?,
            v_proj: load_linear(
                weights,
                &p("v_proj"),
                d_model,
                kv_heads * head_dim,
                qkv_bias,
                device,
            )?,
            o_proj: load_linear(
                weights,
                &p("o_proj"),
                heads * head_dim,
                d_model,
                false,
                device,
            )?,
            heads,
            kv_heads,
            head_dim,
        })
    }

    /// Every projection through `relayout`
    /// ([`super::layers::decoding_layout`], [`super::layers::scoring_layout`]).
    pub fn relaid(self, relayout: &impl Fn(Linear<B>) -> Linear<B>) -> Self {
        Self {
            q_proj: relayout(self.q_proj),
            k_proj: relayout(self.k_proj),
            v_proj: relayout(self.v_proj),
            o_proj: relayout(self.o_proj),
            ..self
        }
    }

    /// Exports under the names [`Attention::load`] reads.
    pub fn export(&self, out: &mut WeightWriter, prefix: &str) {
        export_linear(out, &format!("{prefix}.q_proj"), &self.q_proj);
        export_linear(out, &format!("{prefix}.k_proj"), &self.k_proj);
        export_linear(out, &format!("{prefix}.v_proj"), &self.v_proj);
        export_linear(out, &format!("{prefix}.o_proj"), &self.o_proj);
    }

    /// `x`: `[batch, seq, d_model]` → `[batch, seq, d_model]`. With a cache,
    /// the new keys and values are appended to layer `layer` and attention
    /// covers everything cached.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &RopeTables<B>,
        mask: Option<&Tensor<B, 4>>,
        cache: Option<(&mut KvCache<B>, usize)>,
    ) -> Tensor<B, 3> {
        let [batch, seq, _] = x.dims();
        // `[batch, seq, heads·head_dim]` → `[batch, seq, heads, head_dim]`; rotated
        // in that layout, then `[batch, heads, seq, head_dim]`.
        let split = |t: Tensor<B, 3>, heads: usize| t.reshape([batch, seq, heads, self.head_dim]);
        let q = apply_rotary(split(project(&self.q_proj, x.clone()), self.heads), &rope.q)
            .swap_dims(1, 2);
        let k = apply_rotary(
            split(project(&self.k_proj, x.clone()), self.kv_heads),
            &rope.k,
        )
        .swap_dims(1, 2);
        let v = split(project(&self.v_proj, x), self.kv_heads).swap_dims(1, 2);
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, k, v),
            None => (k, v),
        };
        // Grouped-query attention without copying keys and values: the
        // `groups` query heads that share a key/value head are stacked along
        // the sequence axis, so one batched product serves them all.
        let groups = self.heads / self.kv_heads;
        let total = k.dims()[2];
        let q = q.reshape([batch, self.kv_heads, groups * seq, self.head_dim]);
        let scale = (self.head_dim as f64).sqrt().recip();
        let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale); // [batch, kv_heads, groups·seq, total]
        let scores = match mask {
            Some(mask) => scores.reshape([batch, self.heads, seq, total]) + mask.clone(),
            None => scores.reshape([batch, self.heads, seq, total]),
        };
        let weights = softmax(scores, 3).reshape([batch, self.kv_heads, groups * seq, total]);
        let context = weights
            .matmul(v)
            .reshape([batch, self.heads, seq, self.head_dim]);
        let context = context
            .swap_dims(1, 2)
            .reshape([batch, seq, self.heads * self.head_dim]);
        project(&self.o_proj, context)
    }
}
