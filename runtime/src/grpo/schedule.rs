//! Learning-rate schedules: constant, linear warm-up, then constant, linear
//! decay or cosine decay to 0 (the Hugging Face `get_*_schedule_with_warmup`
//! formulas).

/// The shape after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Stay at the base rate.
    Constant,
    /// Decay linearly to 0 at the last step.
    Linear,
    /// Decay along half a cosine to 0 at the last step.
    Cosine,
}

impl Schedule {
    /// The schedule a pipeline names (`constant`, `linear`, `cosine`; the
    /// compiler admits nothing else, so other names mean `constant`).
    pub fn named(name: &str) -> Self {
        match name {
            "linear" => Schedule::Linear,
            "cosine" => Schedule::Cosine,
            _ => Schedule::Constant,
        }
    }
}

/// The learning rate at `step` (0-based) of `total` steps.
pub fn lr(base: f64, schedule: Schedule, warmup: u64, total: u64, step: u64) -> f64 {
    if step < warmup {
        return base * step as f64 / warmup.max(1) as f64;
    }
    let progress = (step - warmup) as f64 / total.saturating_sub(warmup).max(1) as f64;
    match schedule {
        Schedule::Constant => base,
        Schedule::Linear => base * (1.0 - progress).max(0.0),
        Schedule::Cosine => base * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos()),
    }
}
