//! The text decoder's forward on the CPU backend without autodiff, fused
//! into one pass over `f32` vectors: prompt prefills, decode steps and the
//! reference model's scoring passes.
//!
//! The tensor code of [`TextDecoder::hidden`] runs about 20 burn operations
//! per block, each a separate call into burn-flex with its own allocation,
//! layout handling and copies of strided views; at a decode step's sizes (a
//! shard of 4 rows, 256 values wide) those calls, not the arithmetic, took
//! half of the step. Here the forward reads the weights where they lie and
//! works on plain vectors: RMSNorm, the projections (through
//! [`few_rows::StoredWeight`]), rotary positions, attention over the cached
//! and new keys and values (gemm on the cache's buffer,
//! [`few_rows::dot_products`], [`few_rows::weighted_sums_into`]), SwiGLU
//! and the residuals. New keys and values are appended through
//! [`KvCache::append`], so the cache stays the one the tensor code reads
//! (row selection, clones, later calls).
//!
//! Inputs of many tokens (prompts, scoring passes) run on the worker
//! threads: the position-wise work in parts of consecutive tokens, one per
//! thread, and attention as one task per row and key/value head, every gemm
//! call on its task's thread. gemm's own threads, woken for each product,
//! left prompts of 67 to 1,440 tokens 30-55% slower. A decode step's shard
//! of a few rows stays on its thread (the shards are already parallel).
//!
//! It applies to the CPU backend without autodiff with weights in the
//! decoding layout or the scoring layout (contiguous `[in, out]`, as a
//! training update leaves them, which a reference model is given: gemm
//! then multiplies many positions by a weight without repacking it);
//! everything else (training's autodiff, wgpu, cuda) runs the tensor code, which
//! stays the reference: the tests below compare the two, and every greedy
//! parity test against transformers runs through this forward.
//!
//! Shapes (row-major vectors): hidden states `[rows, seq, d]`; queries and
//! attention context `[rows, seq, heads, head_dim]`; new keys and values
//! `[rows, seq, kv_heads, head_dim]`, viewed as the cache's
//! `[rows, kv_heads, seq, head_dim]`; the cache's keys and values are read
//! from `[rows, kv_heads, total, head_dim]` views (total = cached + seq).

use std::ops::Range;

use burn::nn::{Linear, RmsNorm};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::cpu_train::ops::{add, rotate, softmax};
use super::decoder::{Layout, TextDecoder};
use super::few_rows::{self, StoredWeight, Vectors};
use super::kv_cache::KvCache;
use super::on_cpu::{downcast_mut, downcast_ref, flex_f32, from_cpu};
use crate::CpuBackend;

/// The final hidden states `[rows, seq, d]` of `embeds` (`[rows, seq, d]`),
/// with their keys and values appended to `cache` when there is one; or
/// `None`, with nothing appended, where the fused forward does not apply.
pub fn hidden<B: Backend>(
    decoder: &TextDecoder<B>,
    embeds: &Tensor<B, 3>,
    layout: &Layout,
    cache: Option<&mut KvCache<B>>,
) -> Option<Tensor<B, 3>> {
    let decoder: &TextDecoder<CpuBackend> = downcast_ref(decoder)?;
    let cache: Option<&mut KvCache<CpuBackend>> = match cache {
        Some(cache) => Some(downcast_mut(cache)?),
        None => None,
    };
    let [rows, seq, d] = embeds.dims();
    let dims = Dims::of(decoder, rows, seq);
    let cached = cache.as_ref().map_or(0, |c| c.len());
    let applies = rows > 0
        && seq > 0
        && layout.seq == seq
        && layout.batch == rows
        && d == dims.d
        && layout.positions.len() == rows * seq
        && layout.key_padding.len() == rows * (cached + seq);
    if !applies {
        return None;
    }
    let weights = DecoderWeights::of(decoder, &dims)?;
    let x = flex_f32(embeds)?.to_contiguous();
    let x = x.as_slice::<f32>()?.to_vec();
    let hidden = forward(decoder, &weights, &dims, x, layout, cache);
    let hidden = FlexTensor::from_data(TensorData::new(hidden, [rows, seq, d]));
    from_cpu(Tensor::from_primitive(TensorPrimitive::Float(hidden)))
}

/// The sizes of one forward call.
#[derive(Clone, Copy)]
struct Dims {
    rows: usize,
    seq: usize,
    d: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    intermediate: usize,
}

impl Dims {
    fn of(decoder: &TextDecoder<CpuBackend>, rows: usize, seq: usize) -> Self {
        let c = &decoder.config;
        Self {
            rows,
            seq,
            d: c.hidden_size,
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim(),
            intermediate: c.intermediate_size,
        }
    }
}

/// Prompts of fewer tokens than this per worker thread run on the calling
/// thread alone: below it, waking a thread costs more than it saves (a
/// decode step's shard of a few rows never splits).
const MIN_PART_TOKENS: usize = 16;

/// Runs the blocks and the final norm; `x`: embeddings `[rows, seq, d]` →
/// final hidden states `[rows, seq, d]`.
///
/// The position-wise work (norms, projections, rotation, SwiGLU) is split
/// into [`Parts`] of consecutive tokens, and attention into its row and
/// key/value-head pairs, each on a worker thread when the prompt is long
/// enough ([`MIN_PART_TOKENS`]): three hand-offs per block instead of gemm's
/// own threads waking for each of its seven products.
fn forward(
    decoder: &TextDecoder<CpuBackend>,
    weights: &DecoderWeights,
    dims: &Dims,
    mut x: Vec<f32>,
    layout: &Layout,
    mut cache: Option<&mut KvCache<CpuBackend>>,
) -> Vec<f32> {
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    decoder.rope.push_layout(layout, &mut cos, &mut sin);
    let half = dims.head_dim / 2;
    let parts = Parts::of(dims.rows * dims.seq);
    for (i, layer) in weights.layers.iter().enumerate() {
        let projected = parts.map(|tokens| {
            let h = layer
                .input_norm
                .apply(&x[tokens.start * dims.d..tokens.end * dims.d]);
            let (mut q, mut k, v) = (layer.q.apply(&h), layer.k.apply(&h), layer.v.apply(&h));
            let angles = tokens.start * half..tokens.end * half;
            let (cos, sin) = (&cos[angles.clone()], &sin[angles]);
            rotate(&mut q, dims.head_dim, cos, sin, false);
            rotate(&mut k, dims.head_dim, cos, sin, false);
            [q, k, v]
        });
        let [q, k, v] = concatenated(projected);
        let (k, v) = (heads_first(k, dims), heads_first(v, dims));
        let (keys, values) = match cache.as_deref_mut() {
            Some(cache) => {
                let wrap = |t: FlexTensor| Tensor::from_primitive(TensorPrimitive::Float(t));
                let (keys, values) = cache.append(i, wrap(k), wrap(v));
                (f32_view(keys), f32_view(values))
            }
            None => (k, v),
        };
        let context = attend(&q, &keys, &values, layout, dims, parts.parallel());
        let width = dims.heads * dims.head_dim;
        let updated = parts.map(|tokens| {
            let mut x = x[tokens.start * dims.d..tokens.end * dims.d].to_vec();
            add(
                &mut x,
                &layer
                    .o
                    .apply(&context[tokens.start * width..tokens.end * width]),
            );
            let h = layer.post_norm.apply(&x);
            let mut gate = layer.gate.apply(&h);
            let up = layer.up.apply(&h);
            for (g, u) in gate.iter_mut().zip(&up) {
                // SiLU as burn computes it: `g · sigmoid(g)`.
                *g = *g * (1.0 / (1.0 + (-*g).exp())) * u;
            }
            add(&mut x, &layer.down.apply(&gate));
            [x]
        });
        [x] = concatenated(updated);
    }
    weights.norm.apply(&x)
}

/// The tokens of a forward call (`rows · seq` of them, row-major) as
/// consecutive ranges, one per worker thread when there are at least
/// [`MIN_PART_TOKENS`] tokens per thread; otherwise one range.
struct Parts {
    tokens: usize,
    /// Tokens per part (the last may have fewer).
    size: usize,
}

impl Parts {
    fn of(tokens: usize) -> Self {
        let count = (tokens / MIN_PART_TOKENS).clamp(1, rayon::current_num_threads().max(1));
        Self {
            tokens,
            size: tokens.div_ceil(count).max(1),
        }
    }

    /// How many parts.
    fn count(&self) -> usize {
        self.tokens.div_ceil(self.size).max(1)
    }

    /// Whether the parts run on worker threads.
    fn parallel(&self) -> bool {
        self.count() > 1
    }

    /// `f` of every part's token range, in order; on worker threads when
    /// there are several parts.
    fn map<T: Send>(&self, f: impl Fn(Range<usize>) -> T + Sync) -> Vec<T> {
        let range = |p: usize| p * self.size..((p + 1) * self.size).min(self.tokens);
        tasks(self.count(), self.parallel(), |p| f(range(p)))
    }
}

/// `f(0), …, f(count - 1)` in order; on the worker threads when `parallel`.
fn tasks<T: Send>(count: usize, parallel: bool, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    if parallel {
        (0..count).into_par_iter().map(&f).collect()
    } else {
        (0..count).map(f).collect()
    }
}

/// The parts' vectors joined in order: `N` vectors from each part → `N`
/// vectors.
fn concatenated<const N: usize>(parts: Vec<[Vec<f32>; N]>) -> [Vec<f32>; N] {
    let mut parts = parts.into_iter();
    let mut joined = parts
        .next()
        .unwrap_or_else(|| std::array::from_fn(|_| Vec::new()));
    for part in parts {
        for (all, piece) in joined.iter_mut().zip(part) {
            all.extend_from_slice(&piece);
        }
    }
    joined
}

/// New keys or values `[rows, seq, kv_heads, head_dim]` as a
/// `[rows, kv_heads, seq, head_dim]` view (no copy), the cache's layout.
fn heads_first(values: Vec<f32>, dims: &Dims) -> FlexTensor {
    let shape = [dims.rows, dims.seq, dims.kv_heads, dims.head_dim];
    FlexTensor::from_data(TensorData::new(values, shape)).transpose(1, 2)
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

/// Grouped-query attention: `q`: `[rows, seq, heads, head_dim]`,
/// `keys`/`values`: `[rows, kv_heads, total, head_dim]` views whose last
/// `seq` positions are the new ones → context `[rows, seq, heads,
/// head_dim]`. A key is hidden from a query where it is padding
/// (`layout.key_padding`, `[rows, total]`) or, in a causal layout, later
/// than the query; hidden scores get `f32::MIN` added, as the tensor code's
/// mask does. Query head `h` reads key/value head `h / (heads / kv_heads)`.
/// Each row and key/value head is one task, on the worker threads when
/// `parallel`.
fn attend(
    q: &[f32],
    keys: &FlexTensor,
    values: &FlexTensor,
    layout: &Layout,
    dims: &Dims,
    parallel: bool,
) -> Vec<f32> {
    let Dims {
        rows,
        seq,
        heads,
        kv_heads,
        head_dim,
        ..
    } = *dims;
    let groups = heads / kv_heads;
    let total = layout.key_padding.len() / rows;
    for t in [keys, values] {
        // As the tensor code's products would, refuse a cache of another
        // model or batch rather than read it.
        let shape = t.layout().shape();
        let expected = [rows, kv_heads, total, head_dim];
        assert!(
            shape.iter().eq(expected.iter()),
            "cached keys and values {shape:?}, expected {expected:?}"
        );
    }
    let past = total - seq;
    let causal = layout.causal && seq > 1;
    let scale = (head_dim as f64).sqrt().recip() as f32;
    // The queries of one key/value head as blocks of vectors one stride
    // apart: for one new position, its `groups` adjacent heads; for many,
    // each head's queries at every position. (offset of the first query from
    // the head's first, and of its context in the head's `[seq, groups,
    // head_dim]` context; count; stride between queries; stride between
    // their contexts.)
    let width = groups * head_dim;
    let blocks: Vec<(usize, usize, usize, usize)> = if seq == 1 {
        vec![(0, groups, head_dim, head_dim)]
    } else {
        (0..groups)
            .map(|g| (g * head_dim, seq, heads * head_dim, width))
            .collect()
    };
    // The context `[seq, groups, head_dim]` of the query heads that read
    // key/value head `task % kv_heads` of row `task / kv_heads`.
    let head_context = |task: usize| -> Vec<f32> {
        let (row, kv_head) = (task / kv_heads, task % kv_heads);
        let mut out = vec![0f32; seq * width];
        let padding = &layout.key_padding[row * total..(row + 1) * total];
        // The views fit their buffers (`f32_view`) and have the shape checked
        // above, so both exist.
        let head_keys = head_vectors(keys, row, kv_head, total, head_dim);
        let head_values = head_vectors(values, row, kv_head, total, head_dim);
        let (Some(head_keys), Some(head_values)) = (head_keys, head_values) else {
            return out;
        };
        let first = (row * seq * heads + kv_head * groups) * head_dim;
        for &(offset, count, stride, out_stride) in &blocks {
            let Some(queries) = Vectors::new(q, first + offset, stride, count, head_dim) else {
                continue;
            };
            let mut scores = few_rows::dot_products(&queries, &head_keys);
            for (i, scores) in scores.chunks_exact_mut(total).enumerate() {
                let query = if seq == 1 { 0 } else { i };
                for (t, (score, &pad)) in scores.iter_mut().zip(padding).enumerate() {
                    let hidden = pad || (causal && t > past + query);
                    *score = *score * scale + if hidden { f32::MIN } else { 0.0 };
                }
                softmax(scores);
            }
            few_rows::weighted_sums_into(&mut out, offset, out_stride, &scores, &head_values);
        }
        out
    };
    let pieces = tasks(rows * kv_heads, parallel, head_context);
    let mut context = vec![0f32; rows * seq * heads * head_dim];
    for (task, piece) in pieces.iter().enumerate() {
        let (row, kv_head) = (task / kv_heads, task % kv_heads);
        for (position, values) in piece.chunks_exact(width).enumerate() {
            let at = ((row * seq + position) * heads + kv_head * groups) * head_dim;
            context[at..at + width].copy_from_slice(values);
        }
    }
    context
}

/// The `total` cached vectors of key/value head `kv_head` of row `row` in
/// `t` (`[rows, kv_heads, total, head_dim]`, contiguous head vectors).
fn head_vectors(
    t: &FlexTensor,
    row: usize,
    kv_head: usize,
    total: usize,
    head_dim: usize,
) -> Option<Vectors<'_>> {
    let layout = t.layout();
    let stride = |i: usize| usize::try_from(layout.strides()[i]).ok();
    let start = layout.start_offset() + row * stride(0)? + kv_head * stride(1)?;
    Vectors::new(t.storage(), start, stride(2)?, total, head_dim)
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
        let weight = StoredWeight::of_either(&linear.weight.val())?;
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
            mrope_section: None,
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

    /// A random decoder from `seed`, its weights as training leaves them
    /// (contiguous `[in, out]`).
    fn seeded(seed: u64) -> TextDecoder<B> {
        let device = Default::default();
        B::seed(&device, seed);
        TextDecoder::init(config(), 0.5, &device)
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
            mrope: None,
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
            mrope: None,
        }
    }

    /// Runs `x` through the fused forward and through the tensor code, each
    /// with its own cache (`caches`: fused, tensor), and checks that they
    /// take the fused path, agree within 1e-5 and append alike.
    fn assert_agree(
        decoder: &TextDecoder<B>,
        x: Tensor<B, 3>,
        layout: &Layout,
        caches: Option<(&mut KvCache<B>, &mut KvCache<B>)>,
        what: &str,
    ) {
        let (fused, reference) = match caches {
            Some((fused, reference)) => (Some(fused), Some(reference)),
            None => (None, None),
        };
        let fast = super::hidden(decoder, &x, layout, fused.map(|c| &mut *c));
        let fast = fast.unwrap_or_else(|| unreachable!("{what} takes the fused path"));
        let slow = decoder.hidden_by_tensors(x, layout, reference.map(|c| &mut *c));
        assert_eq!(fast.dims(), slow.dims(), "{what}");
        let diff: f32 = (fast - slow).abs().max().into_scalar();
        assert!(diff < 1e-5, "{what}: {diff}");
    }

    #[test]
    fn prompts_equal_the_tensor_code_with_and_without_a_cache() {
        let decoder = seeded(5).with_decoding_layout();
        let prompt: Vec<i64> = (0..15).map(|i| (i * 11 % 40) as i64).collect();
        let x = embeds(&decoder, &prompt, 3);
        for causal in [true, false] {
            let layout = Layout {
                causal,
                ..prompt_layout()
            };
            assert_agree(
                &decoder,
                x.clone(),
                &layout,
                None,
                &format!("causal {causal}"),
            );
        }
        // With caches: the prompt, then four more positions per row at once
        // (a scoring pass after a cached prompt).
        let (mut fused, mut reference) = (KvCache::new(2), KvCache::new(2));
        let caches = Some((&mut fused, &mut reference));
        assert_agree(&decoder, x, &prompt_layout(), caches, "a prompt");
        let more: Vec<i64> = (0..12).map(|i| (i * 5 % 40) as i64).collect();
        let mut key_padding = vec![false; 3 * 9];
        key_padding[9] = true;
        key_padding[10] = true;
        let layout = Layout {
            batch: 3,
            seq: 4,
            positions: vec![5, 6, 7, 8, 3, 4, 5, 6, 5, 6, 7, 8],
            key_padding,
            causal: true,
            mrope: None,
        };
        let x = embeds(&decoder, &more, 3);
        let caches = Some((&mut fused, &mut reference));
        assert_agree(
            &decoder,
            x,
            &layout,
            caches,
            "positions after a cached prompt",
        );
        assert_eq!((fused.len(), reference.len()), (9, 9));
    }

    /// The scoring layout (a reference model's, and a policy's as an
    /// update leaves it) takes the fused path too, with and without a
    /// cached prompt.
    #[test]
    fn a_scoring_pass_in_the_scoring_layout_equals_the_tensor_code() {
        let scoring = seeded(5).with_decoding_layout().with_scoring_layout();
        let prompt: Vec<i64> = (0..15).map(|i| (i * 11 % 40) as i64).collect();
        let x = embeds(&scoring, &prompt, 3);
        assert_agree(&scoring, x.clone(), &prompt_layout(), None, "a prompt");
        let (mut fused, mut reference) = (KvCache::new(2), KvCache::new(2));
        let caches = Some((&mut fused, &mut reference));
        assert_agree(&scoring, x, &prompt_layout(), caches, "a cached prompt");
        let caches = Some((&mut fused, &mut reference));
        let x = embeds(&scoring, &[4, 5, 6], 3);
        assert_agree(&scoring, x, &step_layout(0), caches, "a step after it");
    }

    #[test]
    fn fused_steps_equal_the_tensor_code_with_left_padding() {
        let decoder = seeded(3).with_decoding_layout();
        let prompt: Vec<i64> = (0..15).map(|i| (i * 7 % 40) as i64).collect();
        let mut fused = prefilled(&decoder, &prompt);
        let mut reference = fused.clone();
        for step in 0..8 {
            let tokens = [step as i64, (step * 3 + 1) as i64, 39 - step as i64];
            let x = embeds(&decoder, &tokens, 3);
            let caches = Some((&mut fused, &mut reference));
            assert_agree(
                &decoder,
                x,
                &step_layout(step),
                caches,
                &format!("step {step}"),
            );
            assert_eq!((fused.len(), reference.len()), (6 + step, 6 + step));
        }
    }

    /// `f` on a pool of `threads` worker threads.
    fn on_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build();
        pool.unwrap_or_else(|e| unreachable!("a pool of {threads} threads: {e}"))
            .install(f)
    }

    #[test]
    fn parts_cover_the_tokens_in_order_once_long_enough() {
        let ranges = |tokens: usize| {
            let parts = super::Parts::of(tokens);
            (parts.parallel(), parts.map(|r| r))
        };
        let (parallel, one) = on_threads(2, || ranges(31));
        assert!(!parallel);
        assert_eq!(one, vec![0..31]);
        let (parallel, split) = on_threads(4, || ranges(69));
        assert!(parallel);
        assert_eq!(split, vec![0..18, 18..36, 36..54, 54..69]);
        let joined = super::concatenated(vec![[vec![1.0], vec![]], [vec![2.0, 3.0], vec![4.0]]]);
        assert_eq!(joined, [vec![1.0, 2.0, 3.0], vec![4.0]]);
    }

    #[test]
    fn a_long_prompt_split_across_threads_equals_the_tensor_code() {
        // Three rows of 23 tokens, the second left-padded by three: on four
        // threads the parts (18 tokens each) cross the rows' boundaries.
        let decoder = seeded(6).with_decoding_layout();
        let (rows, seq) = (3, 23);
        let prompt: Vec<i64> = (0..rows * seq).map(|i| (i * 13 % 40) as i64).collect();
        let mut key_padding = vec![false; rows * seq];
        key_padding[seq..seq + 3].fill(true);
        let positions = (0..rows)
            .flat_map(|r| {
                (0..seq).map(move |t| {
                    if r == 1 {
                        (t.max(3) - 3) as i64
                    } else {
                        t as i64
                    }
                })
            })
            .collect();
        let layout = Layout {
            batch: rows,
            seq,
            positions,
            key_padding,
            causal: true,
            mrope: None,
        };
        let x = embeds(&decoder, &prompt, rows);
        let (mut fused, mut reference) = (KvCache::new(2), KvCache::new(2));
        on_threads(4, || {
            let caches = Some((&mut fused, &mut reference));
            assert_agree(&decoder, x, &layout, caches, "a prompt in four parts");
        });
        // The cache it filled serves a decode step as the tensor code's does.
        let mut key_padding = layout.key_padding.clone();
        let total = seq + 1;
        key_padding = (0..rows)
            .flat_map(|r| {
                let mut row = key_padding[r * seq..(r + 1) * seq].to_vec();
                row.push(false);
                row
            })
            .collect();
        assert_eq!(key_padding.len(), rows * total);
        let step = Layout {
            batch: rows,
            seq: 1,
            positions: vec![23, 20, 23],
            key_padding,
            causal: true,
            mrope: None,
        };
        let x = embeds(&decoder, &[4, 5, 6], rows);
        let caches = Some((&mut fused, &mut reference));
        assert_agree(&decoder, x, &step, caches, "a step after the split prompt");
    }

    #[test]
    fn mismatched_masks_and_autodiff_take_the_tensor_code() {
        let prompt: Vec<i64> = (0..15).map(|i| i as i64).collect();
        // A padding mask of the wrong width, in either layout.
        for decoder in [seeded(4), seeded(4).with_decoding_layout()] {
            let mut cache = prefilled(&decoder, &prompt);
            let x = embeds(&decoder, &[1, 2, 3], 3);
            assert!(super::hidden(&decoder, &x, &step_layout(1), Some(&mut cache)).is_none());
            assert_eq!(cache.len(), 5, "nothing appended");
        }

        // Autodiff: gradients need the tensor code.
        let decoder = TextDecoder::<CpuAutodiff>::init(config(), 0.5, &Default::default());
        let mut cache = prefilled(&decoder, &prompt);
        let x = embeds(&decoder, &[1, 2, 3], 3);
        assert!(super::hidden(&decoder, &x, &step_layout(0), Some(&mut cache)).is_none());
    }
}
