//! "Did you mean ...?": the names closest to a misspelt one, and the help
//! and fixes a diagnostic gets from them.
//!
//! Several names can be equally close (`stage3` against `stage1` and
//! `stage2`): then the help names them all and the diagnostic gets a fix
//! for each, which an editor offers as a choice and `saferc check --fix`,
//! applying only single fixes, leaves to the user.

use super::{join_or, Diagnostic};
use crate::span::Span;

/// The candidates closest to a name within a small edit distance: one or
/// more, in alphabetical order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suggestion<'a> {
    names: Vec<&'a str>,
}

impl<'a> Suggestion<'a> {
    /// The first of the closest names (alphabetically when several are).
    pub fn best(&self) -> &'a str {
        self.names[0]
    }

    /// Every closest name.
    pub fn names(&self) -> &[&'a str] {
        &self.names
    }

    /// "did you mean `x`?", or "did you mean `x` or `y`?", each name shown
    /// through `shown` (`name` → `dataset.name`, say).
    pub fn help(&self, shown: impl Fn(&str) -> String) -> String {
        let quoted: Vec<String> = self
            .names
            .iter()
            .map(|n| format!("`{}`", shown(n)))
            .collect();
        format!("did you mean {}?", join_or(&quoted))
    }
}

/// The names among `candidates` closest to `name`, if any is within a
/// small edit distance (1 for up to 3 characters, 2 up to 7, else 3).
pub fn did_you_mean<'a, I>(name: &str, candidates: I) -> Option<Suggestion<'a>>
where
    I: IntoIterator<Item = &'a str>,
{
    let limit = match name.chars().count() {
        0..=3 => 1,
        4..=7 => 2,
        _ => 3,
    };
    let mut near: Vec<(usize, &'a str)> = candidates
        .into_iter()
        .filter(|c| *c != name)
        .map(|c| (strsim::damerau_levenshtein(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .collect();
    let closest = near.iter().map(|(d, _)| *d).min()?;
    near.retain(|(d, _)| *d == closest);
    let mut names: Vec<&'a str> = near.into_iter().map(|(_, c)| c).collect();
    names.sort_unstable();
    names.dedup();
    Some(Suggestion { names })
}

impl Diagnostic {
    /// "did you mean `best`?", with the fix that writes it over `span`,
    /// which holds `wrote` (a fix for each name when several are as close).
    #[must_use]
    pub fn with_suggestion(self, span: Span, wrote: &str, suggestion: &Suggestion) -> Self {
        self.with_help(suggestion.help(str::to_string))
            .with_suggested_fixes(span, wrote, suggestion, str::to_string)
    }

    /// A fix for each suggested name: `replacement(name)` written over
    /// `span`, which holds `wrote`.
    #[must_use]
    pub fn with_suggested_fixes(
        self,
        span: Span,
        wrote: &str,
        suggestion: &Suggestion,
        replacement: impl Fn(&str) -> String,
    ) -> Self {
        suggestion
            .names()
            .iter()
            .fold(self, |d, name| d.with_fix(span, wrote, &replacement(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostic::Code;
    use crate::span::SourceId;

    #[test]
    fn the_closest_name_is_suggested_and_equally_close_ones_together() {
        let names = ["policy", "stage1", "stage2", "reference"];
        let one = did_you_mean("polcy", names).map(|s| s.names().to_vec());
        assert_eq!(one, Some(vec!["policy"]));
        let two = did_you_mean("stage3", names).map(|s| s.names().to_vec());
        assert_eq!(two, Some(vec!["stage1", "stage2"]));
        assert_eq!(did_you_mean("entirely_else", names), None);
        assert_eq!(did_you_mean("policy", names), None);
    }

    #[test]
    fn equally_close_names_give_a_fix_each_and_name_both() {
        let span = Span::new(SourceId(0), 0, 6);
        let names = ["stage1", "stage2"];
        let suggestion = did_you_mean("stage3", names);
        assert!(suggestion.is_some(), "stage3 is near both");
        let Some(suggestion) = suggestion else { return };
        let d =
            Diagnostic::error(Code::E0203, "unknown").with_suggestion(span, "stage3", &suggestion);
        assert_eq!(
            d.help.as_deref(),
            Some("did you mean `stage1` or `stage2`?")
        );
        let fixes: Vec<&str> = d.fixes.iter().map(|f| f.replacement.as_str()).collect();
        assert_eq!(fixes, ["stage1", "stage2"]);
        let shown = suggestion.help(|n| format!("data.{n}"));
        assert_eq!(shown, "did you mean `data.stage1` or `data.stage2`?");
    }
}
