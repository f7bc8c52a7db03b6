//! Text in, AST or diagnostics out.
//!
//! [`parse`] runs three passes: the [`lexer`] pre-scan (comments, strings,
//! brackets, nesting bound), the pest grammar ([`grammar`]), and the
//! [`build`] pass from pest pairs to the [`ast`] (operator precedence in
//! [`expr`]). Parse failures become coded diagnostics in [`errors`], which
//! never show pest rule names.
//!
//! A large file is cut at the item starts the lexer found and its pieces
//! are parsed and built in parallel (rayon); the result is the same module
//! as one serial parse. When any piece fails, the whole file is parsed
//! serially again, so error messages never depend on where it was cut.

pub mod ast;
pub mod build;
pub mod docs;
pub mod dump;
pub mod errors;
pub mod expectations;
pub mod expr;
pub mod grammar;
pub mod lexer;
pub mod text_direction;

use crate::diagnostic::{Code, Diagnostic};
use crate::span::{SourceId, Span};
use grammar::{Rule, SaferParser};
use pest::Parser;

/// Parses one file's text into a module.
///
/// # Errors
/// The first syntax error, as an `E01xx` diagnostic.
pub fn parse(source: SourceId, text: &str) -> Result<ast::Module, Box<Diagnostic>> {
    let scanned = scan(source, text)?;
    let pieces = pieces(text.len(), &scanned.item_starts);
    if pieces.len() > 1 {
        if let Some(items) = parse_pieces(source, text, &pieces, &scanned.comments) {
            return Ok(ast::Module {
                items: items?,
                comments: scanned.comments,
                span: Span::new(source, 0, text.len()),
            });
        }
    }
    parse_whole(source, text, scanned.comments)
}

/// Parses the whole text in one piece, never cut: the reference that the
/// parallel parse of [`parse`] is tested against.
///
/// # Errors
/// As [`parse`].
pub fn parse_serial(source: SourceId, text: &str) -> Result<ast::Module, Box<Diagnostic>> {
    parse_whole(source, text, scan(source, text)?.comments)
}

/// The size bound, then the lexer's pre-scan.
fn scan(source: SourceId, text: &str) -> Result<lexer::Scanned, Box<Diagnostic>> {
    if text.len() > lexer::MAX_SOURCE_BYTES {
        return Err(Box::new(too_large(source, text.len())));
    }
    lexer::scan(source, text)
}

fn parse_whole(
    source: SourceId,
    text: &str,
    comments: Vec<ast::Comment>,
) -> Result<ast::Module, Box<Diagnostic>> {
    let pairs = SaferParser::parse(Rule::file, text)
        .map_err(|e| Box::new(errors::from_pest(source, text, &e, &comments)))?;
    build::module(source, text, pairs, comments)
}

/// Pieces smaller than this are not worth a thread (a 1,000-line pipeline
/// is about 24 KiB and parses in a few milliseconds).
const MIN_PIECE_BYTES: usize = 32 * 1024;

/// Byte ranges covering `0..len`, cut at some of `item_starts`: about four
/// pieces per worker thread, none smaller than [`MIN_PIECE_BYTES`].
fn pieces(len: usize, item_starts: &[usize]) -> Vec<(usize, usize)> {
    let target = (len / (4 * rayon::current_num_threads()).max(1)).max(MIN_PIECE_BYTES);
    let mut pieces = Vec::new();
    let mut start = 0;
    for &cut in item_starts {
        if cut - start >= target && len - cut >= MIN_PIECE_BYTES / 2 {
            pieces.push((start, cut));
            start = cut;
        }
    }
    pieces.push((start, len));
    pieces
}

/// Parses and builds each piece in parallel; `None` when pest rejects any
/// piece (the caller then parses the whole file for its diagnostic).
fn parse_pieces(
    source: SourceId,
    text: &str,
    pieces: &[(usize, usize)],
    comments: &[ast::Comment],
) -> Option<Result<Vec<ast::Item>, Box<Diagnostic>>> {
    use rayon::prelude::*;
    let built: Vec<Option<Result<Vec<ast::Item>, Box<Diagnostic>>>> = pieces
        .par_iter()
        .map(|&(start, end)| {
            let pairs = SaferParser::parse(Rule::file, &text[start..end]).ok()?;
            Some(build::items(source, text, start, pairs, comments))
        })
        .collect();
    // A syntax error anywhere comes before any build error, as in a serial
    // parse: pest rejects the file before the builder sees it.
    let built: Vec<_> = built.into_iter().collect::<Option<_>>()?;
    let mut items = Vec::new();
    for piece in built {
        match piece {
            Ok(mut more) => items.append(&mut more),
            Err(e) => return Some(Err(e)),
        }
    }
    Some(Ok(items))
}

/// Parses raw bytes: checks size and UTF-8 first.
///
/// # Errors
/// E0100 for invalid UTF-8, E0106 for oversized input, or a syntax error.
pub fn parse_bytes(source: SourceId, bytes: &[u8]) -> Result<ast::Module, Box<Diagnostic>> {
    let text = decode(source, bytes)?;
    parse(source, text)
}

/// Checks size and decodes UTF-8, without a leading byte-order mark.
///
/// # Errors
/// E0106 when the input is larger than [`lexer::MAX_SOURCE_BYTES`], E0100
/// when it is not UTF-8 (pointing at the first bad byte).
pub fn decode(source: SourceId, bytes: &[u8]) -> Result<&str, Box<Diagnostic>> {
    // A large file that is no text at all (a binary named by mistake) is
    // "not UTF-8", not "too large": an invalid sequence before the limit
    // (not a character cut by it) is reported first.
    let first = &bytes[..bytes.len().min(lexer::MAX_SOURCE_BYTES)];
    let invalid_before_limit =
        matches!(std::str::from_utf8(first), Err(e) if e.error_len().is_some());
    if bytes.len() > lexer::MAX_SOURCE_BYTES && !invalid_before_limit {
        return Err(Box::new(too_large(source, bytes.len())));
    }
    std::str::from_utf8(bytes)
        .map_err(|e| {
            let at = e.valid_up_to();
            let len = e.error_len().unwrap_or(bytes.len() - at).max(1);
            Box::new(
                Diagnostic::error(
                    Code::E0100,
                    format!("source is not valid UTF-8 (invalid byte at offset {at})"),
                )
                .with_note(format!(
                    "the first invalid sequence is {} byte(s) long: {}",
                    len,
                    bytes[at..(at + len).min(bytes.len())]
                        .iter()
                        .map(|b| format!("0x{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                ))
                .with_help("save the file as UTF-8"),
            )
        })
        // A UTF-8 byte-order mark is no part of the program (as for rustc);
        // `fmt` writes it back (`SourceFile::byte_order_mark`).
        .map(|text| text.strip_prefix('\u{feff}').unwrap_or(text))
}

/// E0106. `len` is what was read: a file is read only one byte past the
/// limit, so a longer one (or an endless device) shows as that.
fn too_large(source: SourceId, len: usize) -> Diagnostic {
    let limit = lexer::MAX_SOURCE_BYTES;
    let message = if len == limit + 1 {
        format!("source file too large: over the limit of {limit} bytes")
    } else {
        format!("source file too large: {len} bytes, the limit is {limit} bytes")
    };
    Diagnostic::error(Code::E0106, message)
        .with_primary(Span::new(source, 0, 0), "this file")
        .with_help("split the pipeline into several files joined with `use`")
}
