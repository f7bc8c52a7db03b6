//! Splitting a decoding batch into shards that run in parallel.
//!
//! On the CPU a decode step multiplies a few rows by every weight, a product
//! below burn-flex's threshold for a multi-threaded gemm, so one core would
//! sit idle. The batch is split into one shard per worker thread, each with
//! its own KV cache, and each shard samples and decodes its rows on one
//! worker thread until they have all ended: the shards never wait for each
//! other (a step-by-step hand-off cost a thread wake-up per token on this
//! VM). Every row samples from its own random stream
//! ([`super::generation`]), so the tokens do not depend on the split.

use std::ops::Range;

use burn::tensor::backend::Backend;

use super::generation::{last_logits, Row};
use crate::model::{on_cpu, KvCache, Layout, Model, ModelError, ModelInput};

/// A part of the batch decoded as one forward with its own cache.
pub(super) struct Shard<B: Backend> {
    pub(super) rows: Vec<Row>,
    cache: KvCache<B>,
    /// Last-position logits of the rows, row-major `[rows, vocab]`.
    pub(super) logits: Vec<f32>,
}

impl<B: Backend> Shard<B> {
    /// Keeps only the rows at `keep` (indices into `rows`, ascending).
    pub(super) fn keep(&mut self, keep: &[usize]) {
        if keep.len() == self.rows.len() {
            return;
        }
        if !keep.is_empty() {
            self.cache.select_rows(keep);
        }
        let mut old: Vec<Option<Row>> = std::mem::take(&mut self.rows)
            .into_iter()
            .map(Some)
            .collect();
        self.rows = keep
            .iter()
            .filter_map(|&r| old.get_mut(r).and_then(Option::take))
            .collect();
    }

    /// Feeds every live row its last sampled token and stores the next logits.
    pub(super) fn decode_step(&mut self, model: &Model<B>) -> Result<(), ModelError> {
        let tokens: Vec<u32> = self
            .rows
            .iter()
            .filter_map(|r| r.tokens.last().copied())
            .collect();
        let positions: Vec<i64> = self.rows.iter().map(|r| r.position).collect();
        for row in &mut self.rows {
            row.position += 1;
            row.key_padding.push(false);
        }
        let layout = Layout {
            batch: self.rows.len(),
            seq: 1,
            positions,
            key_padding: self
                .rows
                .iter()
                .flat_map(|r| r.key_padding.iter().copied())
                .collect(),
            causal: true,
            mrope: None,
        };
        self.logits = last_logits(model.forward(
            &ModelInput {
                tokens,
                layout,
                images: None,
            },
            Some(&mut self.cache),
        )?)?;
        Ok(())
    }
}

/// The rows of each shard when a batch of `rows` is decoded on backend `B`:
/// one shard per worker thread on the CPU (at least two rows each), one on
/// a GPU; consecutive, in order.
pub fn shard_bounds<B: Backend>(rows: usize) -> Vec<Range<usize>> {
    let count = if on_cpu::is_cpu::<B>() {
        rayon::current_num_threads().min(rows / 2).max(1)
    } else {
        1
    };
    (0..count)
        .map(|k| k * rows / count..(k + 1) * rows / count)
        .collect()
}

/// Splits the rows (in order) into shards, each with its rows' keys and
/// values taken from the prefill `cache` of the distinct prompts
/// (`source[row]` is the row's distinct prompt) and its rows' logits.
pub(super) fn split_into_shards<B: Backend>(
    rows: Vec<Row>,
    cache: KvCache<B>,
    source: &[usize],
    distinct_logits: &[f32],
    vocab: usize,
) -> Vec<Shard<B>> {
    let bounds = shard_bounds::<B>(rows.len());
    let identity = bounds.len() == 1 && source.iter().enumerate().all(|(i, &s)| i == s);
    let mut shards = Vec::with_capacity(bounds.len());
    let mut rows = rows.into_iter();
    for Range {
        start: from,
        end: to,
    } in bounds
    {
        let mut shard_cache = cache.clone();
        if !identity {
            shard_cache.select_rows(&source[from..to]);
        }
        let logits = source[from..to]
            .iter()
            .flat_map(|&s| {
                distinct_logits
                    .get(s * vocab..(s + 1) * vocab)
                    .unwrap_or(&[])
            })
            .copied()
            .collect();
        shards.push(Shard {
            rows: rows.by_ref().take(to - from).collect(),
            cache: shard_cache,
            logits,
        });
    }
    shards
}

/// `decode(shard)` for every shard, each on its own worker thread from start
/// to end (shards share nothing, so they never wait for each other); the
/// results in shard order.
pub(super) fn decode_shards<B: Backend, T: Send>(
    shards: Vec<Shard<B>>,
    decode: impl Fn(Shard<B>) -> Result<T, ModelError> + Send + Sync,
) -> Result<Vec<T>, ModelError> {
    use rayon::prelude::*;
    if shards.len() == 1 {
        shards.into_iter().map(decode).collect()
    } else {
        shards.into_par_iter().map(decode).collect()
    }
}
