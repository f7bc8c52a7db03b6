//! Bidirectional control characters (E0114, a warning): the embeddings,
//! overrides and isolates of Unicode's bidirectional algorithm make an
//! editor or a code review display a line in another order than the one
//! saferc reads it in ("Trojan Source"), so a comment or a string of a
//! shared rubric could hide what a setting says. Outside comments and
//! strings they are syntax errors already; inside they are reported once
//! per line.

use crate::diagnostic::{Code, Diagnostic};
use crate::span::{SourceId, Span};

/// Whether `c` reorders the text displayed around it: U+202A–U+202E
/// (embeddings and overrides), U+2066–U+2069 (isolates). Each is 3 bytes
/// in UTF-8.
pub fn reorders(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// One warning for each line of `text` that holds such a character.
pub fn warnings(source: SourceId, text: &str) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut last_line = None;
    for (i, c) in text.char_indices().filter(|(_, c)| reorders(*c)) {
        let line = text[..i].rfind(['\n', '\r']).map_or(0, |p| p + 1);
        if last_line == Some(line) {
            continue;
        }
        last_line = Some(line);
        out.push(
            Diagnostic::warning(
                Code::E0114,
                format!(
                    "bidirectional control character U+{:04X}: this line may display in another order than saferc reads it",
                    c as u32
                ),
            )
            .with_primary(
                Span::new(source, i, i + c.len_utf8()),
                "reorders the text displayed after it",
            )
            .with_help(format!(
                "remove it; in a string where it is wanted, write it as the escape `\\u{{{:x}}}`",
                c as u32
            )),
        );
    }
    out
}
