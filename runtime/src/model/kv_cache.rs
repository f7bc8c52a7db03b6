//! The key/value cache of incremental decoding.
//!
//! One entry per layer, keys and values `[batch, kv_heads, cached, head_dim]`,
//! grown by concatenation along the sequence axis. Rows of a batch share the
//! cache length; left padding (masked keys) keeps them aligned.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

/// Keys and values of every layer seen so far.
pub struct KvCache<B: Backend> {
    layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    len: usize,
}

impl<B: Backend> Clone for KvCache<B> {
    /// Shares the cached tensors (burn tensors are reference-counted); an
    /// append or row selection on the clone leaves the original intact.
    fn clone(&self) -> Self {
        Self {
            layers: self.layers.clone(),
            len: self.len,
        }
    }
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for `layers` layers.
    pub fn new(layers: usize) -> Self {
        Self {
            layers: (0..layers).map(|_| None).collect(),
            len: 0,
        }
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
            Some((old_k, old_v)) => (
                Tensor::cat(vec![old_k, k], 2),
                Tensor::cat(vec![old_v, v], 2),
            ),
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
