//! DAPO dynamic sampling: keep only groups whose raw criterion carries a
//! learning signal, drawing more batches until a step is full, up to a cap.
//!
//! A group is kept when its values are not all equal (`Keep::Varies`, DAPO's
//! `0 < #correct < G`), or when its mean lies strictly inside a band
//! (`Keep::Band`, EasyR1's `filter_low < mean < filter_high`). Filter on a
//! raw criterion, not the shaped total (the compiler warns, E0310).

use super::GrpoError;

/// Which groups to keep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Keep {
    /// Groups whose values are not all equal.
    Varies,
    /// Groups whose mean lies strictly between the bounds.
    Band(f32, f32),
}

/// Which groups of a batch to keep (one flag per group).
///
/// # Errors
/// When the values do not form whole groups.
pub fn keep_groups(values: &[f32], group_size: usize, keep: Keep) -> Result<Vec<bool>, GrpoError> {
    if group_size == 0 || !values.len().is_multiple_of(group_size) {
        return Err(GrpoError::Shape {
            what: format!("criterion values (groups of {group_size})"),
            expected: vec![(values.len() / group_size.max(1)) * group_size.max(1)],
            found: vec![values.len()],
        });
    }
    Ok(values
        .chunks(group_size)
        .map(|g| match keep {
            Keep::Varies => g.iter().any(|v| (v - g[0]).abs() > 1e-8),
            Keep::Band(lo, hi) => {
                let mean = g.iter().sum::<f32>() / g.len() as f32;
                lo < mean && mean < hi
            }
        })
        .collect())
}

/// Fills a step with kept groups across several generated batches.
#[derive(Debug, Clone)]
pub struct Sampler {
    /// The criterion's name (for errors).
    pub criterion: String,
    /// Groups a step needs.
    pub needed: usize,
    /// Extra batches allowed after the first.
    pub max_resample: usize,
    /// What to keep.
    pub keep: Keep,
    kept: usize,
    attempts: usize,
}

impl Sampler {
    /// A sampler for one step.
    pub fn new(
        criterion: impl Into<String>,
        needed: usize,
        max_resample: usize,
        keep: Keep,
    ) -> Self {
        Sampler {
            criterion: criterion.into(),
            needed,
            max_resample,
            keep,
            kept: 0,
            attempts: 0,
        }
    }

    /// Offers a generated batch; returns which of its groups enter the step
    /// (never more than the step still needs).
    ///
    /// # Errors
    /// [`GrpoError::NothingKept`] when this was the last allowed batch and the
    /// step is still not full.
    pub fn offer(&mut self, values: &[f32], group_size: usize) -> Result<Vec<bool>, GrpoError> {
        self.attempts += 1;
        let mut flags = keep_groups(values, group_size, self.keep)?;
        for f in flags.iter_mut() {
            if *f {
                if self.kept < self.needed {
                    self.kept += 1;
                } else {
                    *f = false;
                }
            }
        }
        if !self.is_full() && self.attempts > self.max_resample {
            return Err(GrpoError::NothingKept {
                criterion: self.criterion.clone(),
                needed: self.needed,
                kept: self.kept,
                attempts: self.attempts,
            });
        }
        Ok(flags)
    }

    /// True once the step has all the groups it needs.
    pub fn is_full(&self) -> bool {
        self.kept >= self.needed
    }

    /// Batches drawn so far.
    pub fn attempts(&self) -> usize {
        self.attempts
    }
}
