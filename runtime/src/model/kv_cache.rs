//! The key/value cache of incremental decoding.
//!
//! One entry per layer, keys and values `[batch, kv_heads, cached, head_dim]`,
//! grown along the sequence axis. Rows of a batch share the cache length;
//! left padding (masked keys) keeps them aligned.
//!
//! Growing by concatenation copies every cached position on every decode
//! step. On the CPU backend without autodiff (burn-flex), a one-position
//! append therefore keeps the entry a view of a buffer with room for more
//! positions and writes the new keys and values into that room, in place,
//! when the buffer is not shared (a clone of the cache shares it; appending
//! to a shared buffer copies, so clones stay independent). The views feed
//! attention's products directly (burn-flex multiplies strided operands
//! without copying).

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Shape, Tensor, TensorData, TensorPrimitive};
use burn_flex::Layout;

use super::on_cpu::{as_cpu, as_cpu_mut};
use crate::CpuBackend;

/// Keys and values of every layer seen so far.
pub struct KvCache<B: Backend> {
    layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    len: usize,
    /// Each row's multimodal rotary offset (`qwen2_5_vl`, see
    /// [`super::mrope`]); empty when every row's is 0.
    rope_deltas: Vec<i64>,
}

impl<B: Backend> Clone for KvCache<B> {
    /// Shares the cached tensors (burn tensors are reference-counted); an
    /// append or row selection on the clone leaves the original intact.
    fn clone(&self) -> Self {
        Self {
            layers: self.layers.clone(),
            len: self.len,
            rope_deltas: self.rope_deltas.clone(),
        }
    }
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for `layers` layers.
    pub fn new(layers: usize) -> Self {
        Self {
            layers: (0..layers).map(|_| None).collect(),
            len: 0,
            rope_deltas: Vec::new(),
        }
    }

    /// Each row's multimodal rotary offset (empty: all 0).
    pub fn rope_deltas(&self) -> &[i64] {
        &self.rope_deltas
    }

    /// Sets each row's multimodal rotary offset.
    pub fn set_rope_deltas(&mut self, deltas: Vec<i64>) {
        self.rope_deltas = deltas;
    }

    /// How many positions are cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `k`, `v` (`[batch, kv_heads, new, head_dim]`) to layer `layer`
    /// and returns the whole cached keys and values of that layer.
    pub fn append(
        &mut self,
        layer: usize,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let new = k.dims()[2];
        let merged = match self.layers.get_mut(layer).and_then(Option::take) {
            Some((old_k, old_v)) => (grow(old_k, k), grow(old_v, v)),
            None => (k, v),
        };
        if let Some(slot) = self.layers.get_mut(layer) {
            *slot = Some(merged.clone());
        }
        if layer + 1 == self.layers.len() {
            self.len += new;
        }
        merged
    }

    /// Keeps only the batch rows `rows` (in that order; a row may repeat),
    /// for dropping finished sequences or giving each sample its prompt's
    /// keys and values.
    pub fn select_rows(&mut self, rows: &[usize]) {
        if !self.rope_deltas.is_empty() {
            self.rope_deltas = rows
                .iter()
                .map(|&r| self.rope_deltas.get(r).copied().unwrap_or(0))
                .collect();
        }
        let Some(device) = self.layers.iter().flatten().next().map(|(k, _)| k.device()) else {
            return;
        };
        let index: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [rows.len()]), &device);
        for slot in &mut self.layers {
            if let Some((k, v)) = slot.take() {
                *slot = Some((k.select(0, index.clone()), v.select(0, index.clone())));
            }
        }
    }
}

/// Positions a one-position append makes room for at least, on the CPU.
const MIN_ROOM: usize = 16;

/// `old` and `new` (`[batch, kv_heads, positions, head_dim]`) joined along
/// the positions. On burn-flex, `new` is written into the room of `old`'s
/// buffer where there is room and the buffer is not shared; otherwise a
/// one-position append makes a buffer with room for as many positions again
/// (at least [`MIN_ROOM`]) and returns a view of its filled part. Everything
/// else is `Tensor::cat`.
fn grow<B: Backend>(mut old: Tensor<B, 4>, new: Tensor<B, 4>) -> Tensor<B, 4> {
    let flex_new = as_cpu(&new);
    let flex_old = as_cpu_mut(&mut old);
    let on_flex = flex_old.is_some();
    let written = match (flex_old, flex_new) {
        (Some(old), Some(new)) => write_into_room(old, new),
        _ => false,
    };
    if written {
        return old;
    }
    let [batch, heads, len, dim] = old.dims();
    let added = new.dims()[2];
    if on_flex && added == 1 {
        let room = (len + added).max(MIN_ROOM);
        let zeros = Tensor::zeros([batch, heads, room, dim], &old.device());
        return Tensor::cat(vec![old, new, zeros], 2).narrow(2, 0, len + added);
    }
    Tensor::cat(vec![old, new], 2)
}

/// Writes `new`'s positions after `old`'s into the room of `old`'s buffer
/// and widens the view; `false` (and `old` untouched) where `old` is not a
/// view of the leading positions of an unshared `f32` buffer with room.
fn write_into_room(old: &mut Tensor<CpuBackend, 4>, new: &Tensor<CpuBackend, 4>) -> bool {
    let [batch, heads, len, dim] = old.dims();
    let [new_batch, new_heads, added, new_dim] = new.dims();
    if [new_batch, new_heads, new_dim] != [batch, heads, dim] || old.dtype() != DType::F32 {
        return false;
    }
    let placeholder = Tensor::<CpuBackend, 4>::empty([0, 0, 0, 0], &old.device());
    let mut buffer = match std::mem::replace(old, placeholder).into_primitive() {
        TensorPrimitive::Float(buffer) => buffer,
        quantized => {
            *old = Tensor::from_primitive(quantized);
            return false;
        }
    };
    let strides: Vec<isize> = buffer.layout().strides().to_vec();
    let capacity = usize::try_from(strides[1]).unwrap_or(0) / dim.max(1);
    let fits = strides[3] == 1
        && strides[2] == dim as isize
        && strides[1] == (capacity * dim) as isize
        && strides[0] == (heads * capacity * dim) as isize
        && buffer.layout().start_offset() == 0
        && len + added <= capacity
        && buffer.bytes().len() == batch * heads * capacity * dim * 4;
    let TensorPrimitive::Float(source) = new.clone().into_primitive() else {
        *old = Tensor::from_primitive(TensorPrimitive::Float(buffer));
        return false;
    };
    let written = fits
        && source.dtype() == DType::F32
        && match buffer.try_storage_mut::<f32>() {
            Some(storage) => {
                let source = source.to_contiguous();
                let values: &[f32] = source.storage();
                let run = added * dim;
                for row in 0..batch * heads {
                    let at = row * capacity * dim + len * dim;
                    storage[at..at + run].copy_from_slice(&values[row * run..(row + 1) * run]);
                }
                true
            }
            None => false,
        };
    if written {
        let shape = Shape::new([batch, heads, len + added, dim]);
        buffer = buffer.with_layout(Layout::new(shape, strides, 0));
    }
    *old = Tensor::from_primitive(TensorPrimitive::Float(buffer));
    written
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Distribution, Tensor, TensorPrimitive};

    use super::KvCache;
    use crate::{CpuAutodiff, CpuBackend as B};

    fn random(positions: usize, seed: u64) -> Tensor<B, 4> {
        let device = Default::default();
        <B as burn::tensor::backend::Backend>::seed(&device, seed);
        Tensor::random([3, 2, positions, 4], Distribution::Default, &device)
    }

    /// The address of the buffer behind a CPU tensor.
    fn buffer(t: &Tensor<B, 4>) -> *const u8 {
        match t.clone().into_primitive() {
            TensorPrimitive::Float(f) => f.bytes().as_ptr(),
            TensorPrimitive::QFloat(_) => std::ptr::null(),
        }
    }

    #[test]
    fn one_position_appends_write_in_place_and_equal_concatenation() {
        let mut cache = KvCache::<B>::new(1);
        let prompt = random(5, 1);
        cache.append(0, prompt.clone(), prompt.clone());
        let mut expected = prompt;
        let mut buffers = Vec::new();
        for step in 0..40 {
            let new = random(1, 10 + step);
            expected = Tensor::cat(vec![expected, new.clone()], 2);
            let (k, v) = cache.append(0, new.clone(), new);
            buffers.push(buffer(&k));
            for t in [k, v] {
                assert_eq!(t.dims(), expected.dims());
                let diff: f32 = (t - expected.clone()).abs().max().into_scalar();
                assert_eq!(diff, 0.0, "step {step}");
            }
        }
        // The first append makes room for 16 positions (capacity 22), the
        // one at step 17 for 23 more (capacity 46): within 40 steps the
        // buffer moves once.
        let moves = buffers.windows(2).filter(|w| w[0] != w[1]).count();
        assert_eq!(moves, 1, "{buffers:?}");
    }

    #[test]
    fn a_clone_keeps_its_positions_when_the_original_appends() {
        let mut cache = KvCache::<B>::new(1);
        let prompt = random(4, 2);
        cache.append(0, prompt.clone(), prompt.clone());
        cache.append(0, random(1, 3), random(1, 3));
        let snapshot = cache.clone();
        let (before, _) = cache.clone().append(0, random(1, 4), random(1, 4));
        let (after, _) = cache.append(0, random(1, 5), random(1, 5));
        let (cloned, _) = snapshot.clone().append(0, random(1, 4), random(1, 4));
        let same: f32 = (cloned - before).abs().max().into_scalar();
        assert_eq!(same, 0.0);
        assert_eq!(after.dims()[2], 6);
    }

    #[test]
    fn autodiff_caches_concatenate() {
        let device = Default::default();
        let mut cache = KvCache::<CpuAutodiff>::new(1);
        let k = Tensor::<CpuAutodiff, 4>::ones([1, 1, 2, 3], &device).require_grad();
        cache.append(0, k.clone(), k.clone());
        let (all, _) = cache.append(0, k.clone(), k.clone());
        let grads = all.sum().backward();
        let grad: Vec<f32> = k
            .grad(&grads)
            .and_then(|g| g.into_data().to_vec().ok())
            .unwrap_or_default();
        assert_eq!(grad, vec![2.0; 6]);
    }
}
