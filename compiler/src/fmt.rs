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
//!   line, is printed one element (or branch) per line;
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

/// Formats an already parsed module (`text` is the source it came from).
pub fn format_module(module: &syntax::ast::Module, text: &str) -> String {
    printer::print(module, text)
}
