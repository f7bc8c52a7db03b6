//! A linear pre-scan of the source, run before the pest parser.
//!
//! It does what a PEG parser does poorly:
//! - records every comment (for doc attachment and the formatter);
//! - finds unterminated strings and invalid escapes, with the span of the
//!   opening quote rather than "expected ..." at the end of the file;
//! - matches brackets, so an unclosed or mismatched one is reported at its
//!   opening position;
//! - bounds nesting (brackets plus open `if`s) at [`MAX_NESTING`], so that
//!   the recursive-descent parser can never overflow the stack, whatever
//!   the input;
//! - notes where top-level items start right after a closed block, the
//!   points where [`super::parse`] may cut a large file into pieces that
//!   are parsed in parallel.
//!
//! It runs in one pass over the bytes and allocates only for comments and
//! those item starts.

use crate::diagnostic::{Code, Diagnostic};
use crate::span::{SourceId, Span};
use crate::syntax::ast::{Comment, DeclKind};

/// The deepest nesting of brackets (and `if` conditions) the parser accepts.
pub const MAX_NESTING: usize = 128;

/// The largest source file the compiler reads, in bytes (8 MiB).
pub const MAX_SOURCE_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Bracket(u8, usize),
    If(usize),
}

/// What the scan found in a lexically valid file.
#[derive(Debug, Clone, Default)]
pub struct Scanned {
    /// Every comment, in source order.
    pub comments: Vec<Comment>,
    /// Byte offsets of declaration keywords (or `use`) outside all brackets
    /// whose previous significant character is a `}` that closed the last
    /// open bracket. Nothing in the grammar can continue an item with such
    /// a word, so a valid file may be cut there into independently parsable
    /// pieces.
    pub item_starts: Vec<usize>,
}

/// The grammar's whitespace (`WHITESPACE` in `grammar/safer.pest`): space,
/// tab, `\n` and `\r`. Not `u8::is_ascii_whitespace`, which also takes a
/// form feed (U+000C): the grammar does not, and a form feed skipped as
/// blank hid the character the error is about.
pub(crate) fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Scans `text`; returns its comments and cut points, or the first lexical
/// error.
///
/// # Errors
/// E0102 (unterminated string), E0103 (unclosed delimiter), E0104
/// (mismatched closing delimiter), E0105 (nesting too deep), E0107
/// (invalid escape).
pub fn scan(source: SourceId, text: &str) -> Result<Scanned, Box<Diagnostic>> {
    let bytes = text.as_bytes();
    let span = |start: usize, end: usize| Span::new(source, start, end);
    let mut comments = Vec::new();
    let mut item_starts = Vec::new();
    let mut stack: Vec<Open> = Vec::new();
    // The first byte of the last token outside comments and whitespace.
    let mut last_significant = 0u8;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let prev_significant = last_significant;
        if !is_blank(b) && b != b'#' {
            last_significant = b;
        }
        match b {
            b'#' => {
                let end = line_end(bytes, i);
                let raw = &text[i..end];
                let body = raw.trim_end();
                let doc = body.starts_with("##") && !body.starts_with("###");
                comments.push(Comment {
                    text: body.to_string(),
                    doc,
                    span: span(i, i + body.len()),
                });
                i = end;
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => match find(bytes, i + 3, b"\"\"\"") {
                Some(close) => i = close + 3,
                None => {
                    return Err(Box::new(
                        Diagnostic::error(Code::E0102, "unterminated multi-line string")
                            .with_primary(span(i, i + 3), "this `\"\"\"` is never closed")
                            .with_help("close the text with `\"\"\"`"),
                    ))
                }
            },
            b'"' => i = scan_plain_string(source, text, i)?,
            b'(' | b'[' | b'{' => {
                stack.push(Open::Bracket(b, i));
                check_depth(source, &stack, i)?;
                i += 1;
            }
            b')' | b']' | b'}' => {
                while let Some(Open::If(_)) = stack.last() {
                    stack.pop();
                }
                match stack.pop() {
                    Some(Open::Bracket(open, at)) if closer(open) == b => {
                        let _ = at;
                    }
                    Some(Open::Bracket(open, at)) => {
                        return Err(Box::new(
                            Diagnostic::error(
                                Code::E0104,
                                format!(
                                    "mismatched closing delimiter: expected `{}`, found `{}`",
                                    closer(open) as char,
                                    b as char
                                ),
                            )
                            .with_primary(span(i, i + 1), "this does not close the open bracket")
                            .with_secondary(
                                span(at, at + 1),
                                format!("this `{}` is still open", open as char),
                            )
                            .with_help(format!(
                                "close the `{}` with `{}` first",
                                open as char,
                                closer(open) as char
                            )),
                        ))
                    }
                    _ => {
                        return Err(Box::new(
                            Diagnostic::error(
                                Code::E0104,
                                format!("unexpected closing delimiter `{}`", b as char),
                            )
                            .with_primary(span(i, i + 1), "nothing is open here")
                            .with_help("remove it, or add the opening bracket it closes"),
                        ))
                    }
                }
                i += 1;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                let word = &text[start..i];
                if stack.is_empty()
                    && prev_significant == b'}'
                    && (word == "use" || DeclKind::from_keyword(word).is_some())
                {
                    item_starts.push(start);
                }
                match word {
                    "if" => {
                        stack.push(Open::If(start));
                        check_depth(source, &stack, start)?;
                    }
                    "else" => {
                        if let Some(Open::If(_)) = stack.last() {
                            stack.pop();
                        }
                    }
                    _ => {}
                }
            }
            b'0'..=b'9' => {
                // Numbers may contain letters (`1e-6`); skip them whole so
                // that `1e5if` is not read as the keyword `if`.
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    if let Some(Open::Bracket(open, at)) = stack
        .iter()
        .rev()
        .find(|o| matches!(o, Open::Bracket(..)))
        .copied()
    {
        let mut diag = Diagnostic::error(
            Code::E0103,
            format!("unclosed delimiter `{}`", open as char),
        )
        .with_primary(
            span(at, at + 1),
            format!("this `{}` is never closed", open as char),
        )
        .with_help(format!(
            "add `{}` where the {} ends",
            closer(open) as char,
            what_bracket(open)
        ));
        let end = text.trim_end().len();
        if end > at + 1 {
            diag = diag.with_secondary(span(end, end), "the file ends here");
        }
        return Err(Box::new(diag));
    }
    Ok(Scanned {
        comments,
        item_starts,
    })
}

fn check_depth(source: SourceId, stack: &[Open], at: usize) -> Result<(), Box<Diagnostic>> {
    if stack.len() > MAX_NESTING {
        return Err(Box::new(
            Diagnostic::error(
                Code::E0105,
                format!("nesting too deep: more than {MAX_NESTING} levels"),
            )
            .with_primary(
                Span::new(source, at, at + 1),
                format!("level {} starts here", stack.len()),
            )
            .with_help("flatten the expression, or move parts of it into named declarations"),
        ));
    }
    Ok(())
}

fn closer(open: u8) -> u8 {
    match open {
        b'(' => b')',
        b'[' => b']',
        _ => b'}',
    }
}

fn what_bracket(open: u8) -> &'static str {
    match open {
        b'(' => "argument list or group",
        b'[' => "list",
        _ => "block",
    }
}

/// Where the line holding `from` ends: its `\n`, or its `\r` (of a
/// `\r\n`, or a lone one, which ends a line too).
pub(crate) fn line_end(bytes: &[u8], from: usize) -> usize {
    bytes[from..]
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .map_or(bytes.len(), |p| from + p)
}

fn find(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if from > bytes.len() {
        return None;
    }
    bytes[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

/// Scans a `"..."` string starting at `start`; returns the offset after it.
fn scan_plain_string(source: SourceId, text: &str, start: usize) -> Result<usize, Box<Diagnostic>> {
    let bytes = text.as_bytes();
    let span = |a: usize, b: usize| Span::new(source, a, b);
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return Ok(i + 1),
            b'\n' | b'\r' => break,
            b'\\' => {
                let len = escape_len(text, i).map_err(|bad_end| {
                    let shown = text.get(i..bad_end).unwrap_or("\\");
                    Box::new(
                        Diagnostic::error(
                            Code::E0107,
                            format!("invalid escape sequence `{shown}`"),
                        )
                        .with_primary(span(i, bad_end), "not a known escape")
                        .with_help(
                            "strings support `\\\\`, `\\\"`, `\\n`, `\\t`, `\\r`, `\\0` and `\\u{...}`; \
                             use `\"\"\"...\"\"\"` for text with backslashes",
                        ),
                    )
                })?;
                i += len;
            }
            _ => i += 1,
        }
    }
    let end = line_end(bytes, start);
    Err(Box::new(
        Diagnostic::error(Code::E0102, "unterminated string")
            .with_primary(span(start, end), "this string is never closed")
            .with_help("close it with `\"` on the same line; use `\"\"\"...\"\"\"` for text over several lines"),
    ))
}

/// The byte length of the escape at `at` (which holds `\`), or the end of the
/// bad escape.
fn escape_len(text: &str, at: usize) -> Result<usize, usize> {
    let rest = &text[at + 1..];
    let mut chars = rest.chars();
    match chars.next() {
        Some('\\' | '"' | 'n' | 't' | 'r' | '0') => Ok(2),
        Some('u') => {
            let body = rest.get(1..).unwrap_or("");
            if !body.starts_with('{') {
                return Err(at + 2);
            }
            let close = body.find('}').filter(|&c| c <= 9);
            let Some(close) = close else {
                return Err(at + 2 + body.find(['\n', '"']).unwrap_or(body.len()).min(9));
            };
            let hex = &body[1..close];
            let valid = !hex.is_empty()
                && u32::from_str_radix(hex, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .is_some();
            if valid {
                Ok(2 + close + 1)
            } else {
                Err(at + 2 + close + 1)
            }
        }
        Some('\n' | '\r') | None => Err(at + 1),
        Some(c) => Err(at + 1 + c.len_utf8()),
    }
}

/// Resolves the escapes of a plain string body (already validated by
/// [`scan`]); unknown escapes are kept verbatim.
pub fn unescape(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some((_, 'n')) => out.push('\n'),
            Some((_, 't')) => out.push('\t'),
            Some((_, 'r')) => out.push('\r'),
            Some((_, '0')) => out.push('\0'),
            Some((_, '\\')) => out.push('\\'),
            Some((_, '"')) => out.push('"'),
            Some((i, 'u')) => {
                let rest = &body[i + 1..];
                let decoded = rest
                    .strip_prefix('{')
                    .and_then(|r| r.find('}').map(|c| &r[..c]))
                    .and_then(|hex| {
                        u32::from_str_radix(hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .map(|ch| (ch, hex.len() + 2))
                    });
                match decoded {
                    Some((ch, skip)) => {
                        out.push(ch);
                        for _ in 0..skip {
                            chars.next();
                        }
                    }
                    None => out.push_str("\\u"),
                }
            }
            Some((_, other)) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Escapes a value for printing inside `"..."`. Characters a reader cannot
/// see are written as `\u{...}`: control characters, whitespace other than
/// the space, and invisible format characters (zero-width ones,
/// bidirectional overrides as in "Trojan Source" attacks, the byte order
/// mark, tags), so that formatting never hides what a string holds.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c if c.is_control() || invisible(c) => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// Whitespace other than the space, and Unicode's invisible format
/// characters (general category Cf, as of Unicode 16).
pub(crate) fn invisible(c: char) -> bool {
    (c.is_whitespace() && c != ' ')
        || matches!(
            c,
            '\u{ad}'
                | '\u{600}'..='\u{605}'
                | '\u{61c}'
                | '\u{6dd}'
                | '\u{70f}'
                | '\u{890}'..='\u{891}'
                | '\u{8e2}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206f}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
                | '\u{110bd}'
                | '\u{110cd}'
                | '\u{13430}'..='\u{1343f}'
                | '\u{1bca0}'..='\u{1bca3}'
                | '\u{1d173}'..='\u{1d17a}'
                | '\u{e0001}'
                | '\u{e0020}'..='\u{e007f}'
        )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// A lone `\r` ends a line, as editors and diagnostics count lines: a
    /// comment stops there (the code after it is not commented out), and
    /// an unterminated string's span stops before a `\r\n`'s `\r`.
    #[test]
    fn a_carriage_return_ends_comments_and_strings() {
        let text = "# a comment\rmodel m {\r  arch = tiny_vlm # why\r}\r";
        let scanned = scan(SourceId(0), text).expect("scans");
        let comments: Vec<&str> = scanned.comments.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(comments, ["# a comment", "# why"]);
        let module = crate::syntax::parse(SourceId(0), text).expect("parses");
        assert_eq!(module.items.len(), 1);

        let text = "prompt p = \"abc\r\nmodel m {}\r\n";
        let err = scan(SourceId(0), text).expect_err("unterminated");
        let span = err.primary_span().expect("span");
        assert_eq!((span.start, span.end), (11, 15));
        assert!(crate::syntax::parse(SourceId(0), "prompt p = \"a\rb\"\n").is_err());
    }

    /// The grammar, which parses after the lexer, ends a plain string at a
    /// line's end too: a `\` before it does not carry the string on.
    #[test]
    fn the_grammar_and_the_lexer_end_strings_at_the_same_place() {
        use crate::syntax::grammar::{Rule, SaferParser};
        use pest::Parser;
        for text in [
            "prompt p = \"a\\\nb\"\n",
            "prompt p = \"a\\\r\nb\"\n",
            "prompt p = \"a\\\rb\"\n",
        ] {
            assert!(scan(SourceId(0), text).is_err(), "{text:?}");
            assert!(SaferParser::parse(Rule::file, text).is_err(), "{text:?}");
        }
        let text = "prompt p = \"a\\\"b\\\\\"\n";
        assert!(scan(SourceId(0), text).is_ok());
        assert!(SaferParser::parse(Rule::file, text).is_ok());
    }
}
