//! Grouped-query attention over packed segments ([`super::Packed`]) and
//! its backward.
//!
//! A segment's queries see the keys of its context (all of them) and its
//! own keys up to their position. Work is split into tasks of one family
//! (a segment without context and the segments whose context it is) and
//! one key/value head: tasks touch disjoint keys, so a context's key and
//! value gradients, summed over every segment that reads them, stay inside
//! one task. Tasks run on the worker threads.
//!
//! Within a task, for each segment: the queries of the key/value head's
//! `groups` query heads stacked as `[groups·len, head_dim]` (row `g·len +
//! i` is head `g`'s query at position `i`), the keys and values it sees as
//! `[keys, head_dim]` (context first), scores and probabilities
//! `[groups·len, keys]`.

use rayon::prelude::*;

use super::super::few_rows::{product_into, Matrix};
use super::ops::{add, softmax};
use super::{Dims, Packed, Segment};

/// The attention probabilities of every segment and key/value head,
/// `[groups·len, keys]` each, at `segment · kv_heads + kv_head`.
pub struct Probabilities(Vec<Vec<f32>>);

/// One task's view: a family's segments and a key/value head.
struct Task {
    segments: Vec<usize>,
    kv_head: usize,
}

/// One task for each family and key/value head.
fn tasks(packed: &Packed, dims: &Dims) -> Vec<Task> {
    let mut families: Vec<Vec<usize>> = Vec::new();
    let mut family_of = vec![0; packed.segments.len()];
    for (i, s) in packed.segments.iter().enumerate() {
        match s.context {
            None => {
                family_of[i] = families.len();
                families.push(vec![i]);
            }
            Some(c) => {
                family_of[i] = family_of[c];
                families[family_of[c]].push(i);
            }
        }
    }
    families
        .into_iter()
        .flat_map(|segments| {
            (0..dims.kv_heads).map(move |kv_head| Task {
                segments: segments.clone(),
                kv_head,
            })
        })
        .collect()
}

/// The packed token indices a segment's queries see: its context's, then its own.
fn key_rows(packed: &Packed, s: &Segment) -> Vec<usize> {
    let context = s.context.map(|c| packed.segments[c]);
    let context = context.map_or(0..0, |c| c.start..c.start + c.len);
    context.chain(s.start..s.start + s.len).collect()
}

/// `rows` of head `head` of `x` (`[N, heads, head_dim]`) stacked: `[rows, head_dim]`.
fn gather(x: &[f32], rows: &[usize], heads: usize, head: usize, head_dim: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * head_dim);
    gather_into(&mut out, x, rows.iter().copied(), heads, head, head_dim);
    out
}

/// Appends `rows` of head `head` of `x` (`[N, heads, head_dim]`) to `out`.
fn gather_into(
    out: &mut Vec<f32>,
    x: &[f32],
    rows: impl Iterator<Item = usize>,
    heads: usize,
    head: usize,
    head_dim: usize,
) {
    for r in rows {
        let at = (r * heads + head) * head_dim;
        out.extend_from_slice(&x[at..at + head_dim]);
    }
}

/// The stacked queries of the `groups` query heads reading key/value head
/// `kv_head`, at the segment's positions: `[groups·len, head_dim]`. (Copied
/// a row at a time: collected value by value through `flat_map`, this was
/// about a sixth of the attention backward's samples.)
fn gather_queries(q: &[f32], s: &Segment, kv_head: usize, dims: &Dims) -> Vec<f32> {
    let (groups, head_dim) = (dims.groups(), dims.head_dim);
    let mut out = Vec::with_capacity(groups * s.len * head_dim);
    for g in 0..groups {
        let rows = s.start..s.start + s.len;
        gather_into(
            &mut out,
            q,
            rows,
            dims.heads,
            kv_head * groups + g,
            head_dim,
        );
    }
    out
}

/// Writes stacked `[groups·len, head_dim]` query-head values back to `out`
/// (`[N, heads, head_dim]`).
fn scatter_queries(out: &mut [f32], stacked: &[f32], s: &Segment, kv_head: usize, dims: &Dims) {
    let (groups, head_dim) = (dims.groups(), dims.head_dim);
    for (j, values) in stacked.chunks_exact(head_dim).enumerate() {
        let (g, i) = (j / s.len, j % s.len);
        let at = ((s.start + i) * dims.heads + kv_head * groups + g) * head_dim;
        out[at..at + head_dim].copy_from_slice(values);
    }
}

/// `a · bᵀ` for row-major `a`: `[m, k]`, `b`: `[n, k]` → `[m, n]`.
fn times_transposed(a: &[f32], b: &[f32], k: usize) -> Vec<f32> {
    let (m, n) = (a.len() / k, b.len() / k);
    let mut out = vec![0f32; m * n];
    product_into(
        &mut out,
        &Matrix::row_major(a, m, k),
        &Matrix::row_major(b, n, k).transposed(),
        false,
    );
    out
}

/// `a · b` for row-major `a`: `[m, k]`, `b`: `[k, n]` → `[m, n]`.
fn times(a: &[f32], b: &[f32], k: usize) -> Vec<f32> {
    let (m, n) = (a.len() / k, b.len() / k);
    let mut out = vec![0f32; m * n];
    product_into(
        &mut out,
        &Matrix::row_major(a, m, k),
        &Matrix::row_major(b, k, n),
        false,
    );
    out
}

/// `aᵀ · b` for row-major `a`: `[k, m]`, `b`: `[k, n]` → `[m, n]`.
fn transposed_times(a: &[f32], b: &[f32], m: usize, n: usize) -> Vec<f32> {
    let k = a.len() / m;
    let mut out = vec![0f32; m * n];
    product_into(
        &mut out,
        &Matrix::row_major(a, k, m).transposed(),
        &Matrix::row_major(b, k, n),
        false,
    );
    out
}

/// Attention's context `[N, heads, head_dim]` for queries `q` (`[N,
/// heads, head_dim]`, rotated), keys `k` (rotated) and values `v` (`[N,
/// kv_heads, head_dim]`), and the probabilities the backward reads.
pub fn forward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    packed: &Packed,
    dims: &Dims,
) -> (Vec<f32>, Probabilities) {
    let (kv_heads, head_dim) = (dims.kv_heads, dims.head_dim);
    let scale = (head_dim as f64).sqrt().recip() as f32;
    let all_tasks = tasks(packed, dims);
    // Per task: each segment's (index, probabilities, stacked context).
    type Piece = Vec<(usize, Vec<f32>, Vec<f32>)>;
    let pieces: Vec<Piece> = all_tasks
        .par_iter()
        .map(|task| {
            let h = task.kv_head;
            task.segments
                .iter()
                .map(|&si| {
                    let s = &packed.segments[si];
                    let rows = key_rows(packed, s);
                    let seen = rows.len() - s.len;
                    let queries = gather_queries(q, s, h, dims);
                    let keys = gather(k, &rows, kv_heads, h, head_dim);
                    let values = gather(v, &rows, kv_heads, h, head_dim);
                    let mut p = times_transposed(&queries, &keys, head_dim);
                    for (j, scores) in p.chunks_exact_mut(rows.len()).enumerate() {
                        let position = j % s.len;
                        for (t, score) in scores.iter_mut().enumerate() {
                            *score = if t <= seen + position {
                                *score * scale
                            } else {
                                f32::NEG_INFINITY
                            };
                        }
                        softmax(scores);
                    }
                    let context = times(&p, &values, rows.len());
                    (si, p, context)
                })
                .collect()
        })
        .collect();
    let n = packed.tokens.len();
    let mut context = vec![0f32; n * dims.heads * head_dim];
    let mut probabilities = vec![Vec::new(); packed.segments.len() * kv_heads];
    for (task, piece) in all_tasks.iter().zip(pieces) {
        for (si, p, c) in piece {
            scatter_queries(&mut context, &c, &packed.segments[si], task.kv_head, dims);
            probabilities[si * kv_heads + task.kv_head] = p;
        }
    }
    (context, Probabilities(probabilities))
}

/// The gradients of the queries `[N, heads, head_dim]`, keys and values
/// (`[N, kv_heads, head_dim]`) for the context gradient `dcontext`.
/// With `P` the probabilities, `dP = dC·Vᵀ`, `dS = P∘(dP − Σ_row dP∘P)·scale`,
/// `dQ = dS·K`, `dK = dSᵀ·Q`, `dV = Pᵀ·dC`.
pub fn backward(
    dcontext: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    probabilities: &Probabilities,
    packed: &Packed,
    dims: &Dims,
) -> [Vec<f32>; 3] {
    let (kv_heads, head_dim) = (dims.kv_heads, dims.head_dim);
    let scale = (head_dim as f64).sqrt().recip() as f32;
    let all_tasks = tasks(packed, dims);
    // Per task: each segment's (index, dQ stacked, dK, dV), dK and dV
    // `[len, head_dim]` of the segment's own tokens.
    type Piece = Vec<(usize, Vec<f32>, Vec<f32>, Vec<f32>)>;
    let pieces: Vec<Piece> = all_tasks
        .par_iter()
        .map(|task| {
            let h = task.kv_head;
            let mut out: Piece = task
                .segments
                .iter()
                .map(|&si| {
                    let len = packed.segments[si].len * head_dim;
                    (si, Vec::new(), vec![0f32; len], vec![0f32; len])
                })
                .collect();
            for slot in 0..out.len() {
                let si = out[slot].0;
                let s = &packed.segments[si];
                let rows = key_rows(packed, s);
                let seen = rows.len() - s.len;
                let p = &probabilities.0[si * kv_heads + h];
                let queries = gather_queries(q, s, h, dims);
                let keys = gather(k, &rows, kv_heads, h, head_dim);
                let values = gather(v, &rows, kv_heads, h, head_dim);
                let dc = gather_queries(dcontext, s, h, dims);
                let mut ds = times_transposed(&dc, &values, head_dim);
                for (ds, p) in ds
                    .chunks_exact_mut(rows.len())
                    .zip(p.chunks_exact(rows.len()))
                {
                    let dot: f32 = ds.iter().zip(p).map(|(a, b)| a * b).sum();
                    for (ds, &p) in ds.iter_mut().zip(p) {
                        *ds = p * (*ds - dot) * scale;
                    }
                }
                let dq = times(&ds, &keys, rows.len());
                let dk = transposed_times(&ds, &queries, rows.len(), head_dim);
                let dv = transposed_times(p, &dc, rows.len(), head_dim);
                // The context's part goes to the family's first segment.
                let split = seen * head_dim;
                add(&mut out[0].2[..split], &dk[..split]);
                add(&mut out[0].3[..split], &dv[..split]);
                let own = &mut out[slot];
                own.1 = dq;
                add(&mut own.2, &dk[split..]);
                add(&mut own.3, &dv[split..]);
            }
            out
        })
        .collect();
    let n = packed.tokens.len();
    let mut dq = vec![0f32; n * dims.heads * head_dim];
    let mut dk = vec![0f32; n * kv_heads * head_dim];
    let mut dv = vec![0f32; n * kv_heads * head_dim];
    for (task, piece) in all_tasks.iter().zip(pieces) {
        let h = task.kv_head;
        for (si, q_grad, k_grad, v_grad) in piece {
            let s = &packed.segments[si];
            scatter_queries(&mut dq, &q_grad, s, h, dims);
            for (i, (kg, vg)) in k_grad
                .chunks_exact(head_dim)
                .zip(v_grad.chunks_exact(head_dim))
                .enumerate()
            {
                let at = ((s.start + i) * kv_heads + h) * head_dim;
                dk[at..at + head_dim].copy_from_slice(kg);
                dv[at..at + head_dim].copy_from_slice(vg);
            }
        }
    }
    [dq, dk, dv]
}
