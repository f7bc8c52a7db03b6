//! The decoder's weights as plain vectors for the fused training passes,
//! and their gradients handed back to burn's optimiser as
//! [`GradientsParams`] under each parameter's id.
//!
//! Every weight is copied out in its parameter's logical shape (a linear
//! layer's `[d_in, d_out]`, whatever the view it is stored as), so a
//! gradient has the same shape and order as its parameter.

use burn::module::{Param, ParamId};
use burn::nn::{Linear, RmsNorm};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};

use super::super::decoder::TextDecoder;
use super::Dims;
use crate::{CpuAutodiff, CpuBackend};

/// A linear layer's weight `[d_in, d_out]` and bias `[d_out]`.
pub struct LinearWeights {
    /// `[d_in, d_out]`, row-major.
    pub weight: Vec<f32>,
    /// `[d_out]`, when the layer has a bias.
    pub bias: Option<Vec<f32>>,
}

/// One block's weights.
pub struct LayerWeights {
    /// Gain of the norm before attention `[d]`.
    pub input_norm: Vec<f32>,
    /// Query projection `[d, heads·head_dim]`.
    pub q: LinearWeights,
    /// Key projection `[d, kv_heads·head_dim]`.
    pub k: LinearWeights,
    /// Value projection `[d, kv_heads·head_dim]`.
    pub v: LinearWeights,
    /// Output projection `[heads·head_dim, d]`.
    pub o: LinearWeights,
    /// Gain of the norm before the MLP `[d]`.
    pub post_norm: Vec<f32>,
    /// `[d, intermediate]`.
    pub gate: LinearWeights,
    /// `[d, intermediate]`.
    pub up: LinearWeights,
    /// `[intermediate, d]`.
    pub down: LinearWeights,
}

/// Every weight of a decoder.
pub struct Weights {
    /// Token embeddings `[vocab, d]` (also the LM head when tied).
    pub embed: Vec<f32>,
    /// The blocks.
    pub layers: Vec<LayerWeights>,
    /// Gain of the final norm `[d]`.
    pub norm: Vec<f32>,
    /// An untied LM head `[d, vocab]`.
    pub head: Option<Vec<f32>>,
    /// RMSNorm's ε (one for every norm of the model).
    pub epsilon: f32,
}

impl Weights {
    /// The weights of `decoder`, or `None` if one is not `f32` or has other
    /// sizes than `dims`.
    pub fn of(decoder: &TextDecoder<CpuAutodiff>, dims: &Dims) -> Option<Self> {
        let Dims {
            d,
            heads,
            kv_heads,
            head_dim,
            intermediate,
            vocab,
        } = *dims;
        let (q_width, kv_width) = (heads * head_dim, kv_heads * head_dim);
        let layers = decoder
            .layers
            .iter()
            .map(|layer| {
                let (attn, mlp) = (&layer.self_attn, &layer.mlp);
                Some(LayerWeights {
                    input_norm: norm(&layer.input_layernorm, d)?,
                    q: linear(&attn.q_proj, d, q_width)?,
                    k: linear(&attn.k_proj, d, kv_width)?,
                    v: linear(&attn.v_proj, d, kv_width)?,
                    o: linear(&attn.o_proj, q_width, d)?,
                    post_norm: norm(&layer.post_attention_layernorm, d)?,
                    gate: linear(&mlp.gate_proj, d, intermediate)?,
                    up: linear(&mlp.up_proj, d, intermediate)?,
                    down: linear(&mlp.down_proj, intermediate, d)?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let head = match &decoder.lm_head {
            Some(head) => Some(linear(head, d, vocab)?.weight),
            None => None,
        };
        let epsilons: Vec<f64> = decoder
            .layers
            .iter()
            .flat_map(|l| {
                [
                    l.input_layernorm.epsilon,
                    l.post_attention_layernorm.epsilon,
                ]
            })
            .chain([decoder.norm.epsilon])
            .collect();
        if epsilons.iter().any(|&e| e != decoder.norm.epsilon) {
            return None;
        }
        Some(Self {
            embed: values(&decoder.embed_tokens.weight, vocab * d)?,
            layers,
            norm: norm(&decoder.norm, d)?,
            head,
            epsilon: decoder.norm.epsilon as f32,
        })
    }
}

/// The values of `param` in its logical order, if `f32` and `len` of them.
fn values<const D: usize>(param: &Param<Tensor<CpuAutodiff, D>>, len: usize) -> Option<Vec<f32>> {
    let values = param.val().inner().into_data().into_vec::<f32>().ok()?;
    (values.len() == len).then_some(values)
}

fn linear(layer: &Linear<CpuAutodiff>, d_in: usize, d_out: usize) -> Option<LinearWeights> {
    if layer.weight.val().dims() != [d_in, d_out] {
        return None;
    }
    let bias = match &layer.bias {
        Some(bias) => Some(values(bias, d_out)?),
        None => None,
    };
    Some(LinearWeights {
        weight: values(&layer.weight, d_in * d_out)?,
        bias,
    })
}

fn norm(norm: &RmsNorm<CpuAutodiff>, d: usize) -> Option<Vec<f32>> {
    values(&norm.gamma, d)
}

/// A linear layer's gradients, shaped as [`LinearWeights`].
pub struct LinearGradients {
    /// `[d_in, d_out]`.
    pub weight: Vec<f32>,
    /// `[d_out]`, when the layer has a bias.
    pub bias: Option<Vec<f32>>,
}

/// One block's gradients, shaped as [`LayerWeights`].
pub struct LayerGradients {
    /// `[d]`.
    pub input_norm: Vec<f32>,
    /// Query, key, value and output projections.
    pub q: LinearGradients,
    /// See `q`.
    pub k: LinearGradients,
    /// See `q`.
    pub v: LinearGradients,
    /// See `q`.
    pub o: LinearGradients,
    /// `[d]`.
    pub post_norm: Vec<f32>,
    /// The MLP's projections.
    pub gate: LinearGradients,
    /// See `gate`.
    pub up: LinearGradients,
    /// See `gate`.
    pub down: LinearGradients,
}

/// The gradient of every weight, shaped as [`Weights`] (a tied head's
/// gradient is part of `embed`'s).
pub struct Gradients {
    /// `[vocab, d]`.
    pub embed: Vec<f32>,
    /// The blocks'.
    pub layers: Vec<LayerGradients>,
    /// `[d]`.
    pub norm: Vec<f32>,
    /// `[d, vocab]`, for an untied head.
    pub head: Option<Vec<f32>>,
    /// The gradient of the given input embeddings `[rows, d]`, in the order
    /// they were given.
    pub given: Vec<f32>,
}

impl Gradients {
    /// Adds `other`'s gradients (of the same weights) to these, and appends
    /// its given inputs' gradients to these'.
    ///
    /// # Panics
    /// If the two are not shaped alike.
    pub fn add(&mut self, other: Gradients) {
        add(&mut self.embed, &other.embed);
        add(&mut self.norm, &other.norm);
        add_optional(
            &mut self.head,
            &other.head,
            "gradients of a tied and an untied head",
        );
        assert_eq!(
            self.layers.len(),
            other.layers.len(),
            "gradients of as many blocks"
        );
        for (layer, other) in self.layers.iter_mut().zip(&other.layers) {
            add(&mut layer.input_norm, &other.input_norm);
            add(&mut layer.post_norm, &other.post_norm);
            let linears = [
                (&mut layer.q, &other.q),
                (&mut layer.k, &other.k),
                (&mut layer.v, &other.v),
                (&mut layer.o, &other.o),
                (&mut layer.gate, &other.gate),
                (&mut layer.up, &other.up),
                (&mut layer.down, &other.down),
            ];
            for (linear, other) in linears {
                add(&mut linear.weight, &other.weight);
                add_optional(
                    &mut linear.bias,
                    &other.bias,
                    "gradients of a linear layer with and without a bias",
                );
            }
        }
        self.given.extend_from_slice(&other.given);
    }

    /// Registers the weights' gradients in `out`, as burn's optimiser takes
    /// them: each under the id of its parameter in `decoder` (the decoder
    /// [`Weights::of`] read).
    pub fn register_in(self, decoder: &TextDecoder<CpuAutodiff>, out: &mut GradientsParams) {
        let c = &decoder.config;
        let (d, vocab) = (c.hidden_size, c.vocab_size);
        register(out, decoder.embed_tokens.weight.id, self.embed, [vocab, d]);
        register(out, decoder.norm.gamma.id, self.norm, [d]);
        if let (Some(head), Some(g)) = (&decoder.lm_head, self.head) {
            register_linear(
                out,
                head,
                LinearGradients {
                    weight: g,
                    bias: None,
                },
            );
        }
        for (layer, g) in decoder.layers.iter().zip(self.layers) {
            register(out, layer.input_layernorm.gamma.id, g.input_norm, [d]);
            register(
                out,
                layer.post_attention_layernorm.gamma.id,
                g.post_norm,
                [d],
            );
            let (attn, mlp) = (&layer.self_attn, &layer.mlp);
            register_linear(out, &attn.q_proj, g.q);
            register_linear(out, &attn.k_proj, g.k);
            register_linear(out, &attn.v_proj, g.v);
            register_linear(out, &attn.o_proj, g.o);
            register_linear(out, &mlp.gate_proj, g.gate);
            register_linear(out, &mlp.up_proj, g.up);
            register_linear(out, &mlp.down_proj, g.down);
        }
    }
}

fn register<const D: usize>(
    out: &mut GradientsParams,
    id: ParamId,
    values: Vec<f32>,
    shape: [usize; D],
) {
    let tensor =
        Tensor::<CpuBackend, D>::from_data(TensorData::new(values, shape), &Default::default());
    out.register(id, tensor);
}

fn register_linear(out: &mut GradientsParams, layer: &Linear<CpuAutodiff>, g: LinearGradients) {
    let [d_in, d_out] = layer.weight.val().dims();
    register(out, layer.weight.id, g.weight, [d_in, d_out]);
    if let (Some(bias), Some(g)) = (&layer.bias, g.bias) {
        register(out, bias.id, g, [d_out]);
    }
}

/// `x += y`, on the worker threads ([`super::ops::add_rows`], with rows of
/// 1,024 values standing for any shape).
///
/// # Panics
/// If the lengths differ.
fn add(x: &mut [f32], y: &[f32]) {
    assert_eq!(x.len(), y.len(), "gradients of one shape");
    super::ops::add_rows(x, y, 1024);
}

/// `x += y` where both are present.
///
/// # Panics
/// If only one is, with `mismatch`.
fn add_optional(x: &mut Option<Vec<f32>>, y: &Option<Vec<f32>>, mismatch: &str) {
    assert_eq!(x.is_some(), y.is_some(), "{mismatch}");
    if let (Some(x), Some(y)) = (x, y) {
        add(x, y);
    }
}
