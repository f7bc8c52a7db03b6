//! The formatter: one canonical layout, comments kept, idempotent.
//!
//! Layout rules (docs/reference/formatting.md has the user-facing version):
//! - two-space indentation; one statement per line; `{` on the line of its
//!   head, `}` on a line of its own;
//! - declarations separated by one blank line; consecutive `use` lines
//!   grouped; inside blocks, single blank lines between statements are kept
//!   (several collapse to one);
//! - the `=` of consecutive one-line settings aligned;
//! - a nested block written on one line stays on one line
//!   (`judge rules { kind = rules }`) when it holds only settings and fits;
//!   a list, call or `if` written over several lines, or too long for the
//!   line, is printed one element, argument (or branch) per line, and so
//!   is a declaration's parameter list;
//! - canonical spacing in expressions (`a + b`, `f(x, n = 4)`, `[a, b]`,
//!   `lo..hi`), numbers as written, units singular for `1` and plural
//!   otherwise, strings re-escaped, triple-quoted text kept verbatim.
//!
//! Comments are attached by position: those before a line-oriented node
//! (item, statement, element of a broken list) are printed above it, those
//! on the same line after it stay at the end of the line.

mod printer;

use crate::diagnostic::Diagnostic;
use crate::span::SourceId;
use crate::syntax;

/// The line width the formatter aims for.
pub const MAX_WIDTH: usize = 100;

/// Formats source text.
///
/// # Errors
/// The syntax error, if the text does not parse (nothing is formatted then).
pub fn format_source(text: &str) -> Result<String, Box<Diagnostic>> {
    let module = syntax::parse(SourceId(0), text)?;
    Ok(printer::print(&module, text))
}

/// What a file keeps through formatting that the layout does not decide:
/// its byte-order mark and its line ends (`\r\n` when its first line
/// ends so, as rustfmt's `newline_style = "Auto"`), so that a file checked
/// out with CRLF line ends passes `saferc fmt --check` once formatted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStyle {
    /// Write a UTF-8 byte-order mark first.
    pub byte_order_mark: bool,
    /// End lines with `\r\n`.
    pub crlf: bool,
}

impl FileStyle {
    /// The style of `text` (read without its byte-order mark, which
    /// `byte_order_mark` says it had).
    pub fn of(text: &str, byte_order_mark: bool) -> Self {
        let crlf = text.find('\n').is_some_and(|at| text[..at].ends_with('\r'));
        Self {
            byte_order_mark,
            crlf,
        }
    }

    /// `formatted` (the formatter's `\n` lines) written in this style; the
    /// lines of triple-quoted text, kept verbatim, end as the others do.
    pub fn apply(&self, formatted: &str) -> String {
        let mark = if self.byte_order_mark { "\u{feff}" } else { "" };
        match self.crlf {
            true => format!(
                "{mark}{}",
                formatted.replace("\r\n", "\n").replace('\n', "\r\n")
            ),
            false => format!("{mark}{formatted}"),
        }
    }
}

/// Formats an already parsed module (`text` is the source it came from).
pub fn format_module(module: &syntax::ast::Module, text: &str) -> String {
    printer::print(module, text)
}
