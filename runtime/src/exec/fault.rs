//! Fault injection, for tests of what a failing run leaves behind.
//!
//! `SAFERC_INJECT_NAN_AT_STEP=N` makes the loss of training step `N`
//! (1-based, in each stage that reaches it) NaN, as a diverging run's
//! would be, without touching any weight: the run then goes through the
//! same check as a real divergence (E0500), and a test can see that the
//! last checkpoint before step `N` is kept and resumes; the run says so
//! when it starts training. Unset, it changes nothing; a value that is not
//! a number is reported and ignored. It exists because no `.safer` setting can
//! make a run diverge on cue: learning rates are below 1, AdamW bounds
//! each update, and rewards are bounded.
//!
//! Only a build with debug assertions honours the variable: the test
//! profile's, as `cargo test` builds the `saferc` binary for the run cases.
//! A release build (`cargo build --release`, `cargo install`) reports the
//! variable, if set, as ignored. (A cargo feature turned on by a
//! dev-dependency would also reach the test binary, but it made every
//! `cargo bench` or `cargo test` of saferc's editor-only build compile the
//! runtime and burn.)

use std::sync::OnceLock;

/// The variable that names the step.
pub const INJECT_NAN_AT_STEP: &str = "SAFERC_INJECT_NAN_AT_STEP";

fn nan_step() -> Option<u64> {
    static STEP: OnceLock<Option<u64>> = OnceLock::new();
    *STEP.get_or_init(|| {
        let value = std::env::var(INJECT_NAN_AT_STEP).ok()?;
        if !cfg!(debug_assertions) {
            crate::stderr_line!("warning: {INJECT_NAN_AT_STEP} is set, but a release build of saferc injects no faults (only test builds do); it is ignored");
            return None;
        }
        let step = value.trim().parse().ok();
        match step {
            Some(n) => crate::stderr_line!("note: {INJECT_NAN_AT_STEP}={n}: step {n}'s loss will be NaN (fault injection)"),
            None => crate::stderr_line!("warning: {INJECT_NAN_AT_STEP}={value:?} is not a step number; no fault is injected"),
        }
        step
    })
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
