//! Command-line arguments of the profiling examples: a model directory
//! (default: the benchmark model), then numbers by position.

use std::path::PathBuf;

/// The example's arguments.
pub struct Args(Vec<String>);

impl Args {
    /// The process's arguments.
    pub fn from_env() -> Self {
        Self(std::env::args().collect())
    }

    /// Argument 1, or the benchmark model that `hf_generate.py make` writes.
    pub fn model_dir(&self) -> PathBuf {
        PathBuf::from(
            self.0
                .get(1)
                .map(String::as_str)
                .unwrap_or("target/bench-models/qwen2-3.8m"),
        )
    }

    /// Argument `i` as a number, or `default`.
    pub fn number(&self, i: usize, default: usize) -> usize {
        self.0
            .get(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    }
}
