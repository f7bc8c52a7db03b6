//! DAPO overlong reward shaping (arXiv 2503.14476, eq. 13):
//! R_len(y) = 0 if |y| ≤ L_max − L_cache; ((L_max − L_cache) − |y|) / L_cache
//! if L_max − L_cache < |y| ≤ L_max; −1 beyond, times `factor` (verl's
//! `overlong_buffer.penalty_factor`).

/// The length penalty of a completion of `len` tokens.
pub fn penalty(len: usize, max: usize, cache: usize, factor: f32) -> f32 {
    let soft = max.saturating_sub(cache);
    let value = if len <= soft {
        0.0
    } else if len <= max {
        (soft as f32 - len as f32) / cache.max(1) as f32
    } else {
        -1.0
    };
    value * factor
}
