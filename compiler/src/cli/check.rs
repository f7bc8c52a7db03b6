//! `saferc check`: parse (and, as the compiler grows, analyze) files.

use super::{input, Format};
use crate::source::SourceMap;
use crate::syntax;
use std::path::PathBuf;

pub(super) fn run(files: &[PathBuf], format: Format) -> i32 {
    let mut sources = SourceMap::new();
    let mut diags = Vec::new();
    for path in files {
        let id = match input::read(&mut sources, path) {
            Ok(id) => id,
            Err(d) => {
                diags.push(*d);
                continue;
            }
        };
        let text = sources.get(id).map(|f| f.text.clone()).unwrap_or_default();
        if let Err(d) = syntax::parse(id, &text) {
            diags.push(*d);
        }
    }
    input::emit(&diags, &sources, format);
    i32::from(diags.iter().any(|d| d.is_error()))
}
