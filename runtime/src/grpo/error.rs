//! Errors of the GRPO engine. Each carries a stable runtime code (`E05xx`,
//! documented in `docs/errors/`).

use std::fmt;

/// What can go wrong in an update step.
#[derive(Debug, Clone, PartialEq)]
pub enum GrpoError {
    /// A NaN or infinity in rewards, log-probs or the loss (E0500).
    NonFinite {
        /// The training step.
        step: u64,
        /// Which input (`reward criterion \`safety\``, `policy log-probs`).
        what: String,
        /// Index of the first bad value (flattened).
        index: usize,
        /// The value.
        value: f32,
    },
    /// Inputs whose shapes do not agree (E0501); never broadcast silently.
    Shape {
        /// Which input.
        what: String,
        /// The expected dims.
        expected: Vec<usize>,
        /// The dims found.
        found: Vec<usize>,
    },
    /// Dynamic sampling kept too few groups after the resample cap (E0502).
    NothingKept {
        /// The criterion filtered on.
        criterion: String,
        /// Groups needed for a step.
        needed: usize,
        /// Groups kept.
        kept: usize,
        /// Batches drawn.
        attempts: usize,
    },
    /// A configuration the math cannot use (E0503).
    Config(String),
}

impl GrpoError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            GrpoError::NonFinite { .. } => "E0500",
            GrpoError::Shape { .. } => "E0501",
            GrpoError::NothingKept { .. } => "E0502",
            GrpoError::Config(_) => "E0503",
        }
    }
}

impl fmt::Display for GrpoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrpoError::NonFinite { step, what, index, value } => write!(
                f,
                "[{}] step {step}: {what} holds a non-finite value ({value} at index {index}); the run stops here, the last good checkpoint is kept",
                self.code()
            ),
            GrpoError::Shape { what, expected, found } => write!(
                f,
                "[{}] {what} has shape {found:?}, expected {expected:?}",
                self.code()
            ),
            GrpoError::NothingKept { criterion, needed, kept, attempts } => write!(
                f,
                "[{}] dynamic sampling kept {kept} of the {needed} groups a step needs after {attempts} batches: `{criterion}` carried no learning signal in the other groups (the same in every completion, or a mean outside `band`); raise `max_resample`, use a `band`, or filter on a criterion that varies",
                self.code()
            ),
            GrpoError::Config(msg) => write!(f, "[{}] {msg}", self.code()),
        }
    }
}

impl std::error::Error for GrpoError {}
