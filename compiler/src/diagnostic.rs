//! One diagnostic type for every stage, rendered late.
//!
//! Stages build [`Diagnostic`]s with builder methods (a code, a lowercase
//! headline, a primary label at the offending spot, secondary labels for
//! related places, a `help` that says the fix, and where the fix is one
//! replacement, that replacement as a [`Fix`]). They hold spans only; the
//! [`render`] module turns them into miette reports for terminals and JSON
//! for tools, and the language server into diagnostics and quick fixes,
//! all from the same value.

pub mod codes;
pub mod fix;
pub mod render;
pub mod suggestion;

pub use codes::Code;
pub use fix::Fix;
pub use suggestion::{did_you_mean, Suggestion};

use crate::span::Span;
use serde::Serialize;

/// How serious a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The program is rejected.
    Error,
    /// The program is accepted, but something is probably wrong.
    Warning,
}

/// A labelled span: the primary label says what is wrong at the spot,
/// secondary labels point at related places (the rule, the other end).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Label {
    /// Where.
    pub span: Span,
    /// What to say there, if anything.
    pub message: Option<String>,
    /// Whether this is the main spot of the diagnostic.
    pub primary: bool,
}

/// A compiler diagnostic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The stable code (`E0101`); every code has a page in `docs/errors/`.
    pub code: Code,
    /// The headline: lowercase, no trailing period, identifiers in backticks.
    pub message: String,
    /// Labelled spans, the primary first.
    pub labels: Vec<Label>,
    /// How to fix it.
    pub help: Option<String>,
    /// Extra facts (the arithmetic of a batch check, the import cycle, ...).
    pub notes: Vec<String>,
    /// Replacements that fix it, when the fix is that mechanical.
    pub fixes: Vec<Fix>,
    /// Spans whose text is most likely a secret (an API key written where
    /// its variable's name belongs): a report draws them as `*`, so that the
    /// key does not reach a terminal or a CI log a second time.
    pub secrets: Vec<Span>,
}

impl Diagnostic {
    /// An error with a code and a headline.
    pub fn error(code: Code, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            labels: Vec::new(),
            help: None,
            notes: Vec::new(),
            fixes: Vec::new(),
            secrets: Vec::new(),
        }
    }

    /// A warning with a code and a headline.
    pub fn warning(code: Code, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, message)
        }
    }

    /// Adds the primary label (the spot that is wrong).
    #[must_use]
    pub fn with_primary(mut self, span: Span, message: impl Into<String>) -> Self {
        let message = message.into();
        self.labels.insert(
            0,
            Label {
                span,
                message: (!message.is_empty()).then_some(message),
                primary: true,
            },
        );
        self
    }

    /// Adds a secondary label (a related place).
    #[must_use]
    pub fn with_secondary(mut self, span: Span, message: impl Into<String>) -> Self {
        let message = message.into();
        self.labels.push(Label {
            span,
            message: (!message.is_empty()).then_some(message),
            primary: false,
        });
        self
    }

    /// Sets the help text (the fix).
    #[must_use]
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds a fix that writes `replacement` over `span`, which holds `wrote`.
    #[must_use]
    pub fn with_fix(mut self, span: Span, wrote: &str, replacement: &str) -> Self {
        self.fixes.push(Fix {
            title: format!("Replace `{wrote}` with `{replacement}`"),
            span,
            wrote: wrote.to_string(),
            replacement: replacement.to_string(),
        });
        self
    }

    /// Marks `span` as a likely secret, which no report draws.
    #[must_use]
    pub fn hiding(mut self, span: Span) -> Self {
        self.secrets.push(span);
        self
    }

    /// Adds a note (a supporting fact).
    #[must_use]
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    /// The primary span, if any label is primary.
    pub fn primary_span(&self) -> Option<Span> {
        self.labels.iter().find(|l| l.primary).map(|l| l.span)
    }

    /// True for errors (as opposed to warnings).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Formats `names` as "`a`, `b` or `c`".
pub fn one_of<S: AsRef<str>>(names: &[S]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{}`", n.as_ref())).collect();
    join_or(&quoted)
}

/// Formats `names` as "`a`, `b` and `c`".
pub fn all_of<S: AsRef<str>>(names: &[S]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{}`", n.as_ref())).collect();
    join_with(&quoted, "and")
}

/// Joins phrases as "a, b or c".
pub fn join_or<S: AsRef<str>>(parts: &[S]) -> String {
    join_with(parts, "or")
}

/// Joins phrases as "a, b WORD c".
fn join_with<S: AsRef<str>>(parts: &[S], word: &str) -> String {
    match parts {
        [] => String::new(),
        [one] => one.as_ref().to_string(),
        [init @ .., last] => {
            let init: Vec<&str> = init.iter().map(AsRef::as_ref).collect();
            format!("{} {word} {}", init.join(", "), last.as_ref())
        }
    }
}
