//! [`Fix`]: a replacement that fixes a diagnostic, and applying fixes to
//! a file's text (the editor's quick fixes, `saferc check --fix`).

use super::Diagnostic;
use crate::span::{SourceId, Span};
use serde::Serialize;

/// A replacement that fixes a diagnostic: the editor's quick fix and
/// `saferc check --fix` apply it. `span` held `wrote` when the diagnostic
/// was made; a fix is applied only where it still does, so a stale or
/// misplaced one changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fix {
    /// What the fix does, as an editor lists it.
    pub title: String,
    /// The text to replace.
    pub span: Span,
    /// The text `span` holds.
    pub wrote: String,
    /// What replaces it.
    pub replacement: String,
}

impl Fix {
    /// Whether `text`, the file the fix is for, still holds what the fix
    /// replaces.
    pub fn applies_to(&self, text: &str) -> bool {
        text.get(self.span.range()) == Some(self.wrote.as_str())
    }
}

/// The fixes of `diagnostics` in file `source` that a tool applies
/// unasked: those of a diagnostic with a single fix.
pub fn single_fixes(diagnostics: &[Diagnostic], source: SourceId) -> Vec<&Fix> {
    diagnostics
        .iter()
        .filter_map(|d| match d.fixes.as_slice() {
            [fix] if fix.span.source == source => Some(fix),
            _ => None,
        })
        .collect()
}

/// `text` with `fixes` applied, and how many were: a fix that no longer
/// applies, or that overlaps one before it, is left out.
pub fn with_fixes(text: &str, mut fixes: Vec<&Fix>) -> (String, usize) {
    fixes.sort_by_key(|fix| (fix.span.start, fix.span.end));
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut count = 0;
    for fix in fixes {
        let range = fix.span.range();
        if range.start < copied || !fix.applies_to(text) {
            continue;
        }
        out.push_str(&text[copied..range.start]);
        out.push_str(&fix.replacement);
        copied = range.end;
        count += 1;
    }
    out.push_str(&text[copied..]);
    (out, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix(start: usize, end: usize, wrote: &str, replacement: &str) -> Fix {
        Fix {
            title: String::new(),
            span: Span::new(SourceId(0), start, end),
            wrote: wrote.into(),
            replacement: replacement.into(),
        }
    }

    #[test]
    fn fixes_apply_in_order_and_stale_or_overlapping_ones_are_left_out() {
        let text = "rollout r { temprature = 1.0, grop = 8 }";
        let typo = fix(12, 22, "temprature", "temperature");
        let group = fix(30, 34, "grop", "group");
        let overlapping = fix(14, 18, "mpra", "x");
        let stale = fix(0, 7, "rolout", "rollout");
        let (fixed, count) = with_fixes(text, vec![&group, &stale, &typo, &overlapping]);
        assert_eq!(fixed, "rollout r { temperature = 1.0, group = 8 }");
        assert_eq!(count, 2);
        assert_eq!(with_fixes(text, vec![&stale]), (text.to_string(), 0));
    }
}
