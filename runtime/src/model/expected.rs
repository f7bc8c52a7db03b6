//! The tensors a model folder must hold, by name and shape, as its
//! `config.json` implies them: what `saferc run` compares with the weight
//! files' headers before it makes a run directory, so that a wrong shape in
//! a model only a later stage loads stops the run before the first stage
//! trains, not after it.
//!
//! The list follows the loaders ([`super::decoder::TextDecoder::load`],
//! [`super::vision::VisionTower::load`],
//! [`super::qwen_vision::QwenVisionTower::load`]) tensor for tensor;
//! `runtime/tests/model_errors.rs` pins it to the headers of the fixture
//! models, which transformers wrote, and to the models saferc saves.

use super::config::ModelConfig;
use super::decoder::TextConfig;
use super::qwen_vision::QwenVisionConfig;
use super::vision::VisionConfig;

/// One tensor a model's loader reads: its name and shape.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExpectedTensor {
    /// The safetensors name (`model.layers.0.mlp.up_proj.weight`).
    pub name: String,
    /// The stored shape (a linear weight is `[out, in]`).
    pub shape: Vec<usize>,
}

/// Every tensor loading a model of `config` reads, in the order it reads
/// them (so the first one wrong is the one loading would name).
pub fn expected_tensors(config: &ModelConfig) -> Vec<ExpectedTensor> {
    let mut out = Vec::new();
    text_tensors(&config.text, &mut out);
    if let Some(vision) = &config.vision {
        tiny_vision_tensors(vision, config.text.hidden_size, &mut out);
    }
    if let Some(vision) = &config.qwen_vision {
        qwen_vision_tensors(vision, &mut out);
    }
    out
}

fn push(out: &mut Vec<ExpectedTensor>, name: String, shape: &[usize]) {
    out.push(ExpectedTensor {
        name,
        shape: shape.to_vec(),
    });
}

/// `{prefix}.weight` `[d_out, d_in]`, and `{prefix}.bias` `[d_out]` when it has one.
fn linear(out: &mut Vec<ExpectedTensor>, prefix: &str, d_in: usize, d_out: usize, bias: bool) {
    push(out, format!("{prefix}.weight"), &[d_out, d_in]);
    if bias {
        push(out, format!("{prefix}.bias"), &[d_out]);
    }
}

/// A decoder block at `prefix`: attention (biased queries, keys and
/// values), SwiGLU and the two norms.
fn decoder_layer(out: &mut Vec<ExpectedTensor>, prefix: &str, c: &TextConfig) {
    let (d, hd) = (c.hidden_size, c.head_dim());
    let (q, kv) = (c.num_attention_heads * hd, c.num_key_value_heads * hd);
    linear(out, &format!("{prefix}.self_attn.q_proj"), d, q, true);
    linear(out, &format!("{prefix}.self_attn.k_proj"), d, kv, true);
    linear(out, &format!("{prefix}.self_attn.v_proj"), d, kv, true);
    linear(out, &format!("{prefix}.self_attn.o_proj"), q, d, false);
    let i = c.intermediate_size;
    linear(out, &format!("{prefix}.mlp.gate_proj"), d, i, false);
    linear(out, &format!("{prefix}.mlp.up_proj"), d, i, false);
    linear(out, &format!("{prefix}.mlp.down_proj"), i, d, false);
    push(out, format!("{prefix}.input_layernorm.weight"), &[d]);
    push(
        out,
        format!("{prefix}.post_attention_layernorm.weight"),
        &[d],
    );
}

/// `model.*` and, unless tied to the embeddings, `lm_head`.
fn text_tensors(c: &TextConfig, out: &mut Vec<ExpectedTensor>) {
    for i in 0..c.num_hidden_layers {
        decoder_layer(out, &format!("model.layers.{i}"), c);
    }
    if !c.tie_word_embeddings {
        linear(out, "lm_head", c.hidden_size, c.vocab_size, false);
    }
    push(
        out,
        "model.embed_tokens.weight".into(),
        &[c.vocab_size, c.hidden_size],
    );
    push(out, "model.norm.weight".into(), &[c.hidden_size]);
}

/// `tiny_vlm`'s `vision.*`.
fn tiny_vision_tensors(c: &VisionConfig, text_width: usize, out: &mut Vec<ExpectedTensor>) {
    let h = c.hidden_size;
    linear(out, "vision.patch_embed", c.patch_dim(), h, true);
    push(
        out,
        "vision.position_embedding".into(),
        &[c.num_patches(), h],
    );
    let block = c.block_config();
    for i in 0..c.num_hidden_layers {
        decoder_layer(out, &format!("vision.layers.{i}"), &block);
    }
    push(out, "vision.norm.weight".into(), &[h]);
    linear(out, "vision.projector", h, text_width, true);
}

/// `qwen2_5_vl`'s `visual.*`.
fn qwen_vision_tensors(c: &QwenVisionConfig, out: &mut Vec<ExpectedTensor>) {
    let (d, h) = (c.hidden_size, c.intermediate_size);
    push(
        out,
        "visual.patch_embed.proj.weight".into(),
        &[d, 3, c.temporal_patch_size, c.patch_size, c.patch_size],
    );
    for i in 0..c.depth {
        let p = format!("visual.blocks.{i}");
        push(out, format!("{p}.norm1.weight"), &[d]);
        push(out, format!("{p}.norm2.weight"), &[d]);
        linear(out, &format!("{p}.attn.qkv"), d, 3 * d, true);
        linear(out, &format!("{p}.attn.proj"), d, d, true);
        linear(out, &format!("{p}.mlp.gate_proj"), d, h, true);
        linear(out, &format!("{p}.mlp.up_proj"), d, h, true);
        linear(out, &format!("{p}.mlp.down_proj"), h, d, true);
    }
    let merged = d * c.merge_unit();
    push(out, "visual.merger.ln_q.weight".into(), &[d]);
    linear(out, "visual.merger.mlp.0", merged, merged, true);
    linear(out, "visual.merger.mlp.2", merged, c.out_hidden_size, true);
}
