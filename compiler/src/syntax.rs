//! Text in, AST or diagnostics out.
//!
//! [`parse`] runs three passes: the [`lexer`] pre-scan (comments, strings,
//! brackets, nesting bound), the pest grammar ([`grammar`]), and the
//! [`build`] pass from pest pairs to the [`ast`] (operator precedence in
//! [`expr`]). Parse failures become coded diagnostics in [`errors`], which
//! never show pest rule names.

pub mod ast;
pub mod build;
pub mod dump;
pub mod errors;
pub mod expectations;
pub mod expr;
pub mod grammar;
pub mod lexer;

use crate::diagnostic::{Code, Diagnostic};
use crate::span::{SourceId, Span};
use grammar::{Rule, SaferParser};
use pest::Parser;

/// Parses one file's text into a module.
///
/// # Errors
/// The first syntax error, as an `E01xx` diagnostic.
pub fn parse(source: SourceId, text: &str) -> Result<ast::Module, Box<Diagnostic>> {
    if text.len() > lexer::MAX_SOURCE_BYTES {
        return Err(Box::new(too_large(source, text.len())));
    }
    let comments = lexer::scan(source, text)?;
    let pairs = SaferParser::parse(Rule::file, text)
        .map_err(|e| Box::new(errors::from_pest(source, text, &e, &comments)))?;
    build::module(source, text, pairs, comments)
}

/// Parses raw bytes: checks size and UTF-8 first.
///
/// # Errors
/// E0100 for invalid UTF-8, E0106 for oversized input, or a syntax error.
pub fn parse_bytes(source: SourceId, bytes: &[u8]) -> Result<ast::Module, Box<Diagnostic>> {
    let text = decode(source, bytes)?;
    parse(source, text)
}

/// Checks size and decodes UTF-8.
///
/// # Errors
/// E0106 when the input is larger than [`lexer::MAX_SOURCE_BYTES`], E0100
/// when it is not UTF-8 (pointing at the first bad byte).
pub fn decode(source: SourceId, bytes: &[u8]) -> Result<&str, Box<Diagnostic>> {
    if bytes.len() > lexer::MAX_SOURCE_BYTES {
        return Err(Box::new(too_large(source, bytes.len())));
    }
    std::str::from_utf8(bytes).map_err(|e| {
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
}

fn too_large(source: SourceId, len: usize) -> Diagnostic {
    Diagnostic::error(
        Code::E0106,
        format!(
            "source file too large: {} bytes, the limit is {} bytes",
            len,
            lexer::MAX_SOURCE_BYTES
        ),
    )
    .with_primary(Span::new(source, 0, 0), "this file")
    .with_help("split the pipeline into several files joined with `use`")
}
