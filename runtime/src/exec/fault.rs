//! Fault injection, for tests of what a failing run leaves behind.
//!
//! `SAFERC_INJECT_NAN_AT_STEP=N` makes the loss of training step `N`
//! (1-based, in each stage that reaches it) NaN, as a diverging run's
//! would be, without touching any weight: the run then goes through the
//! same check as a real divergence (E0500), and a test can see that the
//! last checkpoint before step `N` is kept and resumes. Unset (or not a
//! number), it changes nothing. It exists because no `.safer` setting can
//! make a run diverge on cue: learning rates are below 1, AdamW bounds
//! each update, and rewards are bounded.

use std::sync::OnceLock;

/// The variable that names the step.
pub const INJECT_NAN_AT_STEP: &str = "SAFERC_INJECT_NAN_AT_STEP";

fn nan_step() -> Option<u64> {
    static STEP: OnceLock<Option<u64>> = OnceLock::new();
    *STEP.get_or_init(|| std::env::var(INJECT_NAN_AT_STEP).ok()?.trim().parse().ok())
}

/// The loss of 0-based training step `step`: NaN at the injected step,
/// `loss` otherwise.
pub fn loss_at(step: u64, loss: f32) -> f32 {
    if nan_step() == Some(step + 1) {
        f32::NAN
    } else {
        loss
    }
}
