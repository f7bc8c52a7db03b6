//! The 3-D rotary positions of `qwen2_5_vl` (transformers'
//! `Qwen2_5_VLModel.get_rope_index`, for images).
//!
//! A text token at position `p` (its count of real tokens before it) turns
//! by `[p, p, p] + delta`. An image's `t · h · w` placeholder tokens (its
//! grid in merged tokens) starting at position `s` turn by
//! `[s + frame, s + row, s + column]` (shifted by the row's `delta`), and
//! the text after it continues at `s + max(h, w)`, not at `s + t·h·w`: each
//! image moves `delta` by `max(h, w) − t·h·w`. A row's `delta` after a
//! forward call is kept in the KV cache, so decode steps (text only)
//! continue where the prompt left off.

use super::decoder::Layout;

/// The rotary positions `[t, h, w]` of every new token of `layout`
/// (row-major) and each row's `delta` after them.
///
/// `tokens` are the call's token ids, `grids` the `[t, h, w]` patch grids
/// of the call's images in the order their placeholders appear (row after
/// row), `merge` the vision tower's `spatial_merge_size`, and `deltas` each
/// row's `delta` before the call (empty: all 0).
pub fn positions(
    tokens: &[u32],
    layout: &Layout,
    image_token: u32,
    grids: &[[usize; 3]],
    merge: usize,
    deltas: &[i64],
) -> Result<(Vec<[i64; 3]>, Vec<i64>), String> {
    let (rows, seq) = (layout.batch, layout.seq);
    let mut out = Vec::with_capacity(rows * seq);
    let mut after = Vec::with_capacity(rows);
    let mut next_grid = grids.iter();
    let merge = merge.max(1);
    for row in 0..rows {
        let mut delta = deltas.get(row).copied().unwrap_or(0);
        // The image being read: its start, merged height and width, tokens
        // read so far and still to come.
        let mut image: Option<(i64, usize, usize, usize, usize)> = None;
        for j in 0..seq {
            let index = row * seq + j;
            let (Some(&token), Some(&p)) = (tokens.get(index), layout.positions.get(index)) else {
                return Err(format!("no token or position for row {row}, column {j}"));
            };
            if token != image_token {
                if let Some((_, _, _, _, left)) = image {
                    return Err(format!(
                        "an image's placeholders end {left} tokens early in row {row}"
                    ));
                }
                out.push([p + delta; 3]);
                continue;
            }
            let (start, h, w, read, left) = match image {
                Some(current) => current,
                None => {
                    let &[t, gh, gw] = next_grid.next().ok_or_else(|| {
                        format!("row {row} has more image placeholders than the images give")
                    })?;
                    let (h, w) = (gh / merge, gw / merge);
                    (p + delta, h, w, 0, t * h * w)
                }
            };
            let (read_i, h_i, w_i) = (read as i64, h as i64, w as i64);
            out.push([
                start + read_i / (h_i * w_i).max(1),
                start + (read_i / w_i.max(1)) % h_i.max(1),
                start + read_i % w_i.max(1),
            ]);
            image = if left > 1 {
                Some((start, h, w, read + 1, left - 1))
            } else {
                // The text after the image continues at `start + max(h, w)`.
                let tokens = (read + 1) as i64;
                delta += h.max(w) as i64 - tokens;
                None
            };
        }
        if let Some((_, _, _, _, left)) = image {
            return Err(format!(
                "row {row} ends inside an image ({left} placeholders missing)"
            ));
        }
        after.push(delta);
    }
    if next_grid.next().is_some() {
        return Err("more images were given than the prompts have placeholders for".into());
    }
    Ok((out, after))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const IMG: u32 = 5;

    #[test]
    fn an_image_turns_by_its_grid_and_the_text_after_it_by_its_longer_side() {
        // Two text tokens, an image of 4×6 patches (2×3 merged tokens), two text tokens.
        let tokens = [1, 2, IMG, IMG, IMG, IMG, IMG, IMG, 3, 4];
        let layout = Layout::dense(1, tokens.len(), true);
        let (pos, deltas) = positions(&tokens, &layout, IMG, &[[1, 4, 6]], 2, &[]).unwrap();
        let column = |axis: usize| pos.iter().map(|p| p[axis]).collect::<Vec<_>>();
        assert_eq!(column(0), vec![0, 1, 2, 2, 2, 2, 2, 2, 5, 6]);
        assert_eq!(column(1), vec![0, 1, 2, 2, 2, 3, 3, 3, 5, 6]);
        assert_eq!(column(2), vec![0, 1, 2, 3, 4, 2, 3, 4, 5, 6]);
        // 6 placeholders advance the position by 3: delta −3.
        assert_eq!(deltas, vec![-3]);
        // A decode step continues from the cached delta: token 10 turns at 7.
        let step = Layout {
            positions: vec![10],
            ..Layout::dense(1, 1, true)
        };
        let (pos, deltas) = positions(&[9], &step, IMG, &[], 2, &deltas).unwrap();
        assert_eq!((pos, deltas), (vec![[7, 7, 7]], vec![-3]));
    }

    #[test]
    fn images_are_taken_in_order_across_rows_and_mismatches_are_errors() {
        let tokens = [IMG, 1, IMG, 1];
        let layout = Layout::dense(2, 2, true);
        let (pos, deltas) =
            positions(&tokens, &layout, IMG, &[[1, 2, 2], [1, 2, 2]], 2, &[]).unwrap();
        assert_eq!(pos, vec![[0, 0, 0], [1, 1, 1], [0, 0, 0], [1, 1, 1]]);
        assert_eq!(deltas, vec![0, 0]);
        let err = positions(&tokens, &layout, IMG, &[[1, 2, 2]], 2, &[]).unwrap_err();
        assert!(err.contains("more image placeholders"), "{err}");
        let err = positions(&tokens, &layout, IMG, &[[1, 2, 4], [1, 2, 2]], 2, &[]).unwrap_err();
        assert!(err.contains("end 1 tokens early"), "{err}");
        let err = positions(&[1, 1, 1, 1], &layout, IMG, &[[1, 2, 2]], 2, &[]).unwrap_err();
        assert!(err.contains("more images were given"), "{err}");
    }
}
