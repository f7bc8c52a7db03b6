//! A decode step of [`TextDecoder`] on the CPU backend, fused into one pass
//! over `f32` vectors.
//!
//! A decode step feeds one new token per row through every block. The
//! generic tensor code runs it as about 20 burn operations per block, each
//! a separate call into burn-flex with its own allocation, layout handling
//! and dispatch; at a decode step's sizes (a shard of 4 rows, 256 values
//! wide) those calls, not the arithmetic, took half of the step. Here the
//! step reads the weights where they lie and works on plain vectors:
//! RMSNorm, the projections (through [`few_rows::StoredWeight`]), rotary
//! positions, attention over the cached keys and values, SwiGLU and the
//! residuals. The new keys and values are appended through
//! [`KvCache::append`], so the cache stays the one the tensor code reads
//! (later prefills, row selection, clones).
//!
//! It applies to the CPU backend without autodiff, one new position per
//! row, at most [`few_rows::MAX_ROWS`] rows and weights in the decoding
//! layout; everything else runs the tensor code of [`TextDecoder::hidden`],
//! which stays the reference: the tests below compare the two, and every
//! greedy parity test against transformers decodes through this step.
//!
//! Shapes (row-major vectors): hidden states `[rows, d]`; queries and
//! attention context `[rows, heads, head_dim]`; new keys and values
//! `[rows, kv_heads, head_dim]`; the cache's keys and values are read from
//! `[rows, kv_heads, total, head_dim]` views (total = cached + 1).

use burn::nn::{Linear, RmsNorm};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};
use burn_flex::FlexTensor;

use super::decoder::{Layout, TextDecoder};
use super::few_rows::{self, StoredWeight};
use super::kv_cache::KvCache;
use super::on_cpu::{downcast_mut, downcast_ref, flex_f32, from_cpu};
use crate::CpuBackend;

/// The final hidden states `[rows, 1, d]` of one new position per row
/// (`embeds`: `[rows, 1, d]`), its keys and values appended to `cache`; or
/// `None`, with nothing appended, where the fused step does not apply.
pub fn hidden<B: Backend>(
    decoder: &TextDecoder<B>,
    embeds: &Tensor<B, 3>,
    layout: &Layout,
    cache: &mut KvCache<B>,
) -> Option<Tensor<B, 3>> {
    let decoder: &TextDecoder<CpuBackend> = downcast_ref(decoder)?;
    let cache: &mut KvCache<CpuBackend> = downcast_mut(cache)?;
    let [rows, seq, d] = embeds.dims();
    let dims = Dims::of(decoder, rows);
    let applies = seq == 1
        && layout.seq == 1
        && layout.batch == rows
        && (1..=few_rows::MAX_ROWS).contains(&rows)
        && d == dims.d
        && layout.positions.len() == rows
        && layout.key_padding.len() == rows * (cache.len() + 1);
    if !applies {
        return None;
    }
    let weights = DecoderWeights::of(decoder, &dims)?;
    let x = flex_f32(embeds)?.to_contiguous();
    let x = x.as_slice::<f32>()?.to_vec();
    let hidden = step(decoder, &weights, &dims, x, layout, cache);
    let hidden = FlexTensor::from_data(TensorData::new(hidden, [rows, 1, d]));
    from_cpu(Tensor::from_primitive(TensorPrimitive::Float(hidden)))
}

/// The widths of one step.
#[derive(Clone, Copy)]
struct Dims {
    rows: usize,
    d: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    intermediate: usize,
}

impl Dims {
    fn of(decoder: &TextDecoder<CpuBackend>, rows: usize) -> Self {
        let c = &decoder.config;
        Self {
            rows,
            d: c.hidden_size,
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim(),
            intermediate: c.intermediate_size,
        }
    }
}

/// Runs the blocks and the final norm; `x`: embeddings `[rows, d]` →
/// final hidden states `[rows, d]`.
fn step(
    decoder: &TextDecoder<CpuBackend>,
    weights: &DecoderWeights,
    dims: &Dims,
    mut x: Vec<f32>,
    layout: &Layout,
    cache: &mut KvCache<CpuBackend>,
) -> Vec<f32> {
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for &position in &layout.positions {
        decoder.rope.push_half(position, &mut cos, &mut sin);
    }
    for (i, layer) in weights.layers.iter().enumerate() {
        let h = layer.input_norm.apply(&x);
        let mut q = layer.q.apply(&h);
        let mut k = layer.k.apply(&h);
        let v = layer.v.apply(&h);
        rotate(&mut q, dims.head_dim, &cos, &sin);
        rotate(&mut k, dims.head_dim, &cos, &sin);
        let (keys, values) = cache.append(i, new_position(k, dims), new_position(v, dims));
        let context = attend(&q, &f32_view(keys), &f32_view(values), layout, dims);
        add(&mut x, &layer.o.apply(&context));
        let h = layer.post_norm.apply(&x);
        let mut gate = layer.gate.apply(&h);
        let up = layer.up.apply(&h);
        for (g, u) in gate.iter_mut().zip(&up) {
            // SiLU as burn computes it: `g · sigmoid(g)`.
            *g = *g * (1.0 / (1.0 + (-*g).exp())) * u;
        }
        add(&mut x, &layer.down.apply(&gate));
    }
    weights.norm.apply(&x)
}

/// `x += y`.
fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Rotates every head of `x` (`[rows, heads, head_dim]`) by its row's
/// angles (`cos`, `sin`: `[rows, head_dim / 2]`), in the rotate-half form of
/// [`super::rope`]: `x·cos + rotate_half(x)·sin`.
fn rotate(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32]) {
    let half = head_dim / 2;
    let heads_per_row = x.len() / head_dim / (cos.len() / half).max(1);
    for (i, head) in x.chunks_exact_mut(head_dim).enumerate() {
        let row = i / heads_per_row.max(1);
        let (cos, sin) = (&cos[row * half..][..half], &sin[row * half..][..half]);
        let (first, second) = head.split_at_mut(half);
        for j in 0..half {
            let (a, b) = (first[j], second[j]);
            first[j] = a * cos[j] + -b * sin[j];
            second[j] = b * cos[j] + a * sin[j];
        }
    }
}

/// New keys or values `[rows, kv_heads, head_dim]` as the cache's
/// `[rows, kv_heads, 1, head_dim]` tensor.
fn new_position(values: Vec<f32>, dims: &Dims) -> Tensor<CpuBackend, 4> {
    let shape = [dims.rows, dims.kv_heads, 1, dims.head_dim];
    let tensor = FlexTensor::from_data(TensorData::new(values, shape));
    Tensor::from_primitive(TensorPrimitive::Float(tensor))
}

/// A cached keys or values tensor as an `f32` burn-flex view with
/// contiguous head vectors and non-negative strides that lies inside its
/// buffer (the cache's own buffer when it is one already, as it is for every
/// cache this crate fills; a contiguous copy otherwise).
fn f32_view(t: Tensor<CpuBackend, 4>) -> FlexTensor {
    let flex = match t.into_primitive() {
        TensorPrimitive::Float(f) if f.dtype() == DType::F32 => f,
        other => FlexTensor::from_data(
            Tensor::<CpuBackend, 4>::from_primitive(other)
                .dequantize()
                .into_data()
                .convert::<f32>(),
        ),
    };
    let layout = flex.layout();
    let last = layout.shape().iter().zip(layout.strides()).try_fold(
        layout.start_offset(),
        |at, (&dim, &stride)| {
            let stride = usize::try_from(stride).ok()?;
            at.checked_add(dim.checked_sub(1)?.checked_mul(stride)?)
        },
    );
    let fits = last.is_some_and(|last| last < flex.storage::<f32>().len());
    if fits && layout.strides()[3] == 1 {
        flex
    } else {
        flex.to_contiguous()
    }
}

/// Grouped-query attention of one query per row over every cached position:
/// `q`: `[rows, heads, head_dim]`, `keys`/`values`:
/// `[rows, kv_heads, total, head_dim]` views, padded keys (`layout.key_padding`,
/// `[rows, total]`) hidden → context `[rows, heads, head_dim]`. Query head
/// `h` reads key/value head `h / (heads / kv_heads)`, as in the tensor code.
fn attend(
    q: &[f32],
    keys: &FlexTensor,
    values: &FlexTensor,
    layout: &Layout,
    dims: &Dims,
) -> Vec<f32> {
    let Dims {
        rows,
        heads,
        kv_heads,
        head_dim,
        ..
    } = *dims;
    let groups = heads / kv_heads;
    let total = layout.key_padding.len() / rows;
    let scale = (head_dim as f64).sqrt().recip() as f32;
    let (k_data, v_data) = (keys.storage::<f32>(), values.storage::<f32>());
    let stride = |t: &FlexTensor| -> [usize; 3] {
        let s = t.layout().strides();
        [s[0] as usize, s[1] as usize, s[2] as usize]
    };
    let (ks, vs) = (stride(keys), stride(values));
    let (k0, v0) = (keys.layout().start_offset(), values.layout().start_offset());
    let mut context = vec![0f32; rows * heads * head_dim];
    for row in 0..rows {
        let padding = &layout.key_padding[row * total..(row + 1) * total];
        for kv_head in 0..kv_heads {
            let k_base = k0 + row * ks[0] + kv_head * ks[1];
            let v_base = v0 + row * vs[0] + kv_head * vs[1];
            // The `groups` query heads of this key/value head are adjacent.
            let at = (row * heads + kv_head * groups) * head_dim;
            let queries = &q[at..at + groups * head_dim];
            // `f32_view` made the views fit their buffers, so these products
            // find every vector they name (`None` is not reached).
            let mut scores =
                few_rows::dot_products(queries, head_dim, k_data, k_base, ks[2], total)
                    .unwrap_or_default();
            for scores in scores.chunks_exact_mut(total) {
                for (score, &hidden) in scores.iter_mut().zip(padding) {
                    *score = *score * scale + if hidden { f32::MIN } else { 0.0 };
                }
                softmax(scores);
            }
            if let Some(sums) =
                few_rows::weighted_sums(&scores, total, v_data, v_base, vs[2], head_dim)
            {
                context[at..at + groups * head_dim].copy_from_slice(&sums);
            }
        }
    }
    context
}

/// `x` → `exp(x - max) / Σ exp(x - max)`, in place, as burn's `softmax`.
fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

/// Every weight of the decoder, checked for the fused step.
struct DecoderWeights {
    layers: Vec<LayerWeights>,
    norm: Norm,
}

/// One block's weights.
struct LayerWeights {
    input_norm: Norm,
    q: Projection,
    k: Projection,
    v: Projection,
    o: Projection,
    post_norm: Norm,
    gate: Projection,
    up: Projection,
    down: Projection,
}

impl DecoderWeights {
    /// The weights of `decoder`, or `None` if one is not an `f32` tensor in
    /// the decoding layout or has other widths than `dims`.
    fn of(decoder: &TextDecoder<CpuBackend>, dims: &Dims) -> Option<Self> {
        let Dims {
            d,
            heads,
            kv_heads,
            head_dim,
            intermediate,
            ..
        } = *dims;
        let (q_width, kv_width) = (heads * head_dim, kv_heads * head_dim);
        let layers = decoder
            .layers
            .iter()
            .map(|layer| {
                let (attn, mlp) = (&layer.self_attn, &layer.mlp);
                Some(LayerWeights {
                    input_norm: Norm::of(&layer.input_layernorm, d)?,
                    q: Projection::of(&attn.q_proj, d, q_width)?,
                    k: Projection::of(&attn.k_proj, d, kv_width)?,
                    v: Projection::of(&attn.v_proj, d, kv_width)?,
                    o: Projection::of(&attn.o_proj, q_width, d)?,
                    post_norm: Norm::of(&layer.post_attention_layernorm, d)?,
                    gate: Projection::of(&mlp.gate_proj, d, intermediate)?,
                    up: Projection::of(&mlp.up_proj, d, intermediate)?,
                    down: Projection::of(&mlp.down_proj, intermediate, d)?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            layers,
            norm: Norm::of(&decoder.norm, d)?,
        })
    }
}

/// A linear layer: its stored weight and its bias.
struct Projection {
    weight: StoredWeight,
    bias: Option<Vec<f32>>,
}

impl Projection {
    fn of(linear: &Linear<CpuBackend>, d_in: usize, d_out: usize) -> Option<Self> {
        let weight = StoredWeight::of(&linear.weight.val())?;
        if weight.d_in() != d_in || weight.d_out() != d_out {
            return None;
        }
        let bias = match &linear.bias {
            Some(bias) => Some(vector(&bias.val(), d_out)?),
            None => None,
        };
        Some(Self { weight, bias })
    }

    /// `[rows, d_in]` → `[rows, d_out]`.
    fn apply(&self, x: &[f32]) -> Vec<f32> {
        let mut y = self.weight.apply(x);
        if let Some(bias) = &self.bias {
            for row in y.chunks_exact_mut(bias.len()) {
                add(row, bias);
            }
        }
        y
    }
}

/// An RMSNorm: gain and epsilon.
struct Norm {
    gamma: Vec<f32>,
    epsilon: f32,
}

impl Norm {
    fn of(norm: &RmsNorm<CpuBackend>, d: usize) -> Option<Self> {
        Some(Self {
            gamma: vector(&norm.gamma.val(), d)?,
            epsilon: norm.epsilon as f32,
        })
    }

    /// `[rows, d]` → `[rows, d]`: `x / sqrt(mean(x²) + ε) · γ`, as burn's
    /// `RmsNorm` computes it.
    fn apply(&self, x: &[f32]) -> Vec<f32> {
        let d = self.gamma.len();
        let mut y = Vec::with_capacity(x.len());
        for row in x.chunks_exact(d) {
            let mean = row.iter().map(|v| v * v).sum::<f32>() / d as f32;
            let rms = (mean + self.epsilon).sqrt();
            y.extend(row.iter().zip(&self.gamma).map(|(v, g)| v / rms * g));
        }
        y
    }
}

/// The values of a vector of `len` `f32`s.
fn vector(t: &Tensor<CpuBackend, 1>, len: usize) -> Option<Vec<f32>> {
    let flex = flex_f32(t)?.to_contiguous();
    let values = flex.as_slice::<f32>()?;
    (values.len() == len).then(|| values.to_vec())
}

#[cfg(test)]
mod tests {
    use burn::tensor::backend::Backend;
    use burn::tensor::{Int, Tensor, TensorData};

    use super::super::decoder::{Layout, TextConfig, TextDecoder};
    use super::super::kv_cache::KvCache;
    use crate::{CpuAutodiff, CpuBackend as B};

    fn config() -> TextConfig {
        TextConfig {
            vocab_size: 40,
            hidden_size: 32,
            intermediate_size: 48,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: true,
            max_position_embeddings: 64,
        }
    }

    fn embeds<BB: Backend>(
        decoder: &TextDecoder<BB>,
        tokens: &[i64],
        rows: usize,
    ) -> Tensor<BB, 3> {
        let seq = tokens.len() / rows;
        let device = decoder.embed_tokens.weight.device();
        let ids = TensorData::new(tokens.to_vec(), [rows, seq]);
        decoder.embed(Tensor::<BB, 2, Int>::from_data(ids, &device))
    }

    /// Three rows, the middle one left-padded by two positions (masked keys,
    /// positions counted from its first real token), as `generate` lays out
    /// prompts of different lengths.
    fn prompt_layout() -> Layout {
        let mut key_padding = vec![false; 15];
        key_padding[5] = true;
        key_padding[6] = true;
        Layout {
            batch: 3,
            seq: 5,
            positions: vec![0, 1, 2, 3, 4, 0, 0, 0, 1, 2, 0, 1, 2, 3, 4],
            key_padding,
            causal: true,
        }
    }

    /// A cache holding `prompt` (15 tokens) laid out by [`prompt_layout`].
    fn prefilled<BB: Backend>(decoder: &TextDecoder<BB>, prompt: &[i64]) -> KvCache<BB> {
        let mut cache = KvCache::new(2);
        let x = embeds(decoder, prompt, 3);
        let _ = decoder.hidden(x, &prompt_layout(), Some(&mut cache));
        cache
    }

    /// The layout of decode step `step` after [`prompt_layout`].
    fn step_layout(step: usize) -> Layout {
        let total = 5 + step + 1;
        let mut key_padding = vec![false; 3 * total];
        key_padding[total] = true;
        key_padding[total + 1] = true;
        Layout {
            batch: 3,
            seq: 1,
            positions: vec![(5 + step) as i64, (3 + step) as i64, (5 + step) as i64],
            key_padding,
            causal: true,
        }
    }

    #[test]
    fn fused_steps_equal_the_tensor_code_with_left_padding() {
        let device = Default::default();
        B::seed(&device, 3);
        let decoder = TextDecoder::<B>::init(config(), 0.5, &device).with_decoding_layout();
        let prompt: Vec<i64> = (0..15).map(|i| (i * 7 % 40) as i64).collect();
        let mut fused = prefilled(&decoder, &prompt);
        let mut reference = fused.clone();
        for step in 0..8 {
            let tokens = [step as i64, (step * 3 + 1) as i64, 39 - step as i64];
            let x = embeds(&decoder, &tokens, 3);
            let layout = step_layout(step);
            let before = fused.len();
            let fast = super::hidden(&decoder, &x, &layout, &mut fused);
            let fast = fast.unwrap_or_else(|| unreachable!("step {step} takes the fused path"));
            let slow = decoder.hidden_by_tensors(x, &layout, Some(&mut reference));
            assert_eq!(fast.dims(), [3, 1, 32]);
            assert_eq!((fused.len(), reference.len()), (before + 1, before + 1));
            let diff: f32 = (fast - slow).abs().max().into_scalar();
            assert!(diff < 1e-5, "step {step}: {diff}");
        }
    }

    #[test]
    fn other_layouts_prompts_and_autodiff_take_the_tensor_code() {
        let device = Default::default();
        B::seed(&device, 4);
        // Weights as training leaves them (contiguous `[in, out]`).
        let trained = TextDecoder::<B>::init(config(), 0.5, &device);
        let prompt: Vec<i64> = (0..15).map(|i| i as i64).collect();
        let mut cache = prefilled(&trained, &prompt);
        let x = embeds(&trained, &[1, 2, 3], 3);
        assert!(super::hidden(&trained, &x, &step_layout(0), &mut cache).is_none());
        assert_eq!(cache.len(), 5, "nothing appended");

        // A prompt (more than one position) and a padding mask of the wrong width.
        let relaid = trained.with_decoding_layout();
        let mut empty = KvCache::new(2);
        let x = embeds(&relaid, &prompt, 3);
        assert!(super::hidden(&relaid, &x, &prompt_layout(), &mut empty).is_none());
        let x = embeds(&relaid, &[1, 2, 3], 3);
        assert!(super::hidden(&relaid, &x, &step_layout(1), &mut cache).is_none());
        assert_eq!(cache.len(), 5);

        // Autodiff: gradients need the tensor code.
        let decoder = TextDecoder::<CpuAutodiff>::init(config(), 0.5, &device);
        let mut cache = prefilled(&decoder, &prompt);
        let x = embeds(&decoder, &[1, 2, 3], 3);
        assert!(super::hidden(&decoder, &x, &step_layout(0), &mut cache).is_none());
    }
}
